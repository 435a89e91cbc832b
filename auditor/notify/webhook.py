"""Webhooks: the run's digest as a Teams or Slack message, POSTed as JSON.

Formats:

* ``teams``: an Adaptive Card in a ``message`` envelope, what Teams Workflows ("Post to a channel when a
  webhook request is received") and Power Automate accept;
* ``teams_messagecard``: the legacy Office 365 connector MessageCard;
* ``slack``: Block Kit for Slack incoming webhooks (with a ``text`` fallback for notifications).

Tenant names and finding texts are tenant data. Slack gets them as ``plain_text`` objects (never
mrkdwn, so ``<http://x|click>`` stays text); MessageCard sections have markdown switched off; Adaptive
Card TextBlocks always render markdown, so markdown characters are backslash-escaped there.

The webhook URL is a secret (it carries the access token): it is read from the environment variable
the config names at send time and never appears in a message, an outcome or a log line; at most its
host does. It must be https, except for a loopback receiver (tests, a local relay).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from auditor.errors import redact, register_secret

from .digest import AttentionRow, RunDigest, money_text
from .email import NotificationError, ssl_context
from .settings import WebhookFormat, WebhookSettings, is_loopback_host

if TYPE_CHECKING:
    import httpx

__all__ = ["build_payload", "post_webhook", "slack_payload", "teams_messagecard_payload", "teams_payload"]

_SLACK_TEXT_LIMIT: Final = 3000
_SLACK_HEADER_LIMIT: Final = 150
# Emphasis, code and link syntax: what Adaptive Card markdown (a CommonMark subset) acts on inline.
_TEAMS_MARKDOWN: Final = re.compile(r"([\\`*_\[\]])")
_ATTENTION_COLOUR: Final = "D13438"
_OK_COLOUR: Final = "2E7D32"


def build_payload(fmt: WebhookFormat, digest: RunDigest) -> dict[str, Any]:
    """The JSON body for a receiver of format ``fmt``."""
    if fmt is WebhookFormat.SLACK:
        return slack_payload(digest)
    if fmt is WebhookFormat.TEAMS_MESSAGECARD:
        return teams_messagecard_payload(digest)
    return teams_payload(digest)


# --- Slack ------------------------------------------------------------------------------------------------


def _plain(text: str, limit: int = _SLACK_TEXT_LIMIT) -> dict[str, Any]:
    return {"type": "plain_text", "text": _clip(text, limit), "emoji": False}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    # The top-level `text` is mrkdwn; these three are the only characters Slack asks to escape.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(digest: RunDigest) -> dict[str, Any]:
    """Block Kit message: header, figures, tenants needing attention, changes, link, context."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(f"USS audit: {digest.headline}", _SLACK_HEADER_LIMIT)},
        {
            "type": "section",
            "fields": [
                _plain(f"Tenants: {digest.tenants} ({digest.counts_text})", 2000),
                _plain(
                    f"Shared mailboxes billed: {digest.billed_shared_mailboxes} of {digest.shared_mailboxes}",
                    2000,
                ),
                _plain(f"Estimated cost: {digest.cost_text}", 2000),
                _plain(f"Run: {digest.run_id} ({digest.mode})", 2000),
            ],
        },
    ]
    if digest.attention:
        lines = [f"• {row.short(digest.currency)}" for row in digest.attention]
        if digest.attention_not_listed:
            lines.append(f"… and {digest.attention_not_listed} more")
        blocks.append({"type": "section", "text": _plain("Needs attention:\n" + "\n".join(lines))})
    blocks.append({"type": "section", "text": _plain(_changes_text(digest))})
    if digest.report_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": _plain("Open the report", 75), "url": digest.report_url}
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [_plain(f"uss-auditor {digest.tool_version} · finished {digest.finished_at}", 2000)],
        }
    )
    return {"text": _slack_escape(f"USS audit: {digest.headline}"), "blocks": blocks}


# --- Teams ------------------------------------------------------------------------------------------------


def _md(text: str) -> str:
    """Escape Adaptive Card markdown so tenant data renders as text (no links, no emphasis)."""
    return _TEAMS_MARKDOWN.sub(r"\\\1", text)


