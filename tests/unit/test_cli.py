"""The command line: `auditor audit` and `auditor demo` through Typer's CliRunner, the plain-code functions
behind them (auditor.app.audit, auditor.demo.run_demo) with fake tenant auditors, and the one place where
expected errors become a message and an exit code (auditor.cli.errors)."""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from auditor.app import AuditOptions, audit
from auditor.cli.errors import Verbose, command_context
from auditor.cli.main import app
from auditor.config import AuditConfig, TenantConfig
from auditor.constants import ExitCode
from auditor.demo import DEMO_CONFIG_NAME, DemoError, DemoOptions, run_demo
from auditor.errors import ConfigError
from auditor.model import Billing, Status, TenantResult
from auditor.reporting.json_report import read_run
from auditor.runner import TenantAudit
from tests.conftest import DEMO_TENANTS

CLIENT = "00000000-0000-0000-0000-0000000000c1"
T1 = "11111111-1111-1111-1111-111111111111"
T2 = "22222222-2222-2222-2222-222222222222"
T3 = "33333333-3333-3333-3333-333333333333"

CONFIG = f"""
[billing]
price_per_mailbox = 2.5
currency = "GBP"

[run]
concurrency = 2
tenant_timeout_seconds = 5

[auth]
client_id = "{CLIENT}"
client_secret_env = "AUDITOR_TEST_SECRET"

[[tenants]]
name = "Contoso"
tenant_id = "{T1}"
tags = ["gold"]

[[tenants]]
name = "Fabrikam"
tenant_id = "{T2}"
tags = ["silver"]

[[tenants]]
name = "Relecloud"
tenant_id = "{T3}"
tags = ["gold"]
"""

runner = CliRunner()


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


