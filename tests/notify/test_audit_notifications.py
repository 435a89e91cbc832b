"""Acceptance ("Nightly operations", item 4), end to end: `auditor audit` with a [notifications] table
mails both reports to a real local SMTP server (STARTTLS + AUTH) and posts to a local webhook receiver;
with the SMTP server down the run still completes, says so, and keeps its exit code; `on_change` follows
the history; shard parts never notify and the merge does, once."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from auditor.app import AuditOptions, audit
from auditor.constants import SECURITY_READER_ROLE_ID
from auditor.evaluate import exit_code
from auditor.shard import MergeOptions, merge_reports
from auditor.simulator import GraphSimulator
from tests.conftest import DEMO_TENANTS
from tests.integration.conftest import demo_config_text
from tests.receivers import (
    SMTP_PASSWORD,
    SMTP_PASSWORD_ENV,
    SMTP_USER,
    WEBHOOK_URL_ENV,
    SmtpServer,
    WebhookReceiver,
    body_of,
    free_port,
    notifications_toml,
)

FORMATS = ("json", "html", "xlsx")


def write_config(sim: GraphSimulator, directory: Path, notifications: str) -> Path:
    # [notifications] goes before the first [[tenants]], where a reader of the file expects the settings.
    text = demo_config_text(sim).replace("[[tenants]]", notifications.strip() + "\n\n[[tenants]]", 1)
    path = directory / "audit.toml"
    path.write_text(text, encoding="utf-8")
    return path


def receivers_in_environment(monkeypatch: pytest.MonkeyPatch, webhook_receiver: WebhookReceiver) -> None:
    monkeypatch.setenv(SMTP_PASSWORD_ENV, SMTP_PASSWORD)
    monkeypatch.setenv(WEBHOOK_URL_ENV, webhook_receiver.url)


@pytest.fixture
def env(
    sim_env: GraphSimulator, monkeypatch: pytest.MonkeyPatch, webhook_receiver: WebhookReceiver
) -> GraphSimulator:
    receivers_in_environment(monkeypatch, webhook_receiver)
    return sim_env


@pytest.mark.slow  # one audit of the 15 simulated tenants with the real SDKs
def test_the_audit_mails_both_reports_and_posts_the_webhook(
    env: GraphSimulator, tmp_path: Path, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    assert smtp_server.tls is not None
    config = write_config(
        env, tmp_path, notifications_toml(smtp_port=smtp_server.port, ca_file=smtp_server.tls.ca_file)
    )
    stdout = io.StringIO()
    outcome = audit(AuditOptions(config=config, out_dir=tmp_path / "out", formats=FORMATS), stdout=stdout)

    (message,) = smtp_server.mailbox.messages()
    assert smtp_server.mailbox.logins == [(SMTP_USER, True)]
    attached = {p.get_filename(): p.get_content() for p in message.iter_attachments()}
    assert set(attached) == {"audit.json", "audit.html", "audit.xlsx"}
    html = attached["audit.html"]
    assert isinstance(html, str) and html == (tmp_path / "out" / "audit.html").read_text(encoding="utf-8")
    assert attached["audit.xlsx"] == (tmp_path / "out" / "audit.xlsx").read_bytes()
    assert json.loads(attached["audit.json"])["run"]["id"] == outcome.run.run_id
    summary = outcome.run.summary()
    body = body_of(message, "html")
    assert "Fourth Coffee" in body and f"{summary.estimated_monthly_cost:,.2f}" in body
    assert message["To"] == "billing@example.com"

    (slack,) = webhook_receiver.bodies
    assert slack["blocks"][0]["type"] == "header" and isinstance(slack["text"], str)
    assert "https://intranet.example/uss/latest/audit.html" in json.dumps(slack)

    printed = stdout.getvalue()
    assert "Notifications:\n  billing e-mail (email): sent:" in printed
    assert "  billing channel (webhook): sent:" in printed
    assert outcome.exit_code == exit_code(outcome.run.tenants) == 3  # the demo fleet has unauditable tenants


@pytest.mark.slow
def test_with_the_smtp_server_down_the_run_completes_and_says_so(
    env: GraphSimulator,
    tmp_path: Path,
    smtp_server: SmtpServer,
    webhook_receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert smtp_server.tls is not None
    nobody_listens = free_port()
    config = write_config(
        env, tmp_path, notifications_toml(smtp_port=nobody_listens, ca_file=smtp_server.tls.ca_file)
    )
    stdout = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="auditor.notify"):
        outcome = audit(AuditOptions(config=config, out_dir=tmp_path / "out", formats=FORMATS), stdout=stdout)

    assert outcome.exit_code == exit_code(outcome.run.tenants) == 3  # unchanged by the failed e-mail
    assert all(p.is_file() and p.stat().st_size > 0 for p in outcome.reports)
    assert len(json.loads((tmp_path / "out" / "audit.json").read_text())["tenants"]) == len(DEMO_TENANTS)
    printed = stdout.getvalue()
    assert (
        f"billing e-mail (email): failed: cannot connect to SMTP server 127.0.0.1:{nobody_listens}" in printed
    )
    assert (
        "could not be sent; the audit and its reports are complete and the exit code is unaffected" in printed
    )
    assert "billing channel (webhook): sent:" in printed and len(webhook_receiver.bodies) == 1
    assert printed.rstrip().endswith("Exit code 3: at least one tenant could not be audited.")
    assert [r.levelname for r in caplog.records if "billing e-mail failed" in r.getMessage()] == ["WARNING"]
    assert smtp_server.mailbox.envelopes == []


def _remove_security_reader(sim: GraphSimulator, tenant_key: str) -> None:
    tenant = sim.world.tenant(DEMO_TENANTS[tenant_key])
    assert tenant is not None
    uss = next(sp for sp in tenant.service_principals if sp["displayName"] == "USS AzureAD")
    tenant.role_assignments[:] = [
        a
        for a in tenant.role_assignments
        if not (a["principalId"] == uss["id"] and a["roleDefinitionId"] == SECURITY_READER_ROLE_ID)
    ]


@pytest.mark.slow  # three audits of the 15 simulated tenants
def test_on_change_follows_the_history(
    fresh_sim_env: GraphSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpServer,
    webhook_receiver: WebhookReceiver,
) -> None:
    fresh_sim = fresh_sim_env
    receivers_in_environment(monkeypatch, webhook_receiver)
    assert smtp_server.tls is not None
    notifications = notifications_toml(
        smtp_port=smtp_server.port,
        ca_file=smtp_server.tls.ca_file,
        email_when="on_gaps",
        webhook_when="on_change",
    )
    config = write_config(fresh_sim, tmp_path, notifications)  # history: tmp_path/history.sqlite

    def night(n: int) -> str:
        stdout = io.StringIO()
        audit(AuditOptions(config=config, out_dir=tmp_path / f"night{n}", formats=FORMATS), stdout=stdout)
        return stdout.getvalue()

    first = night(1)  # no previous run: everything counts as changed
    assert "billing channel (webhook): sent:" in first and len(webhook_receiver.bodies) == 1
    second = night(2)  # nothing changed
    assert "billing channel (webhook): skipped:" in second and len(webhook_receiver.bodies) == 1
    _remove_security_reader(fresh_sim, "contoso")
    third = night(3)
    assert "billing channel (webhook): sent:" in third and len(webhook_receiver.bodies) == 2
    changed = json.dumps(webhook_receiver.bodies[-1])
    assert "Contoso Healthcare" in changed
    # on_gaps: the demo fleet has gaps every night, so every night was mailed.
    assert len(smtp_server.mailbox.envelopes) == 3


@pytest.mark.slow  # three shard audits and a merge of the 15 simulated tenants
def test_shard_parts_never_notify_the_merge_does_once(
    env: GraphSimulator, tmp_path: Path, smtp_server: SmtpServer, webhook_receiver: WebhookReceiver
) -> None:
    assert smtp_server.tls is not None
    config = write_config(
        env, tmp_path, notifications_toml(smtp_port=smtp_server.port, ca_file=smtp_server.tls.ca_file)
    )
    parts = []
    for k in (1, 2, 3):
        out = tmp_path / f"part{k}"
        stdout = io.StringIO()
        audit(AuditOptions(config=config, out_dir=out, formats=("json",), shard=f"{k}/3"), stdout=stdout)
        assert "Notifications:" not in stdout.getvalue()
        parts.append(out)
    assert webhook_receiver.bodies == [] and smtp_server.mailbox.envelopes == []

    stdout = io.StringIO()
    merged = merge_reports(
        MergeOptions(parts=tuple(parts), out_dir=tmp_path / "merged", config=config, formats=FORMATS),
        stdout=stdout,
    )
    assert len(merged.run.tenants) == len(DEMO_TENANTS)
    assert len(webhook_receiver.bodies) == 1
    (message,) = smtp_server.mailbox.messages()
    assert {p.get_filename() for p in message.iter_attachments()} == {
        "audit.json",
        "audit.html",
        "audit.xlsx",
    }
    assert "Notifications:" in stdout.getvalue()
