"""Notifications after a run: e-mail (SMTP) and webhooks (Teams, Slack), each always / on gaps / on change.

Usage (what ``auditor audit`` does after writing the reports)::

    settings = notification_settings(config)          # validated before auditing: ConfigError -> exit 2
    ...
    outcomes = notify(run, reports, settings, previous=previous_statuses)
    stdout.write(format_outcomes(outcomes))

:func:`notify` never raises and never changes the exit code; see :mod:`auditor.notify.dispatch`.
"""

from __future__ import annotations

from .digest import AttentionRow, RunDigest, digest_run
from .dispatch import Delivery, NotificationOutcome, format_outcomes, notify
from .email import NotificationError
from .policy import Decision, StatusChange, decide
from .settings import (
    EmailSettings,
    NotificationSettings,
    Policy,
    SmtpSecurity,
    WebhookFormat,
    WebhookSettings,
    notification_settings,
    parse_notifications_table,
)

__all__ = [
    "AttentionRow",
    "Decision",
    "Delivery",
    "EmailSettings",
    "NotificationError",
    "NotificationOutcome",
    "NotificationSettings",
    "Policy",
    "RunDigest",
    "SmtpSecurity",
    "StatusChange",
    "WebhookFormat",
    "WebhookSettings",
    "decide",
    "digest_run",
    "format_outcomes",
    "notification_settings",
    "notify",
    "parse_notifications_table",
]
