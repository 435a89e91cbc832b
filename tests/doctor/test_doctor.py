"""`auditor doctor` against the Graph simulator: real azure-identity sign-ins, real tokens whose `roles`
claim lists what each tenant consented, real certificates with short and long lifetimes."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from auditor.cli.main import app as main_app
from auditor.doctor import Check, CheckStatus, DoctorOptions, DoctorReport, run_doctor
from auditor.logs import JsonLogFormatter
from auditor.simulator import GraphSimulator
from tests.doctor.conftest import UNSET_ENV, client_id, doctor_config
from tests.integration.conftest import write_demo_config


def cli_app() -> typer.Typer:
    """The `auditor` command line (doctor and permissions among its commands)."""
    return main_app


def by(report: DoctorReport, tenant: str) -> dict[str, Check]:
    return {c.check: c for c in report.checks if c.tenant == tenant}


def environ(sim: GraphSimulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USS_")}
    env.update(sim.credentials)
    return env


def secret_values(sim: GraphSimulator) -> list[str]:
    """Every secret the simulator handed out: client secrets, and the private keys' PEM bodies."""
    values = [v for k, v in sim.credentials.items() if not k.endswith("_CERTIFICATE")]
    for key, path in sim.credentials.items():
        if key.endswith("_CERTIFICATE"):
            pem = Path(path).read_text()
            key_block = pem.split("-----BEGIN PRIVATE KEY-----")[1].split("-----END PRIVATE KEY-----")[0]
            values += [line for line in key_block.split() if len(line) > 20]
    return values


# --- the demo fleet -------------------------------------------------------------------------------------


def test_fourthcoffee_is_missing_rolemanagement_read_directory(sim: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim, tmp_path)
    report = run_doctor(DoctorOptions(config.path, tenants=("Fourth Coffee",)), environ=environ(sim))
    checks = by(report, "Fourth Coffee")
    audit = checks["audit permissions"]
    assert audit.status is CheckStatus.PROBLEM
    assert audit.detail.startswith("missing RoleManagement.Read.Directory (read directory role assignments")
    assert (
        "Add the Microsoft Graph application permission(s) RoleManagement.Read.Directory to app" in audit.fix
    )
    assert "/3c8f1e52-7a41-4d0b-9c6e-1f2a3b4c5d12/adminconsent?client_id=" in audit.fix
    assert checks["sign-in"].status is CheckStatus.OK
    assert checks["vendor app"].status is CheckStatus.OK
    # The demo app lacks the write permission there too: remediation could not fix it (a warning).
    assert checks["remediation permissions"].status is CheckStatus.WARNING
    assert "remediate = false" in checks["remediation permissions"].fix
    assert report.exit_code == 1


def test_a_wrong_secret_fails_sign_in_with_the_aadsts_fix(sim: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim, tmp_path)
    report = run_doctor(DoctorOptions(config.path, tenants=("Relecloud",)), environ=environ(sim))
    sign_in = by(report, "Relecloud")["sign-in"]
    assert sign_in.status is CheckStatus.PROBLEM
    assert "AADSTS7000215" in sign_in.detail
    assert sign_in.fix.startswith(
        "The client secret is wrong or has expired: create a new client secret for app"
    )
    assert set(by(report, "Relecloud")) == {"sign-in"}  # nothing else can be checked without a token


def test_a_healthy_demo_tenant_needs_nothing(sim: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim, tmp_path)
    report = run_doctor(DoctorOptions(config.path, tenants=("Contoso Healthcare",)), environ=environ(sim))
    checks = by(report, "Contoso Healthcare")
    assert {name: c.status for name, c in checks.items()} == {
        "sign-in": CheckStatus.OK,
        "audit permissions": CheckStatus.OK,
        "remediation permissions": CheckStatus.OK,
        "client secret": CheckStatus.UNKNOWN,
        "vendor app": CheckStatus.OK,
    }
    assert "not part of the secret" in checks["client secret"].detail
    assert report.exit_code == 0


# --- the doctor's own fleet -----------------------------------------------------------------------------


@pytest.fixture
def fleet_report(doctor_sim: GraphSimulator, tmp_path: Path) -> DoctorReport:
    return run_doctor(DoctorOptions(doctor_config(doctor_sim, tmp_path)), environ=environ(doctor_sim))


