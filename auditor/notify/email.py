"""E-mail: an HTML summary (with a plain-text alternative) and the reports attached, over SMTP.

Standard library only (``smtplib``, ``email``): STARTTLS (or implicit TLS) with certificate and host
name verification before anything is sent, then ``AUTH`` with the password read from the environment
variable the config names, at send time. The body is rendered by jinja2 with autoescaping on, because
tenant names and finding texts are tenant data. Attachments are the report files the run wrote, up to a
size budget; anything left out is named in the body.

Every failure raises :class:`NotificationError` with what went wrong and what to do; the caller
(:func:`auditor.notify.notify`) turns it into a failed outcome.
"""

from __future__ import annotations

import logging
import mimetypes
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Final

import certifi
import jinja2

from auditor.errors import redact, register_secret

from .digest import RunDigest
from .settings import REPORT_FILES, EmailSettings, SmtpSecurity

__all__ = ["NotificationError", "build_message", "render_html", "render_text", "send_email", "ssl_context"]

log = logging.getLogger(__name__)

_MIME_TYPES: Final = {
    ".html": ("text", "html"),
    ".json": ("application", "json"),
    ".xlsx": ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
}


class NotificationError(Exception):
    """A notification could not be delivered; ``str()`` says what happened and what to do."""


@dataclass(frozen=True)
class Attachments:
    """The report files that go with the message, and those left out (with why)."""

    files: tuple[Path, ...]
    left_out: tuple[str, ...]


# Inline styles only: many mail clients drop <style> blocks and every external resource.
_HTML_TEMPLATE: Final = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>USS audit: {{ d.headline }}</title></head>
<body style="font-family:Segoe UI,Helvetica,Arial,sans-serif;color:#1b1b1b;font-size:14px;">
<h2 style="margin:0 0 8px 0;color:{{ '#b3261e' if d.needs_attention else '#1e6b34' }};">USS audit: {{ d.headline }}</h2>
<p style="margin:0 0 12px 0;color:#555;">Run {{ d.run_id }} ({{ d.mode }}), finished {{ d.finished_at }}.</p>
<table cellpadding="4" cellspacing="0" style="border-collapse:collapse;margin-bottom:12px;">
<tr><th align="left">Tenants audited</th><td>{{ d.tenants }} ({{ d.counts_text }})</td></tr>
<tr><th align="left">Shared mailboxes</th><td>{{ d.shared_mailboxes }}</td></tr>
<tr><th align="left">Billed as users</th><td>{{ d.billed_shared_mailboxes }}</td></tr>
<tr><th align="left">Estimated cost</th><td>{{ d.cost_text }}</td></tr>
</table>
{% if d.attention %}
<h3 style="margin:16px 0 6px 0;">Needs attention</h3>
<table cellpadding="6" cellspacing="0" style="border-collapse:collapse;border:1px solid #ccc;">
<tr style="background:#f2f2f2;"><th align="left">Tenant</th><th align="left">Status</th><th align="left">Why / what to do</th><th align="right">Billed</th><th align="right">Monthly cost</th></tr>
{% for row in d.attention %}
<tr style="border-top:1px solid #ddd;vertical-align:top;">
<td>{{ row.name }}<br><span style="color:#777;font-size:12px;">{{ row.tenant_id }}</span></td>
<td>{{ row.status }}</td>
<td>{% if row.codes %}<b>{{ row.codes }}</b><br>{% endif %}{{ row.detail }}</td>
<td align="right">{{ '?' if row.billed is none else row.billed }}</td>
<td align="right">{{ 'unknown' if row.monthly_cost is none else money(row.monthly_cost) }}</td>
</tr>
{% endfor %}
</table>
{% if d.attention_not_listed %}<p>... and {{ d.attention_not_listed }} more tenant(s): see the attached report.</p>{% endif %}
{% endif %}
<h3 style="margin:16px 0 6px 0;">Changes since the previous run</h3>
{% if d.changes is none %}
<p>No previous run to compare with.</p>
{% elif not d.changes %}
<p>No tenant changed status.</p>
{% else %}
<ul>
{% for c in d.changes %}<li>{{ c.name }}: {{ c.before or 'new' }} &rarr; {{ c.after }}</li>
{% endfor %}
</ul>
{% if d.changes_not_listed %}<p>... and {{ d.changes_not_listed }} more.</p>{% endif %}
{% endif %}
{% if d.report_url %}<p><a href="{{ d.report_url }}">Open the full report</a></p>{% endif %}
{% if attached or left_out %}
<p style="color:#555;">
{% if attached %}Attached: {{ attached | join(', ') }}.{% endif %}
{% if left_out %}Not attached: {{ left_out | join('; ') }}.{% endif %}
</p>
{% endif %}
<p style="color:#777;font-size:12px;">Sent by uss-auditor {{ d.tool_version }}. Shared mailboxes stop being billed only after the vendor's next full sync.</p>
</body></html>
"""

_TEXT_TEMPLATE: Final = """\
USS audit: {{ d.headline }}
Run {{ d.run_id }} ({{ d.mode }}), finished {{ d.finished_at }}.