def teams_payload(digest: RunDigest) -> dict[str, Any]:
    """An Adaptive Card (schema 1.4) in the ``message`` envelope Teams Workflows webhooks accept."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _md(f"USS audit: {digest.headline}"),
            "weight": "Bolder",
            "size": "Medium",
            "wrap": True,
            "color": "Attention" if digest.needs_attention else "Good",
        },
        {
            "type": "FactSet",
            "facts": [
                {"title": "Tenants", "value": _md(f"{digest.tenants} ({digest.counts_text})")},
                {
                    "title": "Shared mailboxes billed",
                    "value": f"{digest.billed_shared_mailboxes} of {digest.shared_mailboxes}",
                },
                {"title": "Estimated cost", "value": _md(digest.cost_text)},
                {
                    "title": "Run",
                    "value": _md(f"{digest.run_id} ({digest.mode}), finished {digest.finished_at}"),
                },
            ],
        },
    ]
    if digest.attention:
        facts = [{"title": _md(row.name), "value": _md(_row_value(row, digest))} for row in digest.attention]
        if digest.attention_not_listed:
            facts.append({"title": "…", "value": f"and {digest.attention_not_listed} more"})
        body += [
            {
                "type": "TextBlock",
                "text": "Needs attention",
                "weight": "Bolder",
                "wrap": True,
                "spacing": "Medium",
            },
            {"type": "FactSet", "facts": facts},
        ]
    body.append({"type": "TextBlock", "text": _md(_changes_text(digest)), "wrap": True, "spacing": "Medium"})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if digest.report_url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the report", "url": digest.report_url}]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def teams_messagecard_payload(digest: RunDigest) -> dict[str, Any]:
    """A legacy connector MessageCard; sections carry tenant data with markdown switched off."""
    facts = [
        {"name": "Tenants", "value": f"{digest.tenants} ({digest.counts_text})"},
        {
            "name": "Shared mailboxes billed",
            "value": f"{digest.billed_shared_mailboxes} of {digest.shared_mailboxes}",
        },
        {"name": "Estimated cost", "value": digest.cost_text},
        {"name": "Run", "value": f"{digest.run_id} ({digest.mode}), finished {digest.finished_at}"},
    ]
    sections: list[dict[str, Any]] = [{"facts": facts, "markdown": False}]
    if digest.attention:
        rows = [{"name": row.name, "value": _row_value(row, digest)} for row in digest.attention]
        if digest.attention_not_listed:
            rows.append({"name": "…", "value": f"and {digest.attention_not_listed} more"})
        sections.append({"activityTitle": "Needs attention", "facts": rows, "markdown": False})
    sections.append({"text": _changes_text(digest), "markdown": False})
    card: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": f"USS audit: {digest.headline}",
        "themeColor": _ATTENTION_COLOUR if digest.needs_attention else _OK_COLOUR,
        "title": f"USS audit: {digest.headline}",
        "sections": sections,
    }
    if digest.report_url:
        card["potentialAction"] = [
            {
                "@type": "OpenUri",
                "name": "Open the report",
                "targets": [{"os": "default", "uri": digest.report_url}],
            }
        ]
    return card


def _row_value(row: AttentionRow, digest: RunDigest) -> str:
    text = row.status + (f" ({row.codes})" if row.codes else "")
    if row.billed:
        text += f", {row.billed} billed"
    if row.monthly_cost:
        text += f", {money_text(row.monthly_cost, digest.currency)}/month"
    return text


def _changes_text(digest: RunDigest) -> str:
    if digest.changes is None:
        return "Changes since the previous run: none to compare with (no previous run)."
    if not digest.changes:
        return "Changes since the previous run: no tenant changed status."
    lines = [f"• {c.name}: {c.before or 'new'} → {c.after}" for c in digest.changes]
    if digest.changes_not_listed:
        lines.append(f"… and {digest.changes_not_listed} more")
    return "Changes since the previous run:\n" + "\n".join(lines)


# --- sending ----------------------------------------------------------------------------------------------


def webhook_url(settings: WebhookSettings, environ: Mapping[str, str]) -> str:
    """The webhook URL from the environment, checked (https, or http to a loopback receiver)."""
    url = (environ.get(settings.url_env) or "").strip()
    register_secret(url)
    if not url:
        raise NotificationError(
            f"environment variable {settings.url_env} (url_env) is not set; nothing was sent. Set it to the "
            "webhook URL in the environment the auditor runs in."
        )
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host and is_loopback_host(host):
        return url
    # Never echo the value: it is a secret, or something pasted by mistake.
    raise NotificationError(
        f"environment variable {settings.url_env} does not hold an https URL"
        + (" (plain http is only accepted for a receiver on this machine)" if parts.scheme == "http" else "")
        + "; nothing was sent. Put the webhook URL Teams or Slack gave you in it."
    )


class _WebhookUrlFilter(logging.Filter):
    """Masks the webhook URLs being posted to in httpx's own log records ("HTTP Request: POST <url>"), so
    even a debug log never carries the token a webhook URL holds."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = tuple(self.secrets)
        if secrets and isinstance(record.args, tuple):
            record.args = tuple(
                _mask(str(arg), secrets) if any(s in str(arg) for s in secrets) else arg
                for arg in record.args
            )
        if secrets and isinstance(record.msg, str):
            record.msg = _mask(record.msg, secrets)
        return True


