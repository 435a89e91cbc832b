"""Issue 12 ("Hardening"), items 3 to 15: each test reproduces what a hostile or clumsy user could do to
the old code (configs, output folders, history databases, hand-edited audit.json, shard parts) and checks
the behaviour that replaced it. Items 1 and 2 (endpoint hosts, token hosts) are tested elsewhere."""

from __future__ import annotations

import ast
import errno
import hashlib
import io
import json
import os
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from auditor.app import AuditOptions, audit, exit_code_meaning
from auditor.cli.main import app as cli_app
from auditor.config import AuditConfig, TenantConfig, load_config
from auditor.constants import ExitCode
from auditor.errors import ConfigError, ErrorCode, TenantError
from auditor.history import HistoryError, HistoryLockedError, HistoryStore, open_history
from auditor.history.lock import lock_path
from auditor.model import Billing, Finding, FindingCode, RunResult, Severity, Status, TenantResult
from auditor.output import LineProgress, logging_to_stderr, print_summary
from auditor.reporting import RunFileError, write_reports
from auditor.reporting.atomic import atomic_write_text
from auditor.reporting.json_report import read_run, write_json
from auditor.shard import PART_MANIFEST_FILENAME
from tests.history import builders as b
from tests.history.builders import immutable
from tests.unit.test_shard import all_parts, make_config, tenant_ids, write_part

ROOT = Path(__file__).resolve().parents[2]
CLIENT = "00000000-0000-0000-0000-0000000000c1"
T1 = "11111111-1111-1111-1111-111111111111"

runner = CliRunner()


def invoke(*args: str | Path) -> Result:
    return runner.invoke(cli_app, [str(a) for a in args])


