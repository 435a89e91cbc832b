"""`auditor history` through Typer's CliRunner and the real `auditor` app."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from auditor.cli.main import app
from auditor.history import HistoryStore
from auditor.model import FindingCode, RemediationAction, RunMode, Status
from tests.history.builders import CONTOSO, DAY, FABRIKAM, T0, record_all, run, tenant

CONFIG = """
[billing]
price_per_mailbox = 2.5

[auth]
client_id = "00000000-0000-0000-0000-0000000000c1"
client_secret_env = "AUDITOR_TEST_SECRET"

[[tenants]]
name = "Contoso"
tenant_id = "11111111-1111-1111-1111-111111111111"
"""


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["history", *(str(a) for a in args)])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def recorded(config: Path) -> Path:
    """Three runs: Contoso compliant, then a gap with a licensed shared mailbox, then an error; Fabrikam
    fixed by --remediate on the second night."""
    record_all(
        config.parent / "history.sqlite",
        run(
            T0,
            tenant(CONTOSO, Status.COMPLIANT),
            tenant(FABRIKAM, Status.NON_COMPLIANT),
            run_id="aaaaaaaa-0001",
        ),
        run(
            T0 + DAY,
            tenant(
                CONTOSO,
                Status.NON_COMPLIANT,
                shared=("m1", "m2", "m3"),
                findings=[FindingCode.ROLE_MISSING, FindingCode.SHARED_MAILBOX_LICENSED],
            ),
            tenant(FABRIKAM, Status.REMEDIATED, remediation=RemediationAction.CREATED),
            run_id="bbbbbbbb-0002",
            mode=RunMode.REMEDIATE,
        ),
        run(
            T0 + 3 * DAY,
            tenant(CONTOSO, Status.NON_COMPLIANT, shared=("m1", "m2", "m3")),
            tenant(FABRIKAM, Status.ERROR),
            run_id="cccccccc-0003",
        ),
    ).close()
    return config


def test_lists_runs_newest_first(recorded: Path) -> None:
    result = invoke("--config", recorded)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"History {recorded.parent / 'history.sqlite'}: 3 runs; the latest 3, newest first."
    assert lines[2].split() == [
        "Run",
        "Started",
        "(UTC)",
        "Mode",
        "Tenants",
        "Billed",
        "Monthly",
        "cost",
        "By",
        "status",
    ]
    assert lines[3].split() == [
        "cccccccc", "2024-05-04", "01:00", "audit", "2", "3", "at", "least", "7.50", "GBP", "1", "non_compliant,", "1", "error"
    ]  # fmt: skip
    assert lines[4].split()[:4] == ["bbbbbbbb", "2024-05-02", "01:00", "remediate"]
    assert lines[4].endswith("1 non_compliant, 1 remediated")
    assert lines[5].split()[0] == "aaaaaaaa" and "12.50 GBP" not in lines[5] and "5.00 GBP" in lines[5]


def test_runs_option_limits_the_list(recorded: Path) -> None:
    result = invoke("--config", recorded, "--runs", "1")
    assert result.exit_code == 0
    assert "3 runs; the latest 1, newest first." in result.stdout
    assert "cccccccc" in result.stdout and "bbbbbbbb" not in result.stdout


def test_an_interrupted_run_is_listed_as_such(recorded: Path) -> None:
    with HistoryStore.open(recorded.parent / "history.sqlite") as store:
        store.begin_run(T0 + 4 * DAY)
    result = invoke("--config", recorded)
    assert result.exit_code == 0
    assert "3 runs (and 1 that never finished)" in result.stdout
    row = result.stdout.splitlines()[3]
    assert (
        row.startswith("-")
        and "2024-05-05 01:00" in row
        and row.endswith("interrupted: never recorded (killed or crashed)")
    )


@pytest.mark.parametrize("who", ["contoso", CONTOSO])
def test_one_tenants_timeline(recorded: Path, who: str) -> None:
    result = invoke("--config", recorded, "--tenant", who)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Contoso ({CONTOSO}): 3 runs; oldest first."
    assert lines[2].split()[:5] == ["Started", "(UTC)", "Run", "Mode", "Status"]
    assert lines[3].split() == [
        "2024-05-01",
        "01:00",
        "aaaaaaaa",
        "audit",
        "compliant",
        "0",
        "0.00",
        "GBP",
        "none",
        "-",
    ]
    assert lines[4].split() == [
        "2024-05-02", "01:00", "bbbbbbbb", "remediate", "non_compliant", "3", "7.50", "GBP", "none",
        "ROLE_MISSING,", "SHARED_MAILBOX_LICENSED",
    ]  # fmt: skip
    assert lines[-1] == (
        "Now: non_compliant; gap open since 2024-05-02 01:00 (2.0 days, 2 runs; accrued 0.49 GBP)."
    )  # 7.50 a month for 2 days


def test_a_tenant_that_errored_last_shows_its_last_known_status(recorded: Path) -> None:
    result = invoke("--config", recorded, "--tenant", "Fabrikam", "--runs", "2")
    assert result.exit_code == 0, result.output
    assert "3 runs; the latest 2, oldest first." in result.stdout
    assert "error AUTH_FAILED" in result.stdout and "created" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        "Now: could not be audited in its latest run; last known: remediated on 2024-05-02 01:00."
    )


def test_a_tenant_fixed_in_its_latest_run_shows_what_the_gap_cost(config: Path) -> None:
    record_all(
        config.parent / "history.sqlite",
        run(T0, tenant(FABRIKAM, Status.NON_COMPLIANT, shared=("f1", "f2", "f3", "f4"))),
        run(T0 + 3 * DAY, tenant(FABRIKAM, Status.COMPLIANT)),
    ).close()
    result = invoke("--config", config, "--tenant", "fabrikam")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "Now: compliant; the gap open since 2024-05-01 01:00 (3.0 days, 1 run; accrued 0.99 GBP) ended in the "
        "latest run."
    )  # 10.00 a month for 3 days


def test_unknown_tenant_is_a_usage_error_with_a_suggestion(recorded: Path) -> None:
    result = invoke("--config", recorded, "--tenant", "Contosso")
    assert result.exit_code == 2
    assert "--tenant 'Contosso' is not in the history (did you mean 'Contoso'?)" in result.stderr
    assert "Contoso, Fabrikam" in result.stderr and "Traceback" not in result.output


def test_no_history_yet(config: Path) -> None:
    result = invoke("--config", config)
    assert result.exit_code == 0
    assert "No runs recorded yet" in result.stdout
    assert not (config.parent / "history.sqlite").exists()  # looking does not create it


def test_disabled_history_is_a_usage_error(config: Path) -> None:
    config.write_text("[history]\nenabled = false\n" + CONFIG)
    result = invoke("--config", config)
    assert result.exit_code == 2 and "history is turned off" in result.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--runs", "0"], "--runs"),
        (["--config", "missing.toml"], "config file not found"),
    ],
)
def test_usage_errors(config: Path, args: list[str], text: str) -> None:
    full = args if "--config" in args else ["--config", str(config), *args]
    result = invoke(*full)
    assert result.exit_code == 2 and text in result.output