Tenants audited:  {{ d.tenants }} ({{ d.counts_text }})
Shared mailboxes: {{ d.shared_mailboxes }}
Billed as users:  {{ d.billed_shared_mailboxes }}
Estimated cost:   {{ d.cost_text }}
{% if d.attention %}

Needs attention:
{% for row in d.attention %}
- {{ row.short(d.currency) }}
  {{ row.detail }}
{% endfor %}
{% if d.attention_not_listed %}
... and {{ d.attention_not_listed }} more tenant(s): see the attached report.
{% endif %}
{% endif %}

Changes since the previous run:
{% if d.changes is none %}
No previous run to compare with.
{% elif not d.changes %}
No tenant changed status.
{% else %}
{% for c in d.changes %}
- {{ c.name }}: {{ c.before or 'new' }} -> {{ c.after }}
{% endfor %}
{% if d.changes_not_listed %}
... and {{ d.changes_not_listed }} more.
{% endif %}
{% endif %}
{% if d.report_url %}

Full report: {{ d.report_url }}
{% endif %}
{% if attached %}

Attached: {{ attached | join(', ') }}.
{% endif %}
{% if left_out %}
Not attached: {{ left_out | join('; ') }}.
{% endif %}
"""


def _environment(*, html: bool) -> jinja2.Environment:
    return jinja2.Environment(
        autoescape=html,  # noqa: S701 - off only for the text/plain alternative, which is not HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


_HTML: Final = _environment(html=True).from_string(_HTML_TEMPLATE)
_TEXT: Final = _environment(html=False).from_string(_TEXT_TEMPLATE)


def render_html(digest: RunDigest, attached: Sequence[str] = (), left_out: Sequence[str] = ()) -> str:
    """The HTML body (autoescaped: tenant data cannot inject markup)."""
    return _HTML.render(
        d=digest,
        attached=list(attached),
        left_out=list(left_out),
        money=lambda v: f"{v:,.2f} {digest.currency}",
    )


def render_text(digest: RunDigest, attached: Sequence[str] = (), left_out: Sequence[str] = ()) -> str:
    """The plain-text alternative of the same content."""
    return _TEXT.render(d=digest, attached=list(attached), left_out=list(left_out))


def select_attachments(reports: Sequence[Path], settings: EmailSettings) -> Attachments:
    """The report files to attach: those the channel asks for that exist, within the size budget."""
    wanted = {REPORT_FILES[f] for f in settings.attach}
    files: list[Path] = []
    left_out: list[str] = []
    budget = settings.max_attachment_bytes
    for path in reports:
        if path.name not in wanted:
            continue
        try:
            size = path.stat().st_size
        except OSError:
            left_out.append(f"{path.name} (not found)")
            continue
        if size > budget:
            left_out.append(f"{path.name} ({size / 1_048_576:.1f} MB, over the max_attachments_mb budget)")
            continue
        budget -= size
        files.append(path)
    return Attachments(tuple(files), tuple(left_out))


def build_message(digest: RunDigest, reports: Sequence[Path], settings: EmailSettings) -> EmailMessage:
    """The complete message: subject, addresses, text + HTML alternatives, report attachments."""
    attachments = select_attachments(reports, settings)
    names = [p.name for p in attachments.files]
    message = EmailMessage()
    prefix = f"{settings.subject_prefix} " if settings.subject_prefix else ""
    message["Subject"] = f"{prefix}{digest.headline}"
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    if settings.cc:
        message["Cc"] = ", ".join(settings.cc)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2].strip("> ") or None)
    message["X-USS-Auditor-Run"] = digest.run_id
    message.set_content(render_text(digest, names, attachments.left_out))
    message.add_alternative(render_html(digest, names, attachments.left_out), subtype="html")
    for path in attachments.files:
        maintype, subtype = _MIME_TYPES.get(path.suffix.lower()) or _guess_type(path)
        # The reports are UTF-8: without the charset a mail client reads text parts as ASCII and garbles
        # every non-ASCII tenant name.
        params = {"charset": "utf-8"} if maintype == "text" else {}
        message.add_attachment(
            path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name, params=params
        )
    return message


def _guess_type(path: Path) -> tuple[str, str]:
    guessed, _ = mimetypes.guess_type(path.name)
    maintype, _, subtype = (guessed or "application/octet-stream").partition("/")
    return maintype, subtype


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verifying TLS context: public roots, the system store (honours SSL_CERT_FILE) and ``ca_bundle``."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


def send_email(message: EmailMessage, settings: EmailSettings, environ: Mapping[str, str]) -> str:
    """Submit ``message``; returns a one-line description of what was sent. Raises NotificationError."""
    password = None
    if settings.username:
        password = environ.get(settings.password_env or "")
        register_secret(password)
        if not password:
            raise NotificationError(
                f"environment variable {settings.password_env} (password_env) is not set; nothing was sent. "
                f"Set it to the SMTP password of {settings.username} in the environment the auditor runs in."
            )
    where = f"{settings.host}:{settings.port}"
    try:
        context = ssl_context(settings.ca_bundle)
        smtp: smtplib.SMTP
        if settings.security is SmtpSecurity.TLS:
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout_seconds, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
        with smtp:
            smtp.ehlo()
            if settings.security is SmtpSecurity.STARTTLS:
                if not smtp.has_extn("starttls"):
                    raise NotificationError(
                        f"SMTP server {where} does not offer STARTTLS, so nothing was sent (the reports and "
                        'the password are never sent unencrypted). Use security = "tls" if it speaks TLS on '
                        "connect (port 465), or a server that supports STARTTLS."
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if settings.username and password is not None:
                smtp.login(settings.username, password)
            refused = smtp.send_message(message)
    except NotificationError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise NotificationError(
            f"SMTP server {where} refused the login of {settings.username} ({_smtp_reply(exc.smtp_code, exc.smtp_error)}). "
            f"Check username and the password in {settings.password_env}; Microsoft 365 needs SMTP AUTH enabled "
            "for the mailbox."
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused_all = ", ".join(
            f"{addr} ({_smtp_reply(code, text)})" for addr, (code, text) in exc.recipients.items()
        )
        raise NotificationError(f"SMTP server {where} refused every recipient: {refused_all}.") from None
    except smtplib.SMTPSenderRefused as exc:
        raise NotificationError(
            f"SMTP server {where} refused the sender {exc.sender} ({_smtp_reply(exc.smtp_code, exc.smtp_error)}). "
            "Use a from address the SMTP user may send as."
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise NotificationError(
            f"SMTP server {where} answered {_smtp_reply(exc.smtp_code, exc.smtp_error)}; nothing was sent."
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise NotificationError(
            f"the TLS certificate of SMTP server {where} is not trusted ({exc.verify_message or exc}); nothing "
            "was sent. Set ca_bundle in the e-mail channel (or SSL_CERT_FILE) to the CA that issued it, and "
            "check that smtp_host is the name on the certificate."
        ) from None
    except ssl.SSLError as exc:
        raise NotificationError(
            f"TLS with SMTP server {where} failed ({exc.reason or exc}); nothing was sent. Check security "
            '("starttls" for port 587, "tls" for port 465) and smtp_port.'
        ) from None
    except ConnectionRefusedError:
        raise NotificationError(
            f"cannot connect to SMTP server {where}: connection refused; nothing was sent. Check smtp_host and "
            "smtp_port, and that the server is running and reachable from this machine."
        ) from None
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a read time-out as a disconnect ("Connection unexpectedly closed: timed out").
        if "timed out" not in str(exc):
            raise NotificationError(
                f"SMTP server {where} closed the connection ({redact(str(exc))}); nothing was sent. Check "
                'smtp_port and security ("starttls" for port 587, "tls" for port 465).'
            ) from None
        raise NotificationError(
            f"SMTP server {where} did not answer within {settings.timeout_seconds:g} s; nothing was sent. "
            "Check the host, port and firewall, or raise timeout_seconds."
        ) from None
    except TimeoutError:
        raise NotificationError(
            f"SMTP server {where} did not answer within {settings.timeout_seconds:g} s; nothing was sent. "
            "Check the host, port and firewall, or raise timeout_seconds."
        ) from None
    except socket.gaierror as exc:
        raise NotificationError(
            f"cannot resolve SMTP host {settings.host} ({exc.strerror}); nothing was sent."
        ) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise NotificationError(
            f"sending through SMTP server {where} failed ({type(exc).__name__}: {redact(str(exc)) or 'no detail'}); "
            "nothing was sent."
        ) from None
    recipients = [*settings.recipients, *settings.cc]
    attached = [part.get_filename() for part in message.iter_attachments()]
    detail = f"sent to {len(recipients) - len(refused)} recipient(s) via {where}"
    if attached:
        detail += f" with {', '.join(str(a) for a in attached)}"
    if refused:
        detail += "; refused: " + ", ".join(
            f"{addr} ({_smtp_reply(code, text)})" for addr, (code, text) in refused.items()
        )
    return detail


def _smtp_reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return redact(f"{code} {' '.join(text.split())}".strip())