def assert_clean_failure(result: Result, code: int = 2) -> str:
    """The command failed with ``code``, one ``error:`` line and no traceback; returns that line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def config_text(auth_extra: str = "", billing: str = "price_per_mailbox = 2.5", extra: str = "") -> str:
    return (
        f'[billing]\n{billing}\ncurrency = "GBP"\n\n'
        f'[auth]\nclient_id = "{CLIENT}"\nclient_secret_env = "AUDITOR_TEST_SECRET"\n{auth_extra}\n\n'
        f"{extra}\n"
        f'[[tenants]]\nname = "Contoso"\ntenant_id = "{T1}"\n'
    )


def config_error(tmp_path: Path, text: str | bytes) -> ConfigError:
    path = tmp_path / "fleet.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# --- 9: prices bounded at config check; numbers in audit.json validated on reading --------------------------


@pytest.mark.parametrize(
    "value", ["1e25", "3e24", "10000.01", "2.12345", "1e-05", "inf", "nan", "-1", '"2.50"', "true"]
)
def test_a_price_that_is_not_a_plain_bounded_decimal_is_refused(tmp_path: Path, value: str) -> None:
    error = config_error(tmp_path, config_text(billing=f"price_per_mailbox = {value}"))
    assert error.key == "billing.price_per_mailbox"
    assert "price" in str(error) and "Fix:" in str(error)


@pytest.mark.parametrize("value", ["0", "2.5", "2.50", "0.0125", "9999.99", "3"])
def test_plain_prices_are_accepted(tmp_path: Path, value: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(config_text(billing=f"price_per_mailbox = {value}"), encoding="utf-8")
    assert load_config(path).billing.price_per_mailbox == float(value)


def test_a_tenant_price_is_bounded_too(tmp_path: Path) -> None:
    text = config_text() + "price_per_mailbox = 1e25\n"
    error = config_error(tmp_path, text)
    assert error.key == "tenants[0].price_per_mailbox"


def _saved_run(tmp_path: Path) -> Path:
    run = b.run(b.T0, b.tenant(b.CONTOSO, Status.NON_COMPLIANT), b.tenant(b.FABRIKAM, Status.COMPLIANT))
    return write_json(run, tmp_path / "audit.json")


def _edit_first_tenant_billing(path: Path, key: str, raw: str) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tenants"][0]["billing"][key] = "@@VALUE@@"
    path.write_text(json.dumps(data).replace('"@@VALUE@@"', raw), encoding="utf-8")


@pytest.mark.parametrize(
    ("key", "raw", "words"),
    [
        ("monthly_cost", "1e308", "monthly_cost"),
        ("monthly_cost", "Infinity", "not a finite number"),
        ("monthly_cost", "NaN", "not a finite number"),
        ("monthly_cost", "-5.0", "monthly_cost"),
        ("billed_shared_mailboxes", "9" * 5000, "digits"),
        ("billed_shared_mailboxes", "-3", "billed_shared_mailboxes"),
        ("billed_shared_mailboxes", "2.5", "billed_shared_mailboxes"),
        ("price_per_mailbox", "1e25", "price_per_mailbox"),
    ],
)
def test_a_hand_edited_number_in_audit_json_is_one_clear_error(
    tmp_path: Path, key: str, raw: str, words: str
) -> None:
    path = _saved_run(tmp_path)
    _edit_first_tenant_billing(path, key, raw)
    with pytest.raises(RunFileError) as info:
        read_run(path)
    assert str(path) in str(info.value) and words in str(info.value)
    result = invoke("report", path, "--out", tmp_path / "out")
    line = assert_clean_failure(result)
    assert words in line
    assert not (tmp_path / "out" / "audit.html").exists()


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d.update(schema_version="1"), "schema_version"),
        (lambda d: d.update(schema_version=True), "schema_version"),
        (lambda d: d.update(schema_version=1.0), "schema_version"),
        (lambda d: d.update(tenants={"a": 1}), "tenants must be a list"),
        (lambda d: d["tenants"][0]["mailboxes"].update(shared=-1), "shared"),
        (lambda d: d["tenants"].append("nonsense"), "tenants[2]"),
    ],
)
def test_audit_json_structure_is_validated(tmp_path: Path, edit: object, words: str) -> None:
    path = _saved_run(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RunFileError) as info:
        read_run(path)
    assert words in str(info.value)


def test_a_valid_audit_json_still_reads_back(tmp_path: Path) -> None:
    path = _saved_run(tmp_path)
    run = read_run(path)
    assert run.tenants[0].billing.monthly_cost == 5.0


# --- 10: ca_bundle and certificate_path checked at config check -------------------------------------------


PEM_CERT_LINES = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_a_missing_ca_bundle_is_refused_naming_the_key(tmp_path: Path) -> None:
    error = config_error(tmp_path, config_text('ca_bundle = "nowhere.pem"'))
    assert error.key == "auth.ca_bundle" and "does not exist" in str(error)


def test_a_ca_bundle_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca").mkdir()
    error = config_error(tmp_path, config_text('ca_bundle = "ca"'))
    assert error.key == "auth.ca_bundle" and "not a regular file" in str(error)


def test_a_garbage_ca_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("this is not a certificate\n")
    error = config_error(tmp_path, config_text('ca_bundle = "ca.pem"'))
    assert error.key == "auth.ca_bundle" and "PEM" in str(error)


def test_a_real_ca_bundle_is_accepted(tmp_path: Path) -> None:
    from auditor.simulator.tls import make_server_tls  # a real CA certificate, made for the test

    tls = make_server_tls(tmp_path / "tls")
    path = tmp_path / "fleet.toml"
    path.write_text(config_text(f'ca_bundle = "{tls.ca_file}"'), encoding="utf-8")
    assert load_config(path).tenants[0].auth.ca_bundle == tls.ca_file.resolve()


def test_a_certificate_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    (tmp_path / "cert").mkdir()
    text = config_text().replace('client_secret_env = "AUDITOR_TEST_SECRET"', 'certificate_path = "cert"')
    error = config_error(tmp_path, text)
    assert error.key == "auth.certificate_path" and "not a regular file" in str(error)
    assert "does not exist" not in str(error)


def test_a_huge_certificate_path_is_not_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    with big.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: costs no disk, would cost 64 MB of memory if read
    text = config_text().replace('client_secret_env = "AUDITOR_TEST_SECRET"', 'certificate_path = "big.pem"')
    error = config_error(tmp_path, text)
    assert error.key == "auth.certificate_path" and "too large" in str(error)


def test_a_certificate_path_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("hello\n")
    text = config_text().replace('client_secret_env = "AUDITOR_TEST_SECRET"', 'certificate_path = "c.pem"')
    error = config_error(tmp_path, text)
    assert error.key == "auth.certificate_path" and "PEM" in str(error)


# --- 11: a config saved with a UTF-8 byte-order mark -------------------------------------------------------


def test_a_config_with_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_bytes(b"\xef\xbb\xbf" + config_text().encode("utf-8"))
    assert load_config(path).tenants[0].name == "Contoso"


# --- 12: `auditor report RUN --history H` where the run is not in H ---------------------------------------


def test_report_with_a_history_that_lacks_the_run_says_so(tmp_path: Path) -> None:
    other = b.run(b.T0, b.tenant(b.CONTOSO, Status.COMPLIANT))
    b.record_all(tmp_path / "history.sqlite", other).close()
    saved = _saved_run(tmp_path)
    run_id = read_run(saved).run_id
    result = invoke("report", saved, "--out", tmp_path / "out", "--history", tmp_path / "history.sqlite")
    line = assert_clean_failure(result)
    assert run_id in line and "not in the history" in line
    assert "tenant's settings" not in line and "config file" not in line
    assert "--history" in line


# --- 14: report files get a fixed mode, even when replacing a symlink --------------------------------------


def test_a_report_replacing_a_symlink_gets_the_fixed_mode(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.html"
    elsewhere.write_text("someone else's file")
    os.chmod(elsewhere, 0o666)  # noqa: S103 - the hazard under test
    target = tmp_path / "audit.html"
    target.symlink_to(elsewhere)
    atomic_write_text(target, "<html></html>")
    assert not target.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert elsewhere.read_text() == "someone else's file" and stat.S_IMODE(elsewhere.stat().st_mode) == 0o666


def test_a_report_replacing_a_world_writable_file_gets_the_fixed_mode(tmp_path: Path) -> None:
    target = tmp_path / "audit.json"
    target.write_text("{}")
    os.chmod(target, 0o666)  # noqa: S103 - the hazard under test
    atomic_write_text(target, "{}\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_reports_are_0640_when_the_config_asks(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(config_text(extra='[reports]\nfile_mode = "0640"\n'), encoding="utf-8")
    config = load_config(path)
    assert config.reports.file_mode == 0o640
    run = b.run(b.T0, b.tenant(b.CONTOSO, Status.COMPLIANT))
    written = write_reports(run, tmp_path / "out", ["json"], file_mode=config.reports.file_mode)
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [0o640]


@pytest.mark.parametrize("value", ['"0666"', '"0777"', "420", '"rw"'])
def test_an_unsafe_report_file_mode_is_refused(tmp_path: Path, value: str) -> None:
    error = config_error(tmp_path, config_text(extra=f"[reports]\nfile_mode = {value}\n"))
    assert error.key == "reports.file_mode"


# --- 15: auditor.app and auditor.shard do not import each other --------------------------------------------


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_shard_does_not_import_app() -> None:
    # Anywhere in the module, function-level imports included: the dependency points app -> shard only.
    assert "auditor.app" not in _imported_modules(ROOT / "auditor" / "shard.py")
    assert "auditor.shard" in _imported_modules(ROOT / "auditor" / "app.py")


# --- 3: merged results cannot be forged --------------------------------------------------------------------


def _sharded(tmp_path: Path, count: int = 2, tenants: int = 8) -> tuple[AuditConfig, list[Path]]:
    config = make_config(tmp_path, tenant_ids(tenants))
    dirs = [write_part(tmp_path / f"shard-{i}", p) for i, p in enumerate(all_parts(config, count))]
    return config, dirs


def _forge_compliant_at_zero(directory: Path) -> str:
    """What a forger does to a part: every tenant compliant, nothing billed, at a price of 0."""
    path = directory / "audit.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for tenant in data["tenants"]:
        tenant["status"] = "compliant"
        tenant["findings"] = []
        tenant["billing"].update(billed_shared_mailboxes=0, price_per_mailbox=0.0, monthly_cost=0.0)
    text = json.dumps(data, indent=2)
    path.write_text(text, encoding="utf-8")
    return text


def _merge_cli(dirs: list[Path], out: Path, *extra: str | Path) -> Result:
    return invoke("merge", *dirs, "--out", out, "--format", "json", *extra)


def test_a_part_whose_audit_json_was_edited_is_refused(tmp_path: Path) -> None:
    _, dirs = _sharded(tmp_path)
    _forge_compliant_at_zero(dirs[1])
    result = _merge_cli(dirs, tmp_path / "merged")
    line = assert_clean_failure(result)
    assert str(dirs[1]) in line and "SHA-256" in line and "audit.json" in line
    assert not (tmp_path / "merged" / "audit.json").exists()


def test_a_forged_part_with_a_recomputed_digest_is_caught_by_the_config_price(tmp_path: Path) -> None:
    config, dirs = _sharded(tmp_path)
    text = _forge_compliant_at_zero(dirs[0])
    manifest_path = dirs[0] / PART_MANIFEST_FILENAME
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["audit.json"] = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    result = _merge_cli(dirs, tmp_path / "merged", "--config", config.path)
    line = assert_clean_failure(result)
    assert str(dirs[0]) in line and "price" in line and "2.5" in line
    assert not (tmp_path / "merged" / "audit.json").exists()


def test_a_part_audited_in_another_currency_is_refused(tmp_path: Path) -> None:
    _, dirs = _sharded(tmp_path)
    other = make_config(tmp_path, tenant_ids(8), name="usd.toml", extra="")
    other.path.write_text(other.path.read_text().replace("[billing]\n", '[billing]\ncurrency = "USD"\n'))
    result = _merge_cli(dirs, tmp_path / "merged", "--config", other.path)
    line = assert_clean_failure(result)
    assert "GBP" in line and "USD" in line


def test_a_part_whose_journal_was_edited_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(8))
    parts = all_parts(config, 2)
    dirs = [
        write_part(tmp_path / f"shard-{i}", p, journal='{"outcome": "created"}\n')
        for i, p in enumerate(parts)
    ]
    (dirs[0] / "remediation.jsonl").write_text('{"outcome": "created"}\n{"outcome": "forged"}\n')
    line = assert_clean_failure(_merge_cli(dirs, tmp_path / "merged"))
    assert str(dirs[0]) in line and "remediation.jsonl" in line


def test_a_journal_added_to_a_part_afterwards_is_refused(tmp_path: Path) -> None:
    _, dirs = _sharded(tmp_path)
    (dirs[1] / "remediation.jsonl").write_text('{"outcome": "created"}\n')
    line = assert_clean_failure(_merge_cli(dirs, tmp_path / "merged"))
    assert str(dirs[1]) in line and "remediation.jsonl" in line


def test_an_untouched_sharded_part_still_merges(tmp_path: Path) -> None:
    config, dirs = _sharded(tmp_path)
    result = _merge_cli(dirs, tmp_path / "merged", "--config", config.path)
    assert result.exit_code in (0, 1), result.output
    assert (tmp_path / "merged" / "audit.json").exists()


# --- 7: reports that cannot be written after the audit -----------------------------------------------------


class _Fake:
    """A tenant auditor that answers at once with a fixed verdict (the audit itself is not under test)."""

    async def __call__(self, tenant: TenantConfig) -> TenantResult:
        return TenantResult(
            name=tenant.name,
            tenant_id=tenant.tenant_id,
            status=Status.NON_COMPLIANT,
            billing=Billing(2, tenant.price_per_mailbox, 2 * tenant.price_per_mailbox, "GBP"),
        )


def _audit(config: Path, out: Path) -> tuple[int, str]:
    stdout = io.StringIO()
    outcome = audit(
        AuditOptions(config=config, out_dir=out), auditor_factory=lambda _c: _Fake(), stdout=stdout
    )
    return outcome.exit_code, stdout.getvalue()


def _fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(config_text() + '\n[history]\npath = "history.sqlite"\n', encoding="utf-8")
    return path


def test_a_directory_in_the_way_of_a_report_exits_4_and_keeps_the_old_set(tmp_path: Path) -> None:
    config, out = _fleet(tmp_path), tmp_path / "out"
    assert _audit(config, out)[0] == ExitCode.GAPS
    previous = {name: (out / name).read_bytes() for name in ("audit.json", "audit.xlsx")}
    (out / "audit.html").unlink()
    (out / "audit.html").mkdir()  # e.g. a web server's folder created by mistake
    code, text = _audit(config, out)
    assert code == 4
    assert "Contoso" in text and "non_compliant" in text  # the summary is printed
    assert "could not be written" in text and "Exit code 4:" in text
    assert {name: (out / name).read_bytes() for name in previous} == previous  # the old set, complete
    assert (out / "audit.html").is_dir()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind
    store = HistoryStore.open(tmp_path / "history.sqlite", create=False)
    assert store.run_count() == (2, 0)  # both runs audited and recorded
    store.close()


def test_a_full_disk_while_writing_a_report_exits_4_and_keeps_the_old_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, out = _fleet(tmp_path), tmp_path / "out"
    assert _audit(config, out)[0] == ExitCode.GAPS
    previous = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    import auditor.reporting.excel as excel

    def disk_full(*args: object, **kwargs: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(excel, "render_excel", disk_full)
    code, text = _audit(config, out)
    assert code == 4 and "No space left on device" in text and "Contoso" in text
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == previous


def test_a_merge_whose_reports_cannot_be_written_exits_4_and_is_recorded(tmp_path: Path) -> None:
    config, dirs = _sharded(tmp_path)
    (tmp_path / "merged" / "audit.json").mkdir(parents=True)
    result = _merge_cli(dirs, tmp_path / "merged", "--config", config.path)
    assert result.exit_code == 4, result.output
    assert "could not be written" in result.stdout and "Tenant 0000" in result.stdout
    history = HistoryStore.open(tmp_path / "history.sqlite", create=False)
    assert history.run_count() == (1, 0)
    history.close()


def test_exit_code_4_is_documented() -> None:
    assert "| 4 |" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "4" in exit_code_meaning(4) or "could not be written" in exit_code_meaning(4)


# --- 8: a merge run twice ----------------------------------------------------------------------------------


def test_a_merge_run_twice_exits_non_zero_and_records_nothing_false(tmp_path: Path) -> None:
    config, dirs = _sharded(tmp_path)
    first = _merge_cli(dirs, tmp_path / "merged", "--config", config.path)
    assert first.exit_code in (0, 1), first.output
    again = _merge_cli(dirs, tmp_path / "merged-again", "--config", config.path)
    line = assert_clean_failure(again)
    assert "already recorded" in line
    history = HistoryStore.open(tmp_path / "history.sqlite", create=False)
    assert history.run_count() == (1, 0)  # one run, and no false "interrupted: never recorded" row
    history.close()


def test_a_failed_history_write_leaves_no_false_interrupted_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, dirs = _sharded(tmp_path)

    def broken(*args: object, **kwargs: object) -> int:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(HistoryStore, "record", broken)
    result = _merge_cli(dirs, tmp_path / "merged", "--config", config.path)
    assert result.exit_code in (0, 1), result.output
    assert (tmp_path / "merged" / "audit.json").exists()  # the reports are written all the same
    monkeypatch.undo()
    history = HistoryStore.open(tmp_path / "history.sqlite", create=False)
    assert history.run_count() == (0, 0)
    history.close()


# --- 4: unknown values in the history are read tolerantly --------------------------------------------------


def _history_fleet(tmp_path: Path, timeout: float = 0.2) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        config_text() + f'\n[history]\npath = "history.sqlite"\nlock_timeout_seconds = {timeout}\n',
        encoding="utf-8",
    )
    return path


def _newer_version_wrote(database: Path) -> None:
    """What a newer auditor leaves behind: a status and a mode this version does not know."""
    with sqlite3.connect(database) as db:
        db.execute("UPDATE tenant_results SET status = 'quarantined'")
        db.execute("UPDATE runs SET mode = 'audit-lite'")
    db.close()


def test_unknown_history_values_never_cost_a_run_its_reports(tmp_path: Path) -> None:
    config, out = _history_fleet(tmp_path), tmp_path / "out"
    assert _audit(config, out)[0] == ExitCode.GAPS
    _newer_version_wrote(tmp_path / "history.sqlite")
    code, text = _audit(config, out)
    assert code == ExitCode.GAPS, text  # not an internal error
    assert "Exit code 1:" in text
    assert read_run(out / "audit.json").tenants[0].status is Status.NON_COMPLIANT
    assert (out / "audit.html").exists() and (out / "audit.xlsx").exists()


def test_history_and_report_read_unknown_values_as_unknown_and_warn_once(tmp_path: Path) -> None:
    config, out = _history_fleet(tmp_path), tmp_path / "out"
    _audit(config, out)
    _audit(config, out)
    _newer_version_wrote(tmp_path / "history.sqlite")
    listing = invoke("history", "--config", config)
    assert listing.exit_code == 0, listing.output
    assert "unknown" in listing.stdout
    warnings = [line for line in listing.stderr.splitlines() if "quarantined" in line]
    assert len(warnings) == 1, listing.stderr  # warned once, however many rows hold it
    timeline = invoke("history", "--config", config, "--tenant", "Contoso")
    assert timeline.exit_code == 0, timeline.output
    assert "unknown" in timeline.stdout
    report = invoke(
        "report", out / "audit.json", "--out", tmp_path / "again", "--history", tmp_path / "history.sqlite"
    )
    assert report.exit_code == 0, report.output
    assert (tmp_path / "again" / "audit.html").exists()


# --- 5: history error messages name the real cause; read-only commands work on a read-only history --------


def _corrupt(database: Path) -> None:
    """Damage the pages after the header (as a failing disk or a half-copied file does)."""
    size = database.stat().st_size
    with database.open("r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xde\xad\xbe\xef" * ((size - 4096) // 4))


def test_a_damaged_history_says_it_is_damaged(tmp_path: Path) -> None:
    config, out = _history_fleet(tmp_path), tmp_path / "out"
    _audit(config, out)
    _corrupt(tmp_path / "history.sqlite")
    with pytest.raises(HistoryError) as info:
        _audit(config, out)
    message = str(info.value)
    assert "damaged" in message and "free space" not in message


def test_a_read_only_history_is_readable_and_says_read_only_to_a_run(tmp_path: Path) -> None:
    config, out = _history_fleet(tmp_path), tmp_path / "out"
    _audit(config, out)
    database = tmp_path / "history.sqlite"
    with immutable(database):
        listing = invoke("history", "--config", config)
        assert listing.exit_code == 0, listing.output
        assert "1 run" in listing.stdout
        report = invoke("report", out / "audit.json", "--out", tmp_path / "again", "--history", database)
        assert report.exit_code == 0, report.output
        with pytest.raises(HistoryError) as info:
            _audit(config, tmp_path / "out2")
        message = str(info.value)
        assert "read-only" in message and "damaged" not in message
        assert not (tmp_path / "out2" / "audit.json").exists()  # refused before any tenant was audited


def test_a_history_in_a_read_only_directory_is_readable(tmp_path: Path) -> None:
    # A WAL database needs a -shm file beside it, which a read-only directory cannot hold.
    config, out = _history_fleet(tmp_path), tmp_path / "out"
    _audit(config, out)
    _audit(config, out)
    (tmp_path / "out2").mkdir()
    with immutable(tmp_path):
        listing = invoke("history", "--config", config)
        assert listing.exit_code == 0, listing.output
        assert "2 runs" in listing.stdout
        timeline = invoke("history", "--config", config, "--tenant", "Contoso")
        assert timeline.exit_code == 0, timeline.output
        report = invoke(
            "report", out / "audit.json", "--out", tmp_path / "out2", "--history", tmp_path / "history.sqlite"
        )
        assert report.exit_code == 0, report.output


@pytest.mark.parametrize(
    ("make", "words"),
    [("garbage", "not an SQLite database"), ("corrupt", "damaged"), ("not ours", "not an auditor history")],
)
def test_history_failures_are_explained_by_their_cause(tmp_path: Path, make: str, words: str) -> None:
    config = load_config(_history_fleet(tmp_path))
    database = tmp_path / "history.sqlite"
    b.record_all(database, b.run(b.T0, b.tenant(b.CONTOSO, Status.COMPLIANT))).close()
    if make == "garbage":
        database.write_bytes(b"this is a text file, not a database\n" * 200)
    elif make == "corrupt":
        _corrupt(database)
    else:
        database.unlink()
        with sqlite3.connect(database) as db:
            db.execute("CREATE TABLE photos (id INTEGER)")
        db.close()
    with pytest.raises(HistoryError) as info:
        open_history(config).close()
    text = str(info.value)
    assert words in text and "free space" not in text, text
    assert str(database) in text


# --- 6: the run lock cannot be deleted from under a run ----------------------------------------------------


def test_deleting_the_lock_file_does_not_let_a_second_run_in(tmp_path: Path) -> None:
    config = load_config(_history_fleet(tmp_path, timeout=0.2))
    with open_history(config):
        lock_file = lock_path(tmp_path / "history.sqlite")
        if lock_file.exists():
            lock_file.unlink()  # what a clumsy admin (or a cleanup job) does
        with pytest.raises(HistoryLockedError):
            open_history(config).close()
    open_history(config).close()  # released at the end of the first run


# --- 13: control characters from tenant data neutralised; free text capped ---------------------------------

HOSTILE = "Evil\x1b[2J\x1b]0;pwned\x07 \u202etxt.exe\x00 \u2066x\u2069 end"
RAW_CONTROLS = ("\x1b", "\x00", "\x07", "\u202e", "\u2066", "\u2069")


def _hostile_run() -> RunResult:
    result = b.tenant(b.CONTOSO, Status.NON_COMPLIANT, name="Contoso " + HOSTILE)
    result = replace(
        result,
        findings=(Finding(FindingCode.ROLE_MISSING, Severity.HIGH, "message " + HOSTILE),),
        error=None,
    )
    errored = b.tenant(b.FABRIKAM, Status.ERROR, error=TenantError(ErrorCode.GRAPH_ERROR, HOSTILE, HOSTILE))
    return b.run(b.T0, result, errored)


def test_control_characters_never_reach_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    run = _hostile_run()
    stream = io.StringIO()
    print_summary(run, stream)
    with logging_to_stderr():
        progress = LineProgress()
        progress.start(2)
        for result in run.tenants:
            progress.tenant_done(result, 1.0)
    for text in (stream.getvalue(), capsys.readouterr().err):
        assert not [c for c in RAW_CONTROLS if c in text], repr(text)
        assert "[U+001B]" in text and "[U+202E]" in text


def test_control_characters_are_marked_visibly_in_the_reports(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    written = write_reports(_hostile_run(), tmp_path, ["html", "xlsx"])
    html = written[0].read_text(encoding="utf-8")
    assert not [c for c in RAW_CONTROLS if c in html]
    assert "[U+202E]" in html and "[U+001B]" in html
    cells = [
        str(cell.value)
        for sheet in load_workbook(written[1]).worksheets
        for row in sheet.iter_rows()
        for cell in row
        if isinstance(cell.value, str)
    ]
    assert not [c for c in RAW_CONTROLS if any(c in v for v in cells)]
    assert any("[U+202E]" in v for v in cells)


def test_free_text_is_capped_at_the_documented_length_in_reports(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    from auditor.reporting.text import MAX_TEXT_LENGTH

    huge = "A" * 50_000
    result = replace(
        b.tenant(b.CONTOSO, Status.NON_COMPLIANT),
        findings=(Finding(FindingCode.ROLE_MISSING, Severity.HIGH, huge),),
    )
    written = write_reports(b.run(b.T0, result), tmp_path, ["html", "xlsx"])
    html = written[0].read_text(encoding="utf-8")
    assert huge not in html and "A" * MAX_TEXT_LENGTH in html and "characters cut" in html
    longest = max(
        len(cell.value)
        for sheet in load_workbook(written[1]).worksheets
        for row in sheet.iter_rows()
        for cell in row
        if isinstance(cell.value, str)
    )
    assert MAX_TEXT_LENGTH <= longest < MAX_TEXT_LENGTH + 100
    assert f"{MAX_TEXT_LENGTH:,}" in (ROOT / "README.md").read_text(encoding="utf-8")  # documented
