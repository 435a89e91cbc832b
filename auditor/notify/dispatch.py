"""After the reports are written: send each configured notification, and never fail the run over one.

:func:`notify` applies each channel's policy, sends, and returns one :class:`NotificationOutcome` per
channel: ``sent``, ``skipped`` (the policy said no, with why) or ``failed`` (with what went wrong and
what to do). It never raises: a notification that cannot be delivered is logged at WARNING and
reported, but the run, its reports and its exit code stay exactly what they were.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from auditor.errors import redact
from auditor.model import RunResult

from .digest import RunDigest, digest_run
from .email import NotificationError, build_message, send_email
from .policy import decide
from .settings import Channel, EmailSettings, NotificationSettings, WebhookSettings
from .webhook import build_payload, post_webhook

__all__ = ["Delivery", "NotificationOutcome", "format_outcomes", "notify"]

log = logging.getLogger("auditor.notify")


class Delivery(StrEnum):
    """What happened to one channel's notification."""

    SENT = "sent"
    SKIPPED = "skipped"  # the channel's policy (when = ...) said not this time
    FAILED = "failed"  # could not be delivered; the run is unaffected


@dataclass(frozen=True)
class NotificationOutcome:
    """One channel's result. ``detail`` is one line, free of secrets."""

    channel: str  # "email" | "webhook"
    name: str  # the channel's configured name
    delivery: Delivery
    detail: str

    @property
    def ok(self) -> bool:
        """False only for a failed delivery (a skipped one is the policy working as configured)."""
        return self.delivery is not Delivery.FAILED

    def line(self) -> str:
        """``billing e-mail (email): failed: cannot connect to SMTP server ...``."""
        return f"{self.name} ({self.channel}): {self.delivery.value}: {self.detail}"


# A sender delivers one channel's message and returns what it did; raises NotificationError.
Sender = Callable[[Channel, RunDigest, Sequence[Path], Mapping[str, str]], str]


def _send_email(
    channel: Channel, digest: RunDigest, reports: Sequence[Path], environ: Mapping[str, str]
) -> str:
    assert isinstance(channel, EmailSettings)
    return send_email(build_message(digest, reports, channel), channel, environ)


def _send_webhook(
    channel: Channel, digest: RunDigest, reports: Sequence[Path], environ: Mapping[str, str]
) -> str:
    assert isinstance(channel, WebhookSettings)
    return post_webhook(build_payload(channel.format, digest), channel, environ)


def notify(
    run: RunResult,
    reports: Sequence[Path],
    settings: NotificationSettings,
    previous: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    senders: Mapping[str, Sender] | None = None,
) -> list[NotificationOutcome]:
    """Send every configured notification about ``run``; one outcome per channel. Never raises.

    ``reports`` are the files the run wrote (those that exist are attached to e-mails).
    ``previous`` maps tenant id -> status of the previous run, for ``on_change`` and the "changes"
    section; ``None`` means unknown (treated as changed). ``environ`` (default ``os.environ``) is where
    the SMTP password and webhook URLs are read from. ``senders`` replaces the delivery of a channel
    kind (``"email"``, ``"webhook"``), for tests and tools.
    """
    if not settings.channels:
        return []
    env = os.environ if environ is None else environ
    send_by_kind: dict[str, Sender] = {"email": _send_email, "webhook": _send_webhook, **(senders or {})}
    outcomes: list[NotificationOutcome] = []
    digest: RunDigest | None = None
    for channel in settings.channels:
        try:
            decision = decide(channel.policy, run, previous)
            if not decision.send:
                outcome = NotificationOutcome(channel.kind, channel.name, Delivery.SKIPPED, decision.reason)
                log.info(
                    "notification %s: skipped (%s)", channel.name, decision.reason, extra=_extra(outcome)
                )
                outcomes.append(outcome)
                continue
            if digest is None:
                digest = digest_run(
                    run, previous, max_listed=settings.max_tenants_listed, report_url=settings.report_url
                )
            detail = send_by_kind[channel.kind](channel, digest, list(reports), env)
            outcome = NotificationOutcome(channel.kind, channel.name, Delivery.SENT, redact(detail))
            log.info("notification %s: %s", channel.name, outcome.detail, extra=_extra(outcome))
        except NotificationError as exc:
            outcome = NotificationOutcome(channel.kind, channel.name, Delivery.FAILED, redact(str(exc)))
            log.warning("notification %s failed: %s", channel.name, outcome.detail, extra=_extra(outcome))
        except Exception as exc:  # a bug must not lose the run either: report it like a failed delivery
            outcome = NotificationOutcome(
                channel.kind,
                channel.name,
                Delivery.FAILED,
                redact(
                    f"internal error ({type(exc).__name__}: {' '.join(str(exc).split())}); please report it"
                ),
            )
            log.warning("notification %s failed: %s", channel.name, outcome.detail, extra=_extra(outcome))
            log.debug("notification %s: traceback", channel.name, exc_info=True)
        outcomes.append(outcome)
    return outcomes


def format_outcomes(outcomes: Sequence[NotificationOutcome]) -> str:
    """The block ``auditor audit`` prints after the report paths (empty when nothing is configured)."""
    if not outcomes:
        return ""
    lines = ["Notifications:", *(f"  {o.line()}" for o in outcomes)]
    failed = sum(1 for o in outcomes if not o.ok)
    if failed:
        lines.append(
            f"  {failed} notification(s) could not be sent; the audit and its reports are complete "
            "and the exit code is unaffected."
        )
    return "\n".join(lines) + "\n"


def _extra(outcome: NotificationOutcome) -> dict[str, str]:
    return {
        "event": f"notification_{outcome.delivery.value}",
        "channel": outcome.channel,
        "channel_name": outcome.name,
    }
