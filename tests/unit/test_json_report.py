"""audit.json (auditor.reporting.json_report) and the report dispatcher (auditor.reporting): atomic writes,
round trips, format selection, clear errors for unusable files and directories."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditor.constants import ExitCode
from auditor.errors import ErrorCode, TenantError
from auditor.model import (
    SCHEMA_VERSION,
    Billing,
    Finding,
    FindingCode,
    IdentificationMethod,
    IdentifiedServicePrincipal,
    MailboxCensus,
    Remediation,
    RemediationAction,
    RunMode,
    RunResult,
    ServicePrincipalRecord,
    Severity,
    SharedMailbox,
    Status,
    TenantResult,
)
from auditor.reporting import (
    FORMATS,
    OutputDirectoryError,
    RunFileError,
    UnknownFormatError,
    parse_formats,
    prepare_out_dir,
    write_reports,
)
from auditor.reporting.json_report import read_run, write_json

STARTED = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


def sample_run(*, name: str = "Société Générale – Zürich") -> RunResult:
    sp = ServicePrincipalRecord(
        id="sp-1",
        app_id="7e1b3f0c-2d54-4c8e-9a61-5f0c3b2a9d17",
        display_name="USS AzureAD",
        account_enabled=True,
        app_owner_organization_id="c0ffee00-5ca1-4ab1-9e55-00000000c0de",
    )
    census = MailboxCensus(
        shared_mailboxes=(
            SharedMailbox(
                "u1", "<script>alert(1)</script> Sales", "sales@x.example", "sales@x.example", True
            ),
            SharedMailbox("u2", "Støttе", "support@x.example", None, False, True),
        ),
        user=40,
        room=2,
        no_mailbox=3,
    )
    gap = TenantResult(
        name=name,
        tenant_id="11111111-1111-1111-1111-111111111111",
        status=Status.NON_COMPLIANT,
        billing=Billing(2, 2.5, 5.0, "GBP"),
        tags=("gold", "eu"),
        service_principal=IdentifiedServicePrincipal(sp, IdentificationMethod.PUBLISHER),
        findings=(Finding(FindingCode.ROLE_MISSING, Severity.HIGH, "No Security Reader at /."),),
        mailboxes=census,
        remediation=Remediation(RemediationAction.PLANNED, "would assign Security Reader at /"),
    )
    error = TenantResult(
        name="Relecloud",
        tenant_id="22222222-2222-2222-2222-222222222222",
        status=Status.ERROR,
        billing=Billing(None, 2.5, None, "GBP"),
        error=TenantError(ErrorCode.AUTH_FAILED, "AADSTS7000215: invalid client secret", "Rotate it."),
    )
    return RunResult(
        run_id="5d0c3a8e-8f5e-4f43-9d5a-0b8f5f1a2c3d",
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=42),
        tool_version="0.1.0",
        mode=RunMode.AUDIT,
        tenants=(gap, error),
        currency="GBP",
    )


# --- writing ----------------------------------------------------------------------------------------------


def test_round_trip_through_audit_json(tmp_path: Path) -> None:
    run = sample_run()
    path = write_json(run, tmp_path / "audit.json")
    again = read_run(path)
    assert again == run
    assert again.to_dict() == run.to_dict()
    assert RunResult.from_dict(json.loads(path.read_text(encoding="utf-8"))) == run


def test_audit_json_is_indented_utf8_with_readable_non_ascii(tmp_path: Path) -> None:
    path = write_json(sample_run(), tmp_path / "audit.json")
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    assert "Société Générale – Zürich" in text  # not \u escapes
    assert '\n  "run": {' in text  # indent 2
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["summary"]["estimated_monthly_cost"] == 5.0
    assert set(data) == {"schema_version", "run", "summary", "tenants"}
    assert path.stat().st_mode & 0o777 == 0o644  # a report others may read, not tempfile's 0600


class Unserialisable:
    """Something json cannot encode, placed after a large valid part so the writer has already written
    a good deal of the file when it fails."""

    def __repr__(self) -> str:
        return "Unserialisable()"


def half_broken_run() -> RunResult:
    """A run whose last tenant cannot be serialised: audit.json is streamed tenant by tenant, so a good
    deal of the file is written when it fails."""
    run = sample_run()
    bad = replace(run.tenants[0], tags=(Unserialisable(),))  # type: ignore[arg-type]
    return replace(run, tenants=(*run.tenants * 20, bad))


def test_a_crash_mid_write_leaves_the_previous_report_intact_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "audit.json"
    write_json(sample_run(), target)
    before = target.read_bytes()

    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(half_broken_run(), target)

    assert target.read_bytes() == before
    assert read_run(target) == sample_run()
    assert [p.name for p in tmp_path.iterdir()] == ["audit.json"]


def test_a_crash_on_the_first_write_leaves_no_file_at_all(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_json(half_broken_run(), tmp_path / "audit.json")
    assert list(tmp_path.iterdir()) == []


def test_write_reports_writes_every_available_format_by_default(tmp_path: Path) -> None:
    out = tmp_path / "nightly" / "2025-03-01"  # created, parents too
    written = write_reports(sample_run(), out)
    assert written == [out / "audit.json", out / "audit.html", out / "audit.xlsx"]
    assert read_run(written[0]) == sample_run()
    # the writability probe and the atomic writes' temporary files left nothing behind
    assert sorted(p.name for p in out.iterdir()) == ["audit.html", "audit.json", "audit.xlsx"]


def test_write_reports_overwrites_the_previous_run(tmp_path: Path) -> None:
    write_reports(sample_run(name="Old name"), tmp_path, ["json"])
    write_reports(sample_run(name="New name"), tmp_path, ["json"])
    assert read_run(tmp_path / "audit.json").tenants[0].name == "New name"


# --- formats ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (None, tuple(FORMATS)),
        ([], tuple(FORMATS)),
        (["json"], ("json",)),
        (["JSON, json", " json "], ("json",)),
    ],
)
def test_parse_formats(values: list[str] | None, expected: tuple[str, ...]) -> None:
    assert parse_formats(values) == expected


@pytest.mark.parametrize("values", [["pdf"], ["json,docx"], ["PDF"], ["json", "html,csv"]])
def test_unknown_formats_are_a_usage_error_listing_the_available_ones(values: list[str]) -> None:
    with pytest.raises(UnknownFormatError) as caught:
        parse_formats(values)
    assert caught.value.exit_code == ExitCode.USAGE
    message = str(caught.value)
    assert "unknown report format" in message
    assert "json" in message.split("Use one or more of:")[1]
    assert "\n" not in message


def test_an_unknown_format_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(UnknownFormatError):
        write_reports(sample_run(), out, ["json", "pdf"])
    assert not out.exists()


# --- output directory -------------------------------------------------------------------------------------


def test_an_out_path_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "reports"
    blocker.write_text("not a directory")
    with pytest.raises(OutputDirectoryError, match="exists and is not a directory") as caught:
        prepare_out_dir(blocker)
    assert caught.value.exit_code == ExitCode.USAGE
    assert "--out" in str(caught.value)


def test_an_out_path_below_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirectoryError, match="cannot create the directory"):
        prepare_out_dir(tmp_path / "file" / "sub")


def test_a_write_failure_becomes_a_report_error_naming_the_file(tmp_path: Path) -> None:
    # A directory where audit.json should go: os.replace cannot put a file there.
    (tmp_path / "audit.json").mkdir()
    with pytest.raises(OutputDirectoryError) as caught:
        write_reports(sample_run(), tmp_path, ["json"])
    assert "audit.json" in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["audit.json"]  # no temp file left behind


# --- reading ----------------------------------------------------------------------------------------------


def _write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_read_run_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="file not found") as caught:
        read_run(tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE


def test_read_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="is a directory"):
        read_run(tmp_path)


def test_read_run_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "audit.json", '{\n  "schema_version": 1,\n  "run": \n')
    with pytest.raises(RunFileError, match=r"audit\.json:\d+:\d+: not valid JSON"):
        read_run(path)


def test_read_run_truncated_file(tmp_path: Path) -> None:
    good = write_json(sample_run(), tmp_path / "audit.json").read_text(encoding="utf-8")
    path = _write(tmp_path / "cut.json", good[: len(good) // 2])
    with pytest.raises(RunFileError, match="not valid JSON"):
        read_run(path)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_read_run_wrong_schema_version(tmp_path: Path, version: object) -> None:
    data = sample_run().to_dict()
    data["schema_version"] = version
    with pytest.raises(RunFileError, match="schema_version") as caught:
        read_run(_write(tmp_path / "audit.json", data))
    assert f"schema_version {SCHEMA_VERSION}" in str(caught.value)


@pytest.mark.parametrize("document", [[], "text", {"run": {}}])
def test_read_run_not_an_audit_document(tmp_path: Path, document: object) -> None:
    with pytest.raises(RunFileError, match=r"not an audit\.json document"):
        read_run(_write(tmp_path / "audit.json", json.dumps(document)))


def test_read_run_missing_required_field(tmp_path: Path) -> None:
    data = sample_run().to_dict()
    del data["run"]
    with pytest.raises(RunFileError, match="missing 'run'"):
        read_run(_write(tmp_path / "audit.json", data))


def test_read_run_bad_value(tmp_path: Path) -> None:
    data = sample_run().to_dict()
    data["tenants"][0]["status"] = "mostly_fine"
    with pytest.raises(RunFileError, match=r"not a valid audit\.json"):
        read_run(_write(tmp_path / "audit.json", data))
