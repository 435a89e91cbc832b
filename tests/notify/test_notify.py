"""notify(): every channel gets its own outcome, nothing raises, nothing secret reaches a log line. The
config-driven run of a real audit is in test_audit_notifications.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from auditor.logs import JsonLogFormatter
from auditor.model import RunResult
from auditor.notify import (
    Delivery,
    EmailSettings,
    NotificationSettings,
    Policy,
    WebhookFormat,
    WebhookSettings,
    format_outcomes,
    notify,
)
from auditor.notify.digest import RunDigest
from auditor.notify.settings import Channel
from tests.receivers import (
    SMTP_PASSWORD,
    SMTP_PASSWORD_ENV,
    SMTP_USER,
    WEBHOOK_TOKEN,
    WEBHOOK_URL_ENV,
    SmtpServer,
    WebhookReceiver,
    body_of,
    free_port,
)


def email_channel(port: int, ca_file: Path | None, **overrides: object) -> EmailSettings:
    values: dict[str, object] = {
        "name": "billing",
        "host": "127.0.0.1",
        "port": port,
        "sender": "uss-auditor@example.com",
        "recipients": ("billing@example.com",),
        "username": SMTP_USER,
        "password_env": SMTP_PASSWORD_ENV,
        "ca_bundle": ca_file,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return EmailSettings(**values)  # type: ignore[arg-type]


def webhook_channel(fmt: WebhookFormat = WebhookFormat.TEAMS, **overrides: object) -> WebhookSettings:
    values: dict[str, object] = {
        "name": f"{fmt.value}",
        "format": fmt,
        "url_env": WEBHOOK_URL_ENV,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return WebhookSettings(**values)  # type: ignore[arg-type]


def test_nothing_configured_means_nothing_done(run: RunResult, reports: list[Path]) -> None:
    assert notify(run, reports, NotificationSettings()) == []
    assert format_outcomes([]) == ""


def test_one_failing_channel_does_not_stop_the_others(
    run: RunResult, reports: list[Path], smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    assert smtp_server.tls is not None
    settings = NotificationSettings(
        (
            email_channel(free_port(), None, name="down"),
            email_channel(smtp_server.port, smtp_server.tls.ca_file, name="up"),
            webhook_channel(WebhookFormat.SLACK, name="quiet", policy=Policy.ON_CHANGE),
            webhook_channel(),
        )
    )
    env = {SMTP_PASSWORD_ENV: SMTP_PASSWORD, WEBHOOK_URL_ENV: webhook_receiver.url}
    outcomes = notify(
        run, reports, settings, previous={t.tenant_id: t.status.value for t in run.tenants}, environ=env
    )
    assert [(o.name, o.delivery) for o in outcomes] == [
        ("down", Delivery.FAILED),
        ("up", Delivery.SENT),
        ("quiet", Delivery.SKIPPED),
        ("teams", Delivery.SENT),
    ]
    text = format_outcomes(outcomes)
    assert text.startswith("Notifications:\n  down (email): failed: cannot connect to SMTP server")
    assert "  quiet (webhook): skipped: no tenant changed status since the previous run\n" in text
    assert "1 notification(s) could not be sent; the audit and its reports are complete" in text
    assert len(smtp_server.mailbox.envelopes) == 1 and len(webhook_receiver.bodies) == 1


def test_a_bug_in_a_sender_is_a_failed_outcome_not_a_crash(run: RunResult, reports: list[Path]) -> None:
    def broken(channel: Channel, digest: RunDigest, files: Sequence[Path], env: Mapping[str, str]) -> str:
        raise KeyError("surprise")

    outcomes = notify(run, reports, NotificationSettings((webhook_channel(),)), senders={"webhook": broken})
    assert outcomes[0].delivery is Delivery.FAILED
    assert "internal error (KeyError" in outcomes[0].detail


def test_changes_since_the_previous_run_are_in_the_message(run: RunResult, smtp_server: SmtpServer) -> None:
    assert smtp_server.tls is not None
    previous = {t.tenant_id: "compliant" for t in run.tenants}
    channel = email_channel(smtp_server.port, smtp_server.tls.ca_file, policy=Policy.ON_CHANGE, attach=())
    (outcome,) = notify(
        run, [], NotificationSettings((channel,)), previous, environ={SMTP_PASSWORD_ENV: SMTP_PASSWORD}
    )
    assert outcome.delivery is Delivery.SENT, outcome.detail
    (message,) = smtp_server.mailbox.messages()
    body = body_of(message, "plain")
    assert "- Fabrikam Retail: compliant -> non_compliant" in body
    assert "- Contoso Healthcare" not in body  # unchanged


def test_no_secret_in_any_log_line(
    run: RunResult,
    reports: list[Path],
    smtp_server: SmtpServer,
    webhook_receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert smtp_server.tls is not None
    settings = NotificationSettings(
        (
            email_channel(smtp_server.port, smtp_server.tls.ca_file),
            email_channel(
                smtp_server.port, smtp_server.tls.ca_file, name="wrong login", username="nobody@example.com"
            ),
            webhook_channel(WebhookFormat.SLACK),
            webhook_channel(name="gone", url_env="GONE_URL"),
        )
    )
    env = {
        SMTP_PASSWORD_ENV: SMTP_PASSWORD,
        WEBHOOK_URL_ENV: webhook_receiver.url,
        "GONE_URL": f"http://127.0.0.1:{free_port()}/hooks/{WEBHOOK_TOKEN}",
    }
    with caplog.at_level(logging.DEBUG):
        outcomes = notify(run, reports, settings, environ=env)
    assert [o.delivery for o in outcomes] == [Delivery.SENT, Delivery.FAILED, Delivery.SENT, Delivery.FAILED]
    formatter = JsonLogFormatter()
    lines = [formatter.format(r) for r in caplog.records] + [format_outcomes(outcomes)]
    for line in lines:
        assert SMTP_PASSWORD not in line
        assert WEBHOOK_TOKEN not in line
