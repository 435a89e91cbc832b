"""notify(): every channel gets its own outcome, nothing raises, nothing secret reaches a log line; and
a real audit of the simulator's demo fleet mailed and posted to local receivers."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from auditor.app import AuditOptions, audit
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
from auditor.simulator import GraphSimulator
from tests.integration.conftest import write_demo_config
from tests.notify.conftest import (
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


def test_a_real_audit_is_mailed_and_posted(
    sim: GraphSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpServer,
    webhook_receiver: WebhookReceiver,
) -> None:
    for name, value in sim.credentials.items():
        monkeypatch.setenv(name, value)
    config = write_demo_config(sim, tmp_path)
    outcome = audit(AuditOptions(config=config.path, out_dir=tmp_path / "out"), stdout=io.StringIO())
    assert {p.name for p in outcome.reports} == {"audit.json", "audit.html", "audit.xlsx"}

    assert smtp_server.tls is not None
    up = NotificationSettings(
        (email_channel(smtp_server.port, smtp_server.tls.ca_file), webhook_channel(WebhookFormat.SLACK))
    )
    env = {SMTP_PASSWORD_ENV: SMTP_PASSWORD, WEBHOOK_URL_ENV: webhook_receiver.url}
    sent = notify(outcome.run, outcome.reports, up, environ=env)
    assert [o.delivery for o in sent] == [Delivery.SENT, Delivery.SENT], [o.detail for o in sent]
    (message,) = smtp_server.mailbox.messages()
    attached = {p.get_filename() for p in message.iter_attachments()}
    assert {"audit.html", "audit.xlsx"} <= attached
    assert "Fourth Coffee" in body_of(message, "html")
    (slack,) = webhook_receiver.bodies
    assert slack["blocks"][0]["type"] == "header"

    # The SMTP server down: the run is still complete, its exit code unchanged, and it says so.
    down = NotificationSettings((email_channel(free_port(), smtp_server.tls.ca_file),))
    failed = notify(outcome.run, outcome.reports, down, environ=env)
    assert failed[0].delivery is Delivery.FAILED
    assert "could not be sent; the audit and its reports are complete" in format_outcomes(failed)
    assert outcome.exit_code == 3  # the demo fleet has tenants that cannot be audited, as before
    assert all(p.is_file() for p in outcome.reports)
    secrets = [v for k, v in sim.credentials.items() if not k.endswith("_CERTIFICATE")]
    for part in message.walk():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            for secret in secrets:
                assert secret.encode() not in payload