def _mask(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[webhook-url]")
    return text


_URL_FILTER: Final = _WebhookUrlFilter()
logging.getLogger("httpx").addFilter(_URL_FILTER)


def post_webhook(
    payload: Mapping[str, Any],
    settings: WebhookSettings,
    environ: Mapping[str, str],
    *,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """POST ``payload`` to the channel's URL; returns a one-line description. Raises NotificationError."""
    import httpx  # here, not at the top: loading it is only worth it when a webhook is sent

    url = webhook_url(settings, environ)
    parts = urlsplit(url)
    host = parts.hostname or "?"
    # The path and query hold the token; the scheme and host are not secret.
    hidden = url[len(f"{parts.scheme}://{parts.netloc}") :]
    if hidden.strip("/"):
        register_secret(hidden)  # the path alone, as a server or a library may echo it, is the secret too
        _URL_FILTER.secrets.add(hidden)
    try:
        with httpx.Client(
            verify=ssl_context(settings.ca_bundle),
            timeout=httpx.Timeout(settings.timeout_seconds),
            follow_redirects=False,
            transport=transport,
        ) as client:
            response = client.post(url, json=payload, headers={"User-Agent": "uss-auditor"})
    except httpx.TimeoutException:
        raise NotificationError(
            f"webhook host {host} did not answer within {settings.timeout_seconds:g} s; nothing was delivered."
        ) from None
    except httpx.ConnectError as exc:
        detail = _scrub(str(exc), url)
        hint = (
            " Set ca_bundle in the webhook channel (or SSL_CERT_FILE) to the CA that issued its certificate."
            if "CERTIFICATE_VERIFY_FAILED" in detail
            else " Check network access and proxy settings (HTTPS_PROXY) to it."
        )
        raise NotificationError(
            f"cannot connect to webhook host {host} ({detail}); nothing was delivered.{hint}"
        ) from None
    except httpx.HTTPError as exc:
        raise NotificationError(
            f"posting to webhook host {host} failed ({type(exc).__name__}: {_scrub(str(exc), url)}); nothing was delivered."
        ) from None
    finally:
        _URL_FILTER.secrets.discard(hidden)
    if not 200 <= response.status_code < 300:
        body = _scrub(" ".join(response.text.split())[:200], url)
        hint = {
            400: " The receiver rejected the message format: check format (teams, teams_messagecard, slack).",
            401: " The webhook URL is no longer valid: create a new one and update the environment variable.",
            403: " The webhook URL is no longer valid: create a new one and update the environment variable.",
            404: " The webhook no longer exists: create a new one and update the environment variable.",
            410: " The webhook was removed: create a new one and update the environment variable.",
            429: " The receiver is throttling; it will be retried at the next run.",
        }.get(response.status_code, "")
        raise NotificationError(
            f"webhook host {host} answered HTTP {response.status_code}"
            + (f": {body}" if body else "")
            + f"; the message was not accepted.{hint}"
        )
    return f"delivered to {host} (HTTP {response.status_code}, {settings.format.value} format)"


def _scrub(text: str, url: str) -> str:
    """Library messages may quote the request URL, which is the secret: cut it (and its path) out."""
    parts = urlsplit(url)
    for piece in (url, parts.path, parts.query):
        if piece and piece != "/":
            text = text.replace(piece, "[webhook-url]")
    return redact(text)
