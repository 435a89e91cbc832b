"""E-mail against a real SMTP server on 127.0.0.1 (aiosmtpd): STARTTLS, AUTH, the HTML summary, the
report attachments, and every way it can fail turning into a clear failed outcome instead of an error."""

from __future__ import annotations

import logging
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from auditor.model import RunResult
from auditor.notify import Delivery, EmailSettings, NotificationOutcome, Policy, SmtpSecurity, notify
from auditor.notify import NotificationSettings as Settings
from auditor.notify.digest import digest_run
from auditor.notify.email import build_message, render_html
from tests.receivers import (
    SMTP_PASSWORD,
    SMTP_PASSWORD_ENV,
    SMTP_USER,
    SmtpServer,
    body_of,
    free_port,
)
from tests.reporting.sample import sample_run

ENV = {SMTP_PASSWORD_ENV: SMTP_PASSWORD}


def email_settings(server: SmtpServer | None = None, **overrides: Any) -> EmailSettings:
    values: dict[str, Any] = {
        "name": "billing e-mail",
        "host": "127.0.0.1",
        "port": server.port if server else free_port(),
        "sender": "USS auditor <uss-auditor@example.com>",
        "recipients": ("billing@example.com",),
        "cc": ("ops@example.com",),
        "username": SMTP_USER,
        "password_env": SMTP_PASSWORD_ENV,
        "ca_bundle": server.tls.ca_file if server and server.tls else None,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return EmailSettings(**values)


def send(
    run: RunResult, reports: list[Path], channel: EmailSettings, env: dict[str, str] = ENV
) -> NotificationOutcome:
    (outcome,) = notify(run, reports, Settings((channel,)), environ=env)
    return outcome


def test_the_summary_arrives_over_starttls_with_auth_and_the_reports_attached(
    smtp_server: SmtpServer, run: RunResult, reports: list[Path]
) -> None:
    outcome = send(run, reports, email_settings(smtp_server))

    assert outcome.delivery is Delivery.SENT, outcome.detail
    assert "2 recipient(s)" in outcome.detail
    assert smtp_server.mailbox.logins == [(SMTP_USER, True)]
    (envelope,) = smtp_server.mailbox.envelopes
    assert sorted(envelope.rcpt_tos) == ["billing@example.com", "ops@example.com"]
    (message,) = smtp_server.mailbox.messages()
    assert (
        message["Subject"]
        == "[USS audit] 8 of 15 tenant(s) need attention (5 non_compliant, 1 ambiguous, 2 error)"
    )
    assert message["X-USS-Auditor-Run"] == run.run_id

    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None and text is not None
    html_body = html.get_content()
    assert "<table" in html_body and "Needs attention" in html_body
    assert "Lucerne Publishing" in html_body and "GBP 290.00 per month" in html_body
    assert "Attached: audit.json, audit.html, audit.xlsx." in text.get_content()

    attached = {part.get_filename(): part for part in message.iter_attachments()}
    assert set(attached) == {"audit.html", "audit.xlsx", "audit.json"}
    by_name = {p.name: p for p in reports}
    for name, part in attached.items():
        assert part.get_payload(decode=True) == by_name[str(name)].read_bytes(), name
    assert attached["audit.xlsx"].get_content_type() == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    assert attached["audit.html"].get_content_type() == "text/html"


def test_only_the_requested_reports_that_exist_are_attached(
    smtp_server: SmtpServer, run: RunResult, reports: list[Path], tmp_path: Path
) -> None:
    missing = tmp_path / "audit.xlsx"  # listed by the caller but never written
    html = next(p for p in reports if p.name == "audit.html")
    outcome = send(run, [html, missing], email_settings(smtp_server, attach=("html", "xlsx")))
    assert outcome.delivery is Delivery.SENT
    (message,) = smtp_server.mailbox.messages()
    assert [p.get_filename() for p in message.iter_attachments()] == ["audit.html"]
    assert "audit.xlsx (not found)" in body_of(message, "plain")


def test_reports_over_the_size_budget_are_named_instead_of_attached(
    run: RunResult, reports: list[Path]
) -> None:
    html_size = next(p for p in reports if p.name == "audit.html").stat().st_size
    channel = email_settings(max_attachment_bytes=html_size)  # room for the page, not for more
    message = build_message(digest_run(run), [p for p in reports if p.name != "audit.json"], channel)
    assert [p.get_filename() for p in message.iter_attachments()] == ["audit.html"]
    assert "audit.xlsx (" in body_of(message, "plain")
    assert "over the max_attachments_mb budget" in body_of(message, "plain")


def test_tenant_data_cannot_inject_markup_into_the_html_body() -> None:
    hostile = sample_run(hostile=True)
    html = render_html(digest_run(hostile, max_listed=50))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<img src=x" not in html


def test_smtp_server_down_is_a_failed_outcome_not_an_exception(
    run: RunResult, reports: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    channel = email_settings(port=free_port())  # nothing listens there
    with caplog.at_level(logging.INFO, logger="auditor"):
        outcome = send(run, reports, channel)
    assert outcome.delivery is Delivery.FAILED
    assert not outcome.ok
    assert f"cannot connect to SMTP server 127.0.0.1:{channel.port}: connection refused" in outcome.detail
    assert "nothing was sent" in outcome.detail
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "billing e-mail failed" in warning.getMessage()
    assert getattr(warning, "event", None) == "notification_failed"


def test_a_wrong_password_is_named_without_echoing_it(
    smtp_server: SmtpServer, run: RunResult, reports: list[Path]
) -> None:
    outcome = send(run, reports, email_settings(smtp_server), {SMTP_PASSWORD_ENV: "wrong-password-Kq2"})
    assert outcome.delivery is Delivery.FAILED
    assert f"refused the login of {SMTP_USER} (535" in outcome.detail
    assert SMTP_PASSWORD_ENV in outcome.detail
    assert "wrong-password-Kq2" not in outcome.detail
    assert smtp_server.mailbox.envelopes == []


def test_an_unset_password_variable_sends_nothing(
    smtp_server: SmtpServer, run: RunResult, reports: list[Path]
) -> None:
    outcome = send(run, reports, email_settings(smtp_server), {})
    assert outcome.delivery is Delivery.FAILED
    assert f"environment variable {SMTP_PASSWORD_ENV} (password_env) is not set" in outcome.detail
    assert smtp_server.mailbox.logins == []


def test_an_untrusted_certificate_stops_before_the_password_is_sent(
    smtp_server: SmtpServer, run: RunResult, reports: list[Path]
) -> None:
    outcome = send(run, reports, email_settings(smtp_server, ca_bundle=None))
    assert outcome.delivery is Delivery.FAILED
    assert "TLS certificate of SMTP server" in outcome.detail and "ca_bundle" in outcome.detail
    assert smtp_server.mailbox.logins == []


def test_a_server_without_starttls_gets_nothing(
    plain_smtp_server: SmtpServer, run: RunResult, reports: list[Path]
) -> None:
    outcome = send(run, reports, email_settings(plain_smtp_server))
    assert outcome.delivery is Delivery.FAILED
    assert "does not offer STARTTLS" in outcome.detail
    assert plain_smtp_server.mailbox.envelopes == []


def test_a_local_relay_without_tls_or_auth(
    plain_smtp_server: SmtpServer, run: RunResult, reports: list[Path]
) -> None:
    channel = email_settings(plain_smtp_server, security=SmtpSecurity.NONE, username=None, password_env=None)
    outcome = send(run, reports, channel, {})
    assert outcome.delivery is Delivery.SENT, outcome.detail
    assert len(plain_smtp_server.mailbox.envelopes) == 1


def test_a_server_that_never_answers_times_out(run: RunResult, reports: list[Path]) -> None:
    with socket.socket() as listener:  # accepts connections but never speaks SMTP
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        outcome = send(run, reports, email_settings(port=port, timeout_seconds=1.0))
    assert outcome.delivery is Delivery.FAILED
    assert "did not answer within 1 s" in outcome.detail


def test_policy_skips_are_reported(smtp_server: SmtpServer, run: RunResult, reports: list[Path]) -> None:
    compliant_only = replace(run, tenants=tuple(t for t in run.tenants if t.status.value == "compliant"))
    outcome = send(compliant_only, reports, email_settings(smtp_server, policy=Policy.ON_GAPS))
    assert outcome.delivery is Delivery.SKIPPED
    assert outcome.ok
    assert outcome.detail == "no tenant has a gap or an error"
    assert smtp_server.mailbox.envelopes == []