# --- auditor audit: usage and configuration errors exit 2 with one clear line ----------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "fleet.toml"
    result = invoke("audit", "--config", missing, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert_no_traceback(result)
    (line,) = error_lines(result)
    assert line.startswith("error: ") and str(missing) in line and "config file not found" in line
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()  # nothing done


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[billing]\ncurrency = "GBP\n', encoding="utf-8")
    result = invoke("audit", "--config", path, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert_no_traceback(result)
    (line,) = error_lines(result)
    assert f"{path}:2" in line and "TOML syntax error" in line


def test_invalid_setting_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace(T2, "fabrikam"), encoding="utf-8")
    result = invoke("audit", "--config", path, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert_no_traceback(result)
    (line,) = error_lines(result)
    assert "tenants[1].tenant_id" in line and "Fix:" in line


def test_unknown_tenant(config_file: Path, tmp_path: Path) -> None:
    result = invoke("audit", "--config", config_file, "--tenant", "Contosso", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert_no_traceback(result)
    (line,) = error_lines(result)
    assert "--tenant 'Contosso'" in line and "Contoso, Fabrikam, Relecloud" in line
    assert "did you mean 'Contoso'" in line


def test_unknown_tag(config_file: Path, tmp_path: Path) -> None:
    result = invoke("audit", "--config", config_file, "--tag", "platinum", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert_no_traceback(result)
    assert "--tag 'platinum'" in error_lines(result)[0]


@pytest.mark.parametrize("formats", [["pdf"], ["json,docx"], ["json", "--format", "pdf"]])
def test_unknown_format(config_file: Path, tmp_path: Path, formats: list[str]) -> None:
    out = tmp_path / "out"
    result = invoke("audit", "--config", config_file, "--out", out, "--format", *formats)
    assert result.exit_code == 2
    assert_no_traceback(result)
    (line,) = error_lines(result)
    assert "unknown report format" in line and "Use one or more of: json, html, xlsx" in line
    assert not out.exists()  # refused before anything ran


def test_unwritable_out_directory(config_file: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("a file, not a directory")
    result = invoke("audit", "--config", config_file, "--out", blocker)
    assert result.exit_code == 2
    assert_no_traceback(result)
    (line,) = error_lines(result)
    assert f"--out {blocker}" in line and "not a directory" in line


def test_missing_config_option_is_a_usage_error() -> None:
    result = invoke("audit")
    assert result.exit_code == 2
    assert "--config" in result.output
    assert_no_traceback(result)


def test_concurrency_must_be_positive(config_file: Path) -> None:
    result = invoke("audit", "--config", config_file, "--concurrency", "0")
    assert result.exit_code == 2
    assert_no_traceback(result)


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "audit" in result.stdout and "demo" in result.stdout


# --- the one place expected errors are handled ------------------------------------------------------------


def _app_raising(exc: BaseException) -> typer.Typer:
    test_app = typer.Typer(pretty_exceptions_enable=False)

    @test_app.command()
    def boom(verbose: Verbose = False) -> None:
        with command_context(verbose):
            raise exc

    return test_app


@pytest.mark.parametrize(
    ("exc", "code", "text"),
    [
        (ConfigError("no tenants are configured", path="f.toml", key="tenants"), 2, "f.toml: tenants: no"),
        (RuntimeError("kaput\nsecond line password=hunter2"), 3, "internal error: RuntimeError: kaput"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_command_context_turns_errors_into_one_line_and_an_exit_code(
    exc: BaseException, code: int, text: str
) -> None:
    result = runner.invoke(_app_raising(exc), [])
    assert result.exit_code == code
    assert_no_traceback(result)
    (line,) = error_lines(result)
    assert line.startswith("error: ") and text in line
    assert "hunter2" not in result.output


def test_verbose_shows_the_traceback_of_a_bug_in_the_log() -> None:
    result = runner.invoke(_app_raising(RuntimeError("kaput")), ["--verbose"])
    assert result.exit_code == ExitCode.TENANT_ERROR
    assert "Traceback" in result.stderr and "internal error: RuntimeError: kaput" in result.stderr


# --- auditor.app.audit with fake tenant auditors ----------------------------------------------------------


class FakeAuditor:
    """Answers per tenant name; ``hang`` tenants never finish."""

    def __init__(self, statuses: dict[str, Status], hang: frozenset[str] = frozenset()) -> None:
        self.statuses = statuses
        self.hang = hang
        self.audited: list[str] = []

    async def __call__(self, tenant: TenantConfig) -> TenantResult:
        self.audited.append(tenant.name)
        if tenant.name in self.hang:
            await asyncio.Event().wait()
        status = self.statuses.get(tenant.name, Status.COMPLIANT)
        billed = 3 if status is Status.NON_COMPLIANT else 0
        return TenantResult(
            tenant.name,
            tenant.tenant_id,
            status,
            Billing(billed, tenant.price_per_mailbox, billed * tenant.price_per_mailbox, "GBP"),
            tags=tenant.tags,
        )


class NoProgress:
    def start(self, total: int) -> None: ...

    def tenant_done(self, result: TenantResult, seconds: float) -> None: ...

    def finish(self) -> None: ...


def factory_of(fake: FakeAuditor) -> Any:
    def factory(config: AuditConfig) -> TenantAudit:
        assert len(config.tenants) == 3
        return fake

    return factory


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({}, 0),
        ({"Fabrikam": Status.NON_COMPLIANT}, 1),
        ({"Fabrikam": Status.AMBIGUOUS, "Relecloud": Status.NOT_CONNECTED}, 1),
        ({"Fabrikam": Status.NON_COMPLIANT, "Relecloud": Status.ERROR}, 3),
    ],
)
def test_audit_writes_the_report_prints_the_summary_and_returns_the_exit_code(
    config_file: Path, tmp_path: Path, statuses: dict[str, Status], expected: int
) -> None:
    out = tmp_path / "out"
    stdout = io.StringIO()
    fake = FakeAuditor(statuses)
    outcome = audit(
        AuditOptions(config=config_file, out_dir=out),
        auditor_factory=factory_of(fake),
        progress=NoProgress(),
        stdout=stdout,
    )
    assert outcome.exit_code == expected
    assert outcome.reports == (out / "audit.json", out / "audit.html", out / "audit.xlsx")
    saved = read_run(out / "audit.json")
    assert saved == outcome.run
    assert [t.name for t in saved.tenants] == ["Contoso", "Fabrikam", "Relecloud"]
    text = stdout.getvalue()
    assert "Contoso" in text and "Total (3 tenants)" in text
    assert str((out / "audit.json").resolve()) in text
    assert f"Exit code {expected}:" in text


def test_audit_only_runs_the_selected_tenants(config_file: Path, tmp_path: Path) -> None:
    fake = FakeAuditor({})
    outcome = audit(
        AuditOptions(config=config_file, out_dir=tmp_path, tags=("gold",)),
        auditor_factory=factory_of(fake),
        progress=NoProgress(),
        stdout=io.StringIO(),
    )
    assert sorted(fake.audited) == ["Contoso", "Relecloud"]
    assert [t.name for t in outcome.run.tenants] == ["Contoso", "Relecloud"]


def test_audit_applies_the_configured_tenant_timeout(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(CONFIG.replace("tenant_timeout_seconds = 5", "tenant_timeout_seconds = 0.2"))
    fake = FakeAuditor({}, hang=frozenset({"Fabrikam"}))
    outcome = audit(
        AuditOptions(config=path, out_dir=tmp_path / "out"),
        auditor_factory=factory_of(fake),
        progress=NoProgress(),
        stdout=io.StringIO(),
    )
    assert outcome.exit_code == 3
    fabrikam = outcome.run.tenants[1]
    assert fabrikam.error is not None and fabrikam.error.code.value == "TIMEOUT"
    assert [t.status for t in outcome.run.tenants] == [Status.COMPLIANT, Status.ERROR, Status.COMPLIANT]


def test_audit_refuses_bad_options_before_building_an_auditor(config_file: Path, tmp_path: Path) -> None:
    def factory(config: AuditConfig) -> TenantAudit:
        raise AssertionError("nothing may be audited after a usage error")

    with pytest.raises(ConfigError):
        audit(
            AuditOptions(config=config_file, out_dir=tmp_path, tenants=("Nobody",)), auditor_factory=factory
        )


# --- auditor demo -----------------------------------------------------------------------------------------


def test_demo_writes_a_config_for_the_simulator_and_audits_it(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    env_before = {k: v for k, v in os.environ.items() if k.startswith("USS_DEMO_")}

    def factory(config: AuditConfig) -> TenantAudit:
        seen["config"] = config
        # The credentials are in this process's environment for the run, as a scheduler would set them.
        seen["env"] = {k: v for k, v in os.environ.items() if k.startswith("USS_DEMO_")}
        return FakeAuditor({"Fabrikam Retail": Status.NON_COMPLIANT})

    stdout = io.StringIO()
    code = run_demo(DemoOptions(out_dir=tmp_path), auditor_factory=factory, stdout=stdout)
    assert code == 0

    config: AuditConfig = seen["config"]
    assert len(config.tenants) == len(DEMO_TENANTS)
    assert config.vendor.app_id == "" and config.vendor.publisher_tenant_id
    assert config.billing.price_per_mailbox == 2.5 and config.billing.currency == "GBP"
    default = config.tenants[0].auth
    assert default.client_secret_env == "USS_DEMO_AUDITOR_SECRET"
    assert default.authority.startswith("https://127.0.0.1:") and default.ca_bundle is not None
    relecloud = next(t for t in config.tenants if t.name == "Relecloud")
    assert relecloud.auth.client_secret_env == "USS_DEMO_RELECLOUD_PREVIOUS_SECRET"
    assert relecloud.auth.client_id != default.client_id
    assert all("demo" in t.tags for t in config.tenants)

    secrets = [v for k, v in seen["env"].items() if k.endswith("SECRET")]
    assert secrets and "USS_DEMO_AUDITOR_SECRET" in seen["env"]
    config_text = (tmp_path / DEMO_CONFIG_NAME).read_text(encoding="utf-8")
    output = stdout.getvalue()
    for secret in secrets:
        assert secret not in config_text and secret not in output
    assert {k: v for k, v in os.environ.items() if k.startswith("USS_DEMO_")} == env_before

    assert "on purpose" in output and "exits with 1" in output
    assert str((tmp_path / "audit.json").resolve()) in output
    assert len(read_run(tmp_path / "audit.json").tenants) == len(DEMO_TENANTS)


def test_demo_without_its_fixture_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DemoError, match="demo fleet fixture is missing") as caught:
        run_demo(DemoOptions(out_dir=tmp_path, fixture=tmp_path / "missing.toml"), stdout=io.StringIO())
    assert caught.value.exit_code == ExitCode.USAGE
    assert list(tmp_path.iterdir()) == []


def test_demo_with_a_broken_fixture_is_a_clear_error(tmp_path: Path) -> None:
    fixture = tmp_path / "fleet.toml"
    fixture.write_text("[[tenants]]\nname = 'no key'\n")
    with pytest.raises(DemoError, match="cannot be used"):
        run_demo(DemoOptions(out_dir=tmp_path / "out", fixture=fixture), stdout=io.StringIO())


@pytest.mark.slow  # about 3 s: the real SDKs against the simulator's demo tenants
def test_demo_end_to_end_through_the_cli(tmp_path: Path) -> None:
    """The real audit engine against the simulator: every verdict shows, the demo still exits 0."""
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out)
    assert result.exit_code == 0, result.output
    assert_no_traceback(result)
    assert "on purpose" in result.stdout and "exits with 3" in result.stdout
    run = read_run(out / "audit.json")
    statuses = {t.status for t in run.tenants}
    assert statuses == set(Status) - {Status.REMEDIATED}
    # one progress line per tenant when stderr is not a terminal
    assert f"[{len(DEMO_TENANTS)}/{len(DEMO_TENANTS)}]" in result.stderr
    data = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert data["summary"]["tenants"] == len(DEMO_TENANTS)


# --- --log-format json: one JSON object per line on stderr, for log shippers ------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # a line that is not JSON fails here


def test_json_logs_of_a_whole_run_are_one_object_per_line(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--log-format", "json")
    assert result.exit_code == 0, result.output
    records = json_lines(result.stderr)
    assert all({"time", "level", "tenant", "event", "message"} <= set(r) for r in records)
    done = [r for r in records if r["event"] == "tenant_done"]
    run = read_run(out / "audit.json")
    assert sorted((r["tenant"], r["tenant_id"], r["status"]) for r in done) == sorted(
        (t.name, t.tenant_id, t.status.value) for t in run.tenants
    )
    assert all(r["level"] == "info" and isinstance(r["seconds"], float) for r in done)
    # The demo's simulator is not a Microsoft host: its config allows that, and every run says so first.
    assert (records[0]["event"], records[0]["level"]) == ("custom_endpoints", "warning")
    assert records[1]["event"] == "run_start" and records[1]["tenant"] is None
    assert "Reports:" in result.stdout  # the summary and the report paths stay on stdout, as text


@pytest.mark.parametrize("how", ["option", "environment"])
def test_json_logs_carry_the_error_too(config_file: Path, tmp_path: Path, how: str) -> None:
    args: list[str | Path] = ["audit", "-c", config_file, "-o", tmp_path / "out", "--tenant", "Nope"]
    if how == "option":
        result = invoke(*args, "--log-format", "JSON")
    else:
        result = runner.invoke(app, [str(a) for a in args], env={"AUDITOR_LOG_FORMAT": "json"})
    assert result.exit_code == ExitCode.USAGE
    (record,) = json_lines(result.stderr)
    assert (record["level"], record["event"], record["exit_code"]) == ("error", "command_failed", 2)
    assert "Nope" in record["message"]


def test_an_unknown_log_format_is_a_usage_error(config_file: Path) -> None:
    result = invoke("audit", "-c", config_file, "--log-format", "xml")
    assert result.exit_code == 2
    assert "xml" in result.stderr and "text" in result.stderr and "json" in result.stderr


# --- notifications: checked before auditing, warned about early, never the exit code ---------------------


def test_a_bad_notifications_table_is_refused_before_auditing(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        CONFIG.replace(
            "[[tenants]]", '[notifications.webhook]\nformat = "teams"\nurl = "https://x"\n\n[[tenants]]', 1
        )
    )
    fake = FakeAuditor({})
    with pytest.raises(ConfigError, match=r"notifications\.webhook\.url.*url_env"):
        audit(AuditOptions(config=path, out_dir=tmp_path / "out"), auditor_factory=factory_of(fake))
    assert fake.audited == [] and not (tmp_path / "out").exists()


def test_an_unset_notification_variable_is_warned_about_at_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("UNSET_WEBHOOK_URL_FOR_TESTS", raising=False)
    path = tmp_path / "fleet.toml"
    hook = (
        '[notifications.webhook]\nname = "ops"\nformat = "slack"\nurl_env = "UNSET_WEBHOOK_URL_FOR_TESTS"\n\n'
    )
    path.write_text(CONFIG.replace("[[tenants]]", hook + "[[tenants]]", 1))
    fake = FakeAuditor({"Fabrikam": Status.NON_COMPLIANT})
    stdout = io.StringIO()
    with caplog.at_level("INFO", logger="auditor"):
        outcome = audit(
            AuditOptions(config=path, out_dir=tmp_path / "out"),
            auditor_factory=factory_of(fake),
            progress=NoProgress(),
            stdout=stdout,
        )
    assert outcome.exit_code == 1  # the gap, not the failed notification
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.index("notification_secret_missing") < events.index("run_start")  # before any auditing
    (warning,) = [r for r in caplog.records if getattr(r, "event", None) == "notification_secret_missing"]
    assert warning.levelname == "WARNING" and warning.getMessage() == (
        "notification ops: environment variable UNSET_WEBHOOK_URL_FOR_TESTS is not set; it will not be sent"
    )
    assert "ops (webhook): failed: environment variable UNSET_WEBHOOK_URL_FOR_TESTS" in stdout.getvalue()
    assert (
        stdout.getvalue()
        .rstrip()
        .endswith(
            "Exit code 1: at least one tenant still has a gap (non_compliant or ambiguous), or the vendor app "
            "was found in none of the tenants."
        )
    )


def test_on_change_without_history_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SOME_WEBHOOK_URL_FOR_TESTS", "http://127.0.0.1:9/hooks/x")
    path = tmp_path / "fleet.toml"
    tables = (
        "[history]\nenabled = false\n\n"
        '[notifications.webhook]\nname = "ops"\nformat = "slack"\nurl_env = "SOME_WEBHOOK_URL_FOR_TESTS"\n'
        'when = "on_change"\n\n'
    )
    path.write_text(CONFIG.replace("[[tenants]]", tables + "[[tenants]]", 1))
    with caplog.at_level("WARNING", logger="auditor"):
        audit(
            AuditOptions(config=path, out_dir=tmp_path / "out"),
            auditor_factory=factory_of(FakeAuditor({})),
            progress=NoProgress(),
            stdout=io.StringIO(),
        )
    (warning,) = [r for r in caplog.records if "needs the history" in r.getMessage()]
    assert "ops" in warning.getMessage() and "sent after every run" in warning.getMessage()