def test_an_expiring_certificate_is_flagged(fleet_report: DoctorReport) -> None:
    certificate = by(fleet_report, "Expiring Certificate Ltd")["certificate"]
    assert certificate.status is CheckStatus.WARNING
    assert "expires on" in certificate.detail and "in 9 day(s)" in certificate.detail
    assert "thumbprint" in certificate.detail
    assert certificate.fix.startswith("Create a new certificate, upload its public part to app")
    healthy = by(fleet_report, "Healthy Inc")["certificate"]
    assert healthy.status is CheckStatus.OK and "valid until" in healthy.detail


def test_a_separate_remediation_credential_is_checked_on_its_own(
    fleet_report: DoctorReport, doctor_sim: GraphSimulator
) -> None:
    checks = by(fleet_report, "Expiring Certificate Ltd")
    assert checks["audit permissions"].status is CheckStatus.OK
    assert checks["remediation sign-in"].status is CheckStatus.OK
    assert client_id(doctor_sim, "USS_DOCTOR_WRITER") in checks["remediation sign-in"].detail
    assert checks["remediation permissions"].status is CheckStatus.OK
    lacking = by(fleet_report, "Writer Without Rights SA")["remediation permissions"]
    assert lacking.status is CheckStatus.PROBLEM  # the writer app exists only to write
    assert "missing RoleManagement.ReadWrite.Directory" in lacking.detail


def test_broader_permissions_count_and_remediate_false_skips_the_write_check(
    fleet_report: DoctorReport,
) -> None:
    checks = by(fleet_report, "Broad Permissions BV")
    assert checks["audit permissions"].status is CheckStatus.OK
    assert (
        "covered by broader Directory.Read.All for Application.Read.All" in checks["audit permissions"].detail
    )
    assert checks["remediation permissions"].status is CheckStatus.SKIPPED
    assert checks["vendor app"].status is CheckStatus.PROBLEM
    assert "connect it from the USS portal" in checks["vendor app"].fix


def test_an_unset_secret_variable_is_named(fleet_report: DoctorReport) -> None:
    checks = by(fleet_report, "Unset Variable Co")
    assert checks["credential"].status is CheckStatus.PROBLEM
    assert f"environment variable {UNSET_ENV} (client_secret_env) is not set" in checks["credential"].detail
    assert checks["sign-in"].status is CheckStatus.SKIPPED


def test_audit_only_leaves_remediation_out(doctor_sim: GraphSimulator, tmp_path: Path) -> None:
    options = DoctorOptions(
        doctor_config(doctor_sim, tmp_path), tenants=("Expiring Certificate Ltd",), audit_only=True
    )
    checks = by(run_doctor(options, environ=environ(doctor_sim)), "Expiring Certificate Ltd")
    assert "remediation sign-in" not in checks
    assert checks["remediation permissions"].status is CheckStatus.SKIPPED


# --- the command line -----------------------------------------------------------------------------------


def test_the_cli_prints_a_table_with_fixes_and_never_a_secret(
    doctor_sim: GraphSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = doctor_config(doctor_sim, tmp_path)
    with caplog.at_level(logging.DEBUG):
        result = CliRunner().invoke(
            cli_app(), ["doctor", "--config", str(config), "-v"], env=environ(doctor_sim)
        )
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert out.splitlines()[0].split() == ["Tenant", "Check", "Status", "Detail"]
    assert "Expiring Certificate Ltd" in out and "fix: Create a new certificate" in out
    assert "6 tenant(s) checked:" in out
    formatter = JsonLogFormatter()
    logs = "\n".join(formatter.format(r) for r in caplog.records)
    for secret in secret_values(doctor_sim):
        assert secret not in result.output
        assert secret not in logs
    assert "eyJ" not in result.output and "eyJ" not in logs  # no token either


def test_the_cli_json_output(doctor_sim: GraphSimulator, tmp_path: Path) -> None:
    config = doctor_config(doctor_sim, tmp_path)
    argv = ["doctor", "--config", str(config), "--tenant", "Healthy Inc", "--json"]
    result = CliRunner().invoke(cli_app(), argv, env=environ(doctor_sim))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tenants"] == 1 and data["problems"] == 0 and data["exit_code"] == 0
    assert {c["check"] for c in data["checks"]} == {
        "certificate",
        "sign-in",
        "audit permissions",
        "remediation permissions",
        "vendor app",
    }


def test_a_config_error_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app(), ["doctor", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2
    assert "config file not found" in result.stderr


def test_an_unknown_tenant_exits_2(doctor_sim: GraphSimulator, tmp_path: Path) -> None:
    config = doctor_config(doctor_sim, tmp_path)
    result = CliRunner().invoke(cli_app(), ["doctor", "--config", str(config), "--tenant", "Nope"])
    assert result.exit_code == 2
    assert "--tenant 'Nope' matches no tenant" in result.stderr
