"""The history database: schema and migrations, the record/read round trip, one transaction per run."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from auditor.errors import ErrorCode, TenantError, register_secret
from auditor.history import Change
from auditor.history.lock import HistoryError
from auditor.history.store import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    HistoryStore,
    JournalLine,
    Migration,
    TimelineEntry,
    history_failure,
)
from auditor.model import FindingCode, RemediationAction, RunMode, Status
from tests.history.builders import CONTOSO, DAY, FABRIKAM, NORTHWIND, T0, immutable, record_all, run, tenant

TABLES = {"runs", "tenant_results", "findings", "mailbox_sets", "remediation_journal"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite"


@pytest.fixture
def store(db: Path) -> Iterator[HistoryStore]:
    with HistoryStore.open(db) as opened:
        yield opened


def raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


# --- schema and migrations --------------------------------------------------------------------------------


def test_a_new_database_has_the_latest_schema_in_wal_mode(store: HistoryStore, db: Path) -> None:
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    with raw(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables >= TABLES


def test_an_older_database_is_migrated_in_place_and_keeps_its_runs(db: Path) -> None:
    # A database written by a version that knew only migration 1 ...
    with HistoryStore.open(db, migrations=MIGRATIONS[:1]) as old:
        old.record(run(T0, tenant(CONTOSO, Status.NON_COMPLIANT), run_id="old-1"))
        old.record(run(T0 + DAY, tenant(CONTOSO, Status.NON_COMPLIANT), run_id="old-2"))
    # ... opened by a version with a second migration (a new column, filled from existing data).
    applied: list[int] = []

    def add_column(conn: sqlite3.Connection) -> None:
        applied.append(2)
        Migration.sql(
            2,
            "status label",
            "ALTER TABLE tenant_results ADD COLUMN status_label TEXT",
            "UPDATE tenant_results SET status_label = upper(status)",
        ).apply(conn)

    newer = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "status label", add_column))
    with HistoryStore.open(db, migrations=newer) as store:
        assert store.schema_version == len(newer)
        assert [r.run_id for r in store.runs()] == ["old-2", "old-1"]
        assert store.insights("old-2").for_tenant(CONTOSO).open_gap.first_seen == T0  # type: ignore[union-attr]
    with raw(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(newer)
        assert {label for (label,) in conn.execute("SELECT status_label FROM tenant_results")} == {
            "NON_COMPLIANT"
        }
    # Opening again runs nothing.
    HistoryStore.open(db, migrations=newer).close()
    assert applied == [2]


def test_a_failing_migration_leaves_the_old_version_and_its_runs(db: Path) -> None:
    record_all(db, run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="kept")).close()

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE runs ADD COLUMN note TEXT")
        raise RuntimeError("bug in migration 2")

    with pytest.raises(RuntimeError, match="bug in migration 2"):
        HistoryStore.open(db, migrations=(*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken", broken)))
    with HistoryStore.open(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [r.run_id for r in store.runs()] == ["kept"]
    with raw(db) as conn:
        assert "note" not in {row[1] for row in conn.execute("PRAGMA table_info(runs)")}


def test_migrations_must_be_numbered_in_order(db: Path) -> None:
    with pytest.raises(ValueError, match=r"numbered 1\.\.n"):
        HistoryStore.open(db, migrations=(Migration.sql(2, "skips one"),))


def test_a_database_from_a_newer_version_is_refused(db: Path) -> None:
    HistoryStore.open(db).close()
    with raw(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer than this auditor understands") as caught:
        HistoryStore.open(db)
    assert caught.value.exit_code == 2
    assert caught.value.hint == "Upgrade uss-auditor, or point [history] path at another file."


@pytest.mark.parametrize(
    ("setup", "text"),
    [
        (lambda c: c.execute("CREATE TABLE invoices (id INTEGER)"), "not an auditor history"),
        (lambda c: c.execute("PRAGMA application_id = 42"), "not an auditor history"),
    ],
)
def test_someone_elses_database_is_refused(db: Path, setup: object, text: str) -> None:
    with raw(db) as conn:
        setup(conn)  # type: ignore[operator]
    with pytest.raises(HistoryError, match=text):
        HistoryStore.open(db)


def test_a_file_that_is_not_a_database_is_refused(db: Path) -> None:
    db.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(HistoryError, match="is not an SQLite database") as caught:
        HistoryStore.open(db)
    assert "move this file aside" in str(caught.value)


def test_open_without_create_needs_the_file(db: Path) -> None:
    with pytest.raises(HistoryError, match="no history database"):
        HistoryStore.open(db, create=False)
    assert not db.exists()


# --- record and read back ---------------------------------------------------------------------------------


def test_round_trip_keeps_verdicts_counts_costs_findings_mailboxes_and_journal(
    store: HistoryStore, db: Path
) -> None:
    first = run(
        T0,
        tenant(
            CONTOSO,
            Status.NON_COMPLIANT,
            shared=("m1", "m2", "m3"),
            findings=[FindingCode.ROLE_MISSING, FindingCode.SHARED_MAILBOX_LICENSED],
        ),
        tenant(FABRIKAM, Status.ERROR),
        tenant(NORTHWIND, Status.REMEDIATED, remediation=RemediationAction.CREATED),
        run_id="run-1",
        mode=RunMode.REMEDIATE,
    )
    journal: list[JournalLine] = [
        json.dumps(
            {
                "time": "2024-05-01T01:00:30+00:00",
                "tenant_id": NORTHWIND,
                "action": "create",
                "outcome": "created",
            }
        ),
        "",
        "not json at all",
        {
            "time": "2024-05-01T01:00:31+00:00",
            "tenant_id": NORTHWIND,
            "action": "verify",
            "outcome": "created",
        },
    ]
    store.record(first, journal)

    (listed,) = store.runs()
    assert listed.run_id == "run-1" and listed.complete and listed.started_at == T0
    assert listed.finished_at == first.finished_at and listed.tool_version == "0.1.0"
    totals = listed.totals
    assert totals is not None and totals.mode is RunMode.REMEDIATE and totals.tenants == 3
    summary = first.summary()
    assert dict(totals.by_status) == dict(summary.by_status)
    assert totals.billed_shared_mailboxes == summary.billed_shared_mailboxes == 5
    assert totals.estimated_monthly_cost == summary.estimated_monthly_cost == 12.5
    assert totals.tenants_with_unknown_cost == summary.tenants_with_unknown_cost == 1

    (contoso,) = store.timeline(CONTOSO)
    assert (contoso.status, contoso.billed_shared_mailboxes, contoso.monthly_cost, contoso.currency) == (
        Status.NON_COMPLIANT,
        3,
        7.5,
        "GBP",
    )
    assert contoso.finding_codes == ("ROLE_MISSING", "SHARED_MAILBOX_LICENSED")
    (fabrikam,) = store.timeline(FABRIKAM)
    assert fabrikam.status is Status.ERROR and fabrikam.error_code == "AUTH_FAILED"
    assert fabrikam.billed_shared_mailboxes is None and fabrikam.monthly_cost is None
    assert store.timeline(NORTHWIND)[0].remediation_action == "created"

    assert store.journal("run-1") == [
        {
            "time": "2024-05-01T01:00:30+00:00",
            "tenant_id": NORTHWIND,
            "action": "create",
            "outcome": "created",
        },
        {"unparsed": "not json at all"},
        {
            "time": "2024-05-01T01:00:31+00:00",
            "tenant_id": NORTHWIND,
            "action": "verify",
            "outcome": "created",
        },
    ]
    with raw(db) as conn:
        (stored,) = conn.execute(
            "SELECT m.mailboxes_json FROM tenant_results t JOIN mailbox_sets m ON m.id = t.shared_mailbox_set "
            "WHERE t.tenant_id = ?",
            (CONTOSO,),
        ).fetchone()
        # No addresses: ids and display names are all "new shared mailboxes" needs.
        assert json.loads(stored) == [["m1", "Mailbox m1"], ["m2", "Mailbox m2"], ["m3", "Mailbox m3"]]
        unknown = conn.execute(
            "SELECT shared_mailbox_set FROM tenant_results WHERE tenant_id = ?", (FABRIKAM,)
        )
        assert unknown.fetchone() == (None,)  # no census: no set, not an empty one
        summary_json = json.loads(conn.execute("SELECT summary_json FROM runs").fetchone()[0])
    assert summary_json == summary.to_dict()


def test_equal_mailbox_lists_are_stored_once(store: HistoryStore, db: Path) -> None:
    for day in range(5):
        store.record(
            run(
                T0 + day * DAY,
                tenant(CONTOSO, Status.NON_COMPLIANT),
                tenant(FABRIKAM, Status.COMPLIANT, shared=()),
            )
        )
    store.record(
        run(T0 + 5 * DAY, tenant(CONTOSO, Status.NON_COMPLIANT, shared=("m2", "m1", "m1")))
    )  # same set
    store.record(
        run(T0 + 6 * DAY, tenant(CONTOSO, Status.NON_COMPLIANT, shared=("m1", "m2", "m3")), run_id="new")
    )
    with raw(db) as conn:
        assert conn.execute("SELECT count(*) FROM mailbox_sets").fetchone()[0] == 3  # [m1 m2], [], [m1 m2 m3]
    contoso = store.insights("new").for_tenant(CONTOSO)
    assert contoso is not None and [m.id for m in contoso.new_shared_mailboxes] == ["m3"]


def test_tenants_are_found_by_id_or_latest_name(store: HistoryStore) -> None:
    store.record(run(T0, tenant(CONTOSO, Status.COMPLIANT, name="Contoso Ltd")))
    store.record(
        run(
            T0 + DAY,
            tenant(CONTOSO, Status.COMPLIANT, name="Contoso Healthcare"),
            tenant(FABRIKAM, Status.COMPLIANT),
        )
    )
    assert [(t.name, t.runs) for t in store.tenants()] == [("Contoso Healthcare", 2), ("Fabrikam", 1)]
    assert [t.tenant_id for t in store.find_tenants("contoso healthcare")] == [CONTOSO]
    assert [t.tenant_id for t in store.find_tenants(FABRIKAM.upper())] == [FABRIKAM]
    assert store.find_tenants("Contoso Ltd") == []


def test_a_run_is_recorded_once(store: HistoryStore) -> None:
    once = run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="same")
    store.record(once)
    with pytest.raises(HistoryError, match="already recorded"):
        store.record(once)
    assert len(store.runs()) == 1


def test_a_failure_mid_record_stores_nothing_of_that_run(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.record(run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="good"))
    placeholder = store.begin_run(T0 + DAY)
    calls = 0
    original = HistoryStore._insert_tenant

    def fail_on_second(self: HistoryStore, seq: int, position: int, result: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        original(self, seq, position, result)  # type: ignore[arg-type]

    monkeypatch.setattr(HistoryStore, "_insert_tenant", fail_on_second)
    with pytest.raises(sqlite3.OperationalError):
        store.record(
            run(
                T0 + DAY,
                tenant(CONTOSO, Status.NON_COMPLIANT),
                tenant(FABRIKAM, Status.COMPLIANT),
                run_id="bad",
            ),
            placeholder=placeholder,
        )
    monkeypatch.undo()
    assert [(r.run_id, r.complete) for r in store.runs()] == [(None, False), ("good", True)]
    assert [e.run_id for e in store.timeline(CONTOSO)] == ["good"]
    assert store.timeline(FABRIKAM) == []
    with pytest.raises(HistoryError, match="not in the history"):
        store.insights("bad")
    # and the store still works
    store.record(run(T0 + 2 * DAY, tenant(CONTOSO, Status.COMPLIANT), run_id="after"))
    assert store.insights("after").previous_run_id == "good"


def test_free_text_is_redacted_on_the_way_in(store: HistoryStore, db: Path) -> None:
    leaky = tenant(CONTOSO, Status.ERROR, error=TenantError(ErrorCode.AUTH_FAILED, "bad answer"))
    # Results are redacted when built; simulate a path that bypassed it.
    object.__setattr__(leaky.error, "message", "token rejected: client_secret=Sup3rS3cret!")
    store.record(run(T0, leaky), [json.dumps({"tenant_id": CONTOSO, "error": "password=hunter2 refused"})])
    dump = "\n".join(str(row) for table in TABLES for row in raw(db).execute(f"SELECT * FROM {table}"))  # noqa: S608
    assert "Sup3rS3cret!" not in dump and "hunter2" not in dump
    assert "[redacted]" in dump


def test_the_on_premises_mailbox_count_is_kept(store: HistoryStore, db: Path) -> None:
    # issue 10, case 4: a hybrid tenant's mailboxes hosted on-premises are a count of their own
    hybrid = tenant(CONTOSO, Status.COMPLIANT)
    assert hybrid.mailboxes is not None
    hybrid = replace(hybrid, mailboxes=replace(hybrid.mailboxes, on_premises=7))
    store.record(run(T0, hybrid, run_id="run-hybrid"), [])
    with raw(db) as conn:
        (counts,) = conn.execute(
            "SELECT mailbox_counts_json FROM tenant_results WHERE tenant_id = ?", (CONTOSO,)
        ).fetchone()
    assert json.loads(counts)["on_premises"] == 7


# --- what goes wrong, in words an administrator can act on -------------------------------------------------

MOVE_ASIDE = (
    "Move it aside (the next run starts a new history) and keep it for recovery (sqlite3 FILE .recover)."
)
NOT_A_DB = (
    "{path} is not an SQLite database ({detail}), so it cannot be the auditor's history",
    "Point [history] path at the history file, or move this file aside (the next run starts a new history).",
)
DAMAGED = ("the history database {path} is damaged ({detail})", MOVE_ASIDE)
READ_ONLY = (
    "the history database {path} is read-only for this user ({detail}), so this run could not be recorded",
    "Give the user running the auditor write access to the file and its directory (SQLite keeps -wal and -shm "
    "files beside it); `auditor history` and `auditor report --history` only read it.",
)
FULL = (
    "the disk holding the history database {path} is full ({detail})",
    "Free some space on that file system, then re-run.",
)
CANNOT_OPEN = (
    "cannot open the history database {path} ({detail})",
    "Check that its directory exists and that the user running the auditor may write there.",
)
IO_ERROR = (
    "the disk reported an I/O error on the history database {path} ({detail})",
    "Check the disk and the file system (SQLite needs a local disk, not a network share).",
)
LOCKED = (
    "the history database {path} is locked by another program ({detail})",
    "Close whatever has it open (an sqlite3 shell, a backup job), then re-run.",
)
OTHER = (
    "cannot use the history database {path} ({detail})",
    "If the file is damaged, move it aside (the next run starts a new history) and keep it for recovery with "
    "the sqlite3 tool.",
)


def sqlite_error(text: str, name: str | None = None) -> sqlite3.Error:
    """An error as SQLite raises it: its text, and (Python 3.11+) the SQLite error name."""
    error = sqlite3.OperationalError(text)
    if name is not None:
        error.sqlite_errorname = name
    return error


@pytest.mark.parametrize(
    ("name", "detail", "expected"),
    [
        ("SQLITE_NOTADB", "file is not a database", NOT_A_DB),
        ("SQLITE_NOTADB", "x", NOT_A_DB),  # the error name alone decides, whatever the text
        (None, "File is NOT A DATABASE", NOT_A_DB),
        ("SQLITE_CORRUPT", "database disk image is malformed", DAMAGED),
        ("SQLITE_CORRUPT_INDEX", "index is broken", DAMAGED),
        ("", "database disk image is MALFORMED", DAMAGED),
        ("SQLITE_READONLY", "attempt to write a readonly database", READ_ONLY),
        ("SQLITE_READONLY_DIRECTORY", "x", READ_ONLY),
        ("SQLITE_PERM", "access permission denied", READ_ONLY),
        ("SQLITE_AUTH", "not authorized", READ_ONLY),
        (None, "attempt to write a READONLY database", READ_ONLY),
        ("SQLITE_FULL", "database or disk is full", FULL),
        ("SQLITE_FULL", "x", FULL),
        (None, "database or DISK IS FULL", FULL),
        ("SQLITE_CANTOPEN", "unable to open database file", CANNOT_OPEN),
        ("SQLITE_CANTOPEN_ISDIR", "x", CANNOT_OPEN),
        (None, "UNABLE TO OPEN database file", CANNOT_OPEN),
        ("SQLITE_IOERR", "disk I/O error", IO_ERROR),
        ("SQLITE_IOERR_WRITE", "x", IO_ERROR),
        (None, "disk I/O ERROR", IO_ERROR),
        ("SQLITE_BUSY", "database is locked", LOCKED),
        ("SQLITE_BUSY_SNAPSHOT", "x", LOCKED),
        ("SQLITE_LOCKED", "database table is locked", LOCKED),
        ("SQLITE_LOCKED_SHAREDCACHE", "x", LOCKED),
        (None, "database is LOCKED", LOCKED),
        ("SQLITE_ERROR", "no such table: runs", OTHER),
        ("SQLITE_CONSTRAINT", "UNIQUE constraint failed", OTHER),
    ],
)
def test_a_history_failure_names_its_cause_and_remedy(
    db: Path, name: str | None, detail: str, expected: tuple[str, str]
) -> None:
    failure = history_failure(sqlite_error(detail, name), db)
    message, hint = expected
    assert (failure.message, failure.hint) == (message.format(path=db, detail=detail), hint)
    assert failure.exit_code == 2


def test_a_history_failure_without_text_names_the_error_kind(db: Path) -> None:
    failure = history_failure(sqlite3.DatabaseError(), db)
    assert failure.message == f"cannot use the history database {db} (DatabaseError)"


def test_a_history_that_cannot_be_created_says_where_and_why(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the history's directory should be", encoding="utf-8")
    path = blocker / "history.sqlite"
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open(path)
    assert caught.value.message == f"cannot open the history database {path} (File exists)"
    assert caught.value.hint == "Check that the directory exists and is writable, or set [history] path."
    missing = tmp_path / "nowhere" / "history.sqlite"
    with pytest.raises(HistoryError) as absent:
        HistoryStore.open(missing, create=False)
    assert absent.value.message == f"no history database at {missing}"
    assert absent.value.hint == "`auditor audit` creates it on its first run."
    assert not missing.parent.exists()  # a reader creates nothing


def test_a_history_path_that_is_a_directory_is_refused_as_unopenable(tmp_path: Path) -> None:
    folder = tmp_path / "history.sqlite"
    folder.mkdir()
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open(folder)
    assert caught.value.message == f"cannot open the history database {folder} (unable to open database file)"
    assert caught.value.hint == (
        "Check that its directory exists and that the user running the auditor may write there."
    )
    assert list(folder.iterdir()) == []


def test_a_write_waits_for_another_writer_only_as_long_as_the_busy_timeout(db: Path) -> None:
    HistoryStore.open(db).close()
    with raw(db) as other, HistoryStore.open(db, busy_timeout=0.2) as store:
        other.execute("BEGIN IMMEDIATE")  # e.g. an sqlite3 shell in the middle of a write
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            store.record(run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="blocked"))
        waited = time.monotonic() - started
        other.execute("ROLLBACK")
        assert 0.15 <= waited < 3.0  # SQLite's own default would wait 5 s
        store.record(run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="blocked"))
        assert store.has_run("blocked")


def test_a_new_history_is_created_with_its_directories_and_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "history.sqlite"
    HistoryStore.open(path).close()
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0o640 & 0o077  # no access for others


def test_a_history_in_a_read_only_directory_is_read_but_not_written(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    folder.mkdir()
    db = folder / "history.sqlite"
    record_all(db, run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="kept")).close()
    with immutable(folder):
        with HistoryStore.open(db, create=False) as reader:  # an immutable snapshot: no -shm file needed
            assert [r.run_id for r in reader.runs()] == ["kept"]
            assert reader.path == db and reader.schema_version == SCHEMA_VERSION
        with pytest.raises(HistoryError) as caught:
            HistoryStore.open(db)  # a run must write: it is told, not given a snapshot
        assert str(db) in caught.value.message


def test_a_run_whose_placeholder_is_gone_is_still_recorded(store: HistoryStore) -> None:
    placeholder = store.begin_run(T0)
    store.discard_placeholder(placeholder)
    store.record(run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="kept"), placeholder=placeholder)
    assert [(r.run_id, r.complete) for r in store.runs()] == [("kept", True)]
    assert [e.run_id for e in store.timeline(CONTOSO)] == ["kept"]


def test_a_migration_made_of_sql_keeps_its_number(db: Path) -> None:
    added = Migration.sql(len(MIGRATIONS) + 1, "a note per run", "ALTER TABLE runs ADD COLUMN note TEXT")
    assert (added.version, added.description) == (len(MIGRATIONS) + 1, "a note per run")
    with HistoryStore.open(db, migrations=(*MIGRATIONS, added)) as store:
        assert store.schema_version == len(MIGRATIONS) + 1
    with raw(db) as conn:
        assert "note" in {row[1] for row in conn.execute("PRAGMA table_info(runs)")}


def failing_once(error: sqlite3.Error) -> tuple[Migration, ...]:
    """The migrations, plus one that fails with ``error`` the first time it runs (a read-write connection)
    and does nothing after (the read-only retry, which then cannot write its version: SQLITE_READONLY)."""
    calls: list[int] = []

    def apply(connection: sqlite3.Connection) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise error

    return (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "fails once", apply))


@pytest.mark.parametrize(
    ("name", "text", "retried"),
    [
        ("SQLITE_READONLY", "x", True),
        ("SQLITE_READONLY_DIRECTORY", "x", True),
        ("SQLITE_CANTOPEN", "x", True),
        ("SQLITE_PERM", "x", True),
        (None, "attempt to write a READONLY database", True),
        (None, "UNABLE TO OPEN database file", True),
        ("SQLITE_BUSY", "database is locked", False),
        ("SQLITE_IOERR", "disk I/O error", False),
        ("SQLITE_AUTH", "x", False),
        (None, "no such table: runs", False),
    ],
)
def test_only_a_history_that_cannot_be_written_is_retried_as_a_read_only_snapshot(
    db: Path, name: str | None, text: str, retried: bool
) -> None:
    HistoryStore.open(db).close()
    error = sqlite_error(text, name)
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open(db, create=False, migrations=failing_once(error))
    retry = "attempt to write a readonly database"  # what the snapshot says when asked to migrate
    expected = history_failure(sqlite_error(retry, "SQLITE_READONLY") if retried else error, db)
    assert caught.value.message == expected.message
    with pytest.raises(HistoryError) as writer:
        HistoryStore.open(db, migrations=failing_once(error))  # a writer is never given a snapshot
    assert writer.value.message == history_failure(error, db).message


def test_a_database_from_someone_else_is_refused_with_what_to_do(db: Path) -> None:
    with raw(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(HistoryError) as caught:
        HistoryStore.open(db)
    assert caught.value.message == f"{db}: the file is an SQLite database, but not an auditor history"
    assert caught.value.hint == (
        "Point [history] path at a new file (or remove the setting to use history.sqlite beside the config)."
    )


# --- the stored census --------------------------------------------------------------------------------------


def test_a_stored_census_is_kept_per_tenant_whatever_the_case_of_its_id(
    store: HistoryStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # updated_at is UTC whatever the machine's zone
    time.tzset()
    try:
        _census_round_trip(store, db)
    finally:
        monkeypatch.undo()
        time.tzset()


def _census_round_trip(store: HistoryStore, db: Path) -> None:
    # Tenant ids with letters, stored lower-case and found whatever the case they are asked with.
    contoso, fabrikam = "c0ffee00-aaaa-4bbb-8ccc-dddddddddddd", "fab00000-eeee-4fff-8aaa-bbbbbbbbbbbb"
    assert store.load_census(contoso) is None
    store.save_census(
        contoso.upper(), 3, "https://graph/delta?token=1", "2024-05-01T01:00:00+00:00", b"\x01zip"
    )
    store.save_census(fabrikam, 3, "https://graph/delta?token=f", "2024-05-02T01:00:00+00:00", b"\x02")
    assert store.load_census(contoso) == (
        3,
        "https://graph/delta?token=1",
        "2024-05-01T01:00:00+00:00",
        b"\x01zip",
    )
    before = datetime.now(UTC)
    store.save_census(contoso, 4, "https://graph/delta?token=2", "2024-05-03T01:00:00+00:00", b"\x03")
    assert store.load_census(contoso.upper()) == (
        4,
        "https://graph/delta?token=2",
        "2024-05-03T01:00:00+00:00",
        b"\x03",
    )
    with raw(db) as conn:
        rows = conn.execute("SELECT tenant_id, updated_at FROM census_state ORDER BY tenant_id").fetchall()
    assert [r[0] for r in rows] == [contoso, fabrikam]  # one row per tenant, stored lower-case
    updated = datetime.fromisoformat(rows[0][1])
    assert updated.utcoffset() == timedelta(0) and before <= updated <= datetime.now(UTC)
    store.forget_census(contoso.upper())
    assert store.load_census(contoso) is None
    assert store.load_census(fabrikam) is not None  # the other tenant's is kept


# --- reading back -------------------------------------------------------------------------------------------


def test_the_latest_run_is_the_latest_started_and_complete(store: HistoryStore) -> None:
    assert store.latest_run_id() is None and store.latest_run_id(CONTOSO) is None
    store.record(run(T0 + DAY, tenant(CONTOSO, Status.COMPLIANT), run_id="second"))
    store.record(
        run(T0, tenant(CONTOSO, Status.COMPLIANT), tenant(FABRIKAM, Status.COMPLIANT), run_id="first")
    )
    store.begin_run(T0 + 2 * DAY)  # started, never recorded
    assert store.latest_run_id() == "second"
    assert store.latest_run_id(CONTOSO) == "second"
    assert store.latest_run_id(FABRIKAM) == "first"
    assert store.latest_run_id(NORTHWIND) is None
    assert store.has_run("first") and not store.has_run("third")
    assert store.run_count() == (2, 1)


def test_a_placeholder_is_discarded_but_a_recorded_run_never_is(store: HistoryStore) -> None:
    placeholder = store.begin_run(T0)
    seq = store.record(run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="done"))
    other = store.begin_run(T0 + DAY)
    store.discard_placeholder(other)
    store.discard_placeholder(seq)  # complete: kept
    assert [(r.run_id, r.complete) for r in store.runs()] == [("done", True), (None, False)]
    assert store.run_count() == (1, 1)
    assert not store.has_run("done-not")
    store.record(run(T0, tenant(CONTOSO, Status.COMPLIANT), run_id="late"), placeholder=placeholder)
    assert store.run_count() == (2, 0)  # the placeholder became the run


def test_runs_and_timelines_are_limited_to_the_latest(store: HistoryStore) -> None:
    for day in range(3):
        store.record(
            run(T0 + day * DAY, tenant(CONTOSO, Status.COMPLIANT), run_id=f"r{day}", mode=RunMode.REMEDIATE)
        )
    assert [r.run_id for r in store.runs()] == ["r2", "r1", "r0"]
    assert [r.run_id for r in store.runs(limit=2)] == ["r2", "r1"]
    assert [(r.seq, r.started_at) for r in store.runs(limit=1)] == [(3, T0 + 2 * DAY)]
    assert [e.run_id for e in store.timeline(CONTOSO)] == ["r0", "r1", "r2"]
    assert [e.run_id for e in store.timeline(CONTOSO, limit=2)] == ["r1", "r2"]
    (entry,) = store.timeline(CONTOSO, limit=1)
    assert entry == TimelineEntry(
        run_id="r2",
        started_at=T0 + 2 * DAY,
        mode=RunMode.REMEDIATE,
        name="Contoso",
        status=Status.COMPLIANT,
        finding_codes=(),
        billed_shared_mailboxes=0,
        monthly_cost=0.0,
        currency="GBP",
        error_code=None,
        remediation_action="none",
    )


def test_times_are_stored_in_utc_so_that_text_order_is_time_order(
    store: HistoryStore, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the machine's zone must not matter
    time.tzset()
    try:
        paris = timezone(timedelta(hours=2))
        early = datetime(2024, 5, 2, 1, 0, tzinfo=paris)  # 2024-05-01 23:00 UTC
        late = datetime(2024, 5, 1, 23, 30)  # naive: taken as UTC
        before = datetime.now(UTC)
        store.record(run(late, tenant(CONTOSO, Status.COMPLIANT), run_id="late"))
        store.record(run(early, tenant(CONTOSO, Status.COMPLIANT), run_id="early"))
        assert [r.run_id for r in store.runs()] == ["late", "early"]
        assert store.runs()[1].started_at == early
        with raw(db) as conn:
            stored = [s for (s,) in conn.execute("SELECT started_at FROM runs ORDER BY seq")]
        assert stored == ["2024-05-01T23:30:00.000000+00:00", "2024-05-01T23:00:00.000000+00:00"]
        with raw(db) as conn:
            recorded = [datetime.fromisoformat(s) for (s,) in conn.execute("SELECT recorded_at FROM runs")]
        assert all(r.utcoffset() == timedelta(0) and before <= r <= datetime.now(UTC) for r in recorded)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_run_not_in_the_history_is_named_with_what_the_history_holds(store: HistoryStore, db: Path) -> None:
    with pytest.raises(HistoryError) as empty:
        store.insights("missing")
    assert empty.value.message == f"run missing is not in the history {db} (it holds no recorded run)"
    assert empty.value.hint == (
        "Pass with --history the history that run was recorded in (the [history] path of the config it was "
        "audited with), or leave --history out to render the run without history."
    )
    store.record(run(T0, tenant(CONTOSO, Status.COMPLIANT)))
    store.record(run(T0 + 40 * DAY, tenant(CONTOSO, Status.COMPLIANT)))
    store.begin_run(T0 + 50 * DAY)
    with pytest.raises(HistoryError) as held:
        store.insights("missing")
    assert held.value.message == (
        f"run missing is not in the history {db} (it holds 2 run(s) from 2024-05-01 to 2024-06-10)"
    )


def test_insights_read_back_every_observation(store: HistoryStore) -> None:
    store.record(
        run(
            T0,
            tenant(CONTOSO, Status.COMPLIANT),
            tenant(FABRIKAM, Status.NON_COMPLIANT, currency="EUR"),
            run_id="r1",
            currency="EUR",
        )
    )
    store.record(
        run(
            T0 + DAY,
            tenant(CONTOSO, Status.NON_COMPLIANT, shared=("m1", "m2", "m3")),
            tenant(FABRIKAM, Status.NON_COMPLIANT, currency="EUR"),
            run_id="r2",
            currency="EUR",
        )
    )
    insights = store.insights("r2")
    assert (insights.run_id, insights.as_of, insights.currency) == ("r2", T0 + DAY, "EUR")
    assert (insights.previous_run_id, insights.previous_run_at) == ("r1", T0)
    assert [p.run_id for p in insights.trend] == ["r1", "r2"]
    contoso = insights.for_tenant(CONTOSO)
    assert contoso is not None and contoso.name == "Contoso"
    assert (contoso.change, contoso.previous_status, contoso.previous_seen_at) == (
        Change.NEW_GAP,
        Status.COMPLIANT,
        T0,
    )
    assert [m.id for m in contoso.new_shared_mailboxes] == ["m3"]
    assert [m.display_name for m in contoso.new_shared_mailboxes] == ["Mailbox m3"]
    fabrikam = insights.for_tenant(FABRIKAM)
    assert fabrikam is not None and fabrikam.new_shared_mailboxes == ()  # the same list as last time
    gap = fabrikam.open_gap
    assert gap is not None and (gap.first_seen, gap.runs, gap.accrued_cost, gap.currency) == (
        T0,
        2,
        0.16,
        "EUR",
    )
    first = store.insights("r1")
    assert first.previous_run_id is None and first.previous_run_at is None
    first_contoso = first.for_tenant(CONTOSO)
    assert first_contoso is not None and first_contoso.new_shared_mailboxes == ()  # the baseline: none new


def test_a_gap_whose_cost_was_unknown_until_this_run_accrues_a_minimum(store: HistoryStore) -> None:
    # The first night could not count the mailboxes (cost unknown); tonight's cost is known. The gap's
    # accrued cost is then a known minimum (0.00 so far, flagged incomplete), not "unknown".
    store.record(run(T0, tenant(CONTOSO, Status.NON_COMPLIANT, shared=None), run_id="r1"))
    store.record(run(T0 + DAY, tenant(CONTOSO, Status.NON_COMPLIANT), run_id="r2"))
    contoso = store.insights("r2").for_tenant(CONTOSO)
    assert contoso is not None and contoso.open_gap is not None
    gap = contoso.open_gap
    assert (gap.first_seen, gap.runs, gap.accrued_cost, gap.cost_complete) == (T0, 2, 0.0, False)


def test_a_verdict_this_version_cannot_read_is_left_out_and_warned_about_once(
    store: HistoryStore, db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for day in range(4):
        store.record(
            run(
                T0 + day * DAY,
                tenant(CONTOSO, Status.NON_COMPLIANT),
                tenant(FABRIKAM, Status.COMPLIANT),
                tenant(NORTHWIND, Status.COMPLIANT),
                run_id=f"r{day + 1}",
                mode=RunMode.REMEDIATE if day == 1 else RunMode.AUDIT,
            )
        )
    with raw(db) as conn:  # written by a newer auditor
        for tenant_id, seq, value in (
            (CONTOSO, 2, "quarantined"),
            (NORTHWIND, 2, "quarantined"),
            (FABRIKAM, 4, "suspended"),
        ):
            conn.execute(
                "UPDATE tenant_results SET status = ? WHERE tenant_id = ? AND run_seq = ?",
                (value, tenant_id, seq),
            )
        conn.execute("UPDATE runs SET mode = 'simulate' WHERE run_id = 'r2'")
    with caplog.at_level(logging.WARNING, logger="auditor.history.store"):
        insights = store.insights("r4")
        store.insights("r4")
        timeline = store.timeline(CONTOSO)
    contoso = insights.for_tenant(CONTOSO)
    assert contoso is not None and contoso.open_gap is not None
    assert contoso.open_gap.runs == 3  # r1, r3 and r4: r2's unreadable verdict is left out, not the rest
    assert insights.for_tenant(FABRIKAM) is None  # no current verdict: nothing to compare
    assert insights.for_tenant(NORTHWIND) is not None  # listed after it, still compared
    assert [(e.status, e.mode) for e in timeline] == [
        (Status.NON_COMPLIANT, RunMode.AUDIT),
        (None, None),
        (Status.NON_COMPLIANT, RunMode.AUDIT),
        (Status.NON_COMPLIANT, RunMode.AUDIT),
    ]
    middle = next(p for p in insights.trend if p.run_id == "r2")
    assert (middle.tenants, middle.tenants_with_unknown_status, middle.by_status[Status.COMPLIANT]) == (
        3,
        2,
        1,
    )
    assert middle.mode is None
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "history_unknown_value"]
    assert sorted(r.getMessage() for r in warnings) == sorted(
        f"The history {db} holds a {what} {value!r} that this version of the auditor does not know (written by a "
        "newer version?); it is shown as unknown"
        for what, value in (("status", "quarantined"), ("status", "suspended"), ("mode", "simulate"))
    )
    # Another history with the same unknown value is warned about too: the warning names the file.
    other = tmp_path / "other.sqlite"
    with raw(db) as source, raw(other) as target:
        source.backup(target)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="auditor.history.store"), HistoryStore.open(other) as copy:
        copy.timeline(FABRIKAM)
    # its mode and Fabrikam's status
    assert [r.getMessage().split(" holds")[0] for r in caplog.records] == [f"The history {other}"] * 2


def test_trend_totals_count_each_tenant_once(store: HistoryStore) -> None:
    store.record(
        run(
            T0,
            tenant(CONTOSO, Status.NON_COMPLIANT),
            tenant(FABRIKAM, Status.NON_COMPLIANT, shared=("a", "b", "c")),
            tenant(NORTHWIND, Status.ERROR),
            tenant("44444444-4444-4444-4444-444444444444", Status.AMBIGUOUS, name="Tailspin"),
            run_id="r1",
            currency="USD",
        )
    )
    (point,) = store.insights("r1").trend
    assert (point.run_id, point.started_at, point.currency, point.mode) == ("r1", T0, "USD", RunMode.AUDIT)
    assert (point.tenants, point.by_status[Status.NON_COMPLIANT], point.gaps) == (4, 2, 3)
    assert (point.billed_shared_mailboxes, point.estimated_monthly_cost) == (5, 12.5)
    assert (point.tenants_with_unknown_cost, point.tenants_with_unknown_status) == (2, 0)


def test_what_is_stored_per_tenant_is_json_a_later_night_reads_back(store: HistoryStore, db: Path) -> None:
    register_secret("Sécret-ünïcode-42")
    leaky = tenant(NORTHWIND, Status.ERROR, name="Zürich Bank")
    assert leaky.error is not None
    object.__setattr__(leaky.error, "message", "rejected Sécret-ünïcode-42")  # bypass the model's redaction
    store.record(
        run(
            T0,
            tenant(CONTOSO, Status.REMEDIATED, remediation=RemediationAction.CREATED),
            tenant(FABRIKAM, Status.COMPLIANT),
            leaky,
            run_id="r1",
        ),
        [
            json.dumps(
                {"time": "t1", "tenant_id": NORTHWIND, "action": "create", "outcome": "failed", "n": 1}
            ),
            "[1, 2]\n",
            "bad line \n",
            "ends with X\n",
        ],
    )
    with raw(db) as conn:
        stored = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT tenant_id, tags_json, service_principal_id, shared_mailboxes, error_json, remediation_json "
                "FROM tenant_results"
            )
        }
        journal = conn.execute(
            "SELECT time, tenant_id, action, outcome, line_json FROM remediation_journal"
        ).fetchall()
        (mailboxes,) = conn.execute("SELECT mailboxes_json FROM mailbox_sets LIMIT 1").fetchone()
    tags, sp_id, shared, error_json, remediation_json = stored[CONTOSO]
    assert (tags, sp_id, shared) == ('["gold"]', f"sp-{CONTOSO[:4]}", 2)
    assert json.loads(remediation_json) == {
        "action": "created",
        "detail": "detail",
        "role_assignment_id": None,
        "request_id": None,
        "at": None,
    }
    assert error_json is None
    assert stored[FABRIKAM][4] is None  # remediation did nothing: no remediation record
    _, northwind_sp, northwind_shared, northwind_error, _ = stored[NORTHWIND]
    assert (northwind_sp, northwind_shared) == (None, None)
    assert json.loads(northwind_error) == {
        "code": "AUTH_FAILED",
        "message": "rejected [redacted]",
        "hint": leaky.error.hint,
    }
    assert "Sécret" not in json.loads(northwind_error)["message"]
    assert (
        mailboxes == '[["m1","Mailbox m1"],["m2","Mailbox m2"]]'
    )  # compact, sorted: equal lists, one digest
    assert journal == [
        (
            "t1",
            NORTHWIND,
            "create",
            "failed",
            json.dumps(
                {"action": "create", "n": 1, "outcome": "failed", "tenant_id": NORTHWIND, "time": "t1"},
                separators=(",", ":"),
            ),
        ),
        (None, None, None, None, '{"unparsed":"[1, 2]"}'),
        (None, None, None, None, '{"unparsed":"bad line "}'),
        (None, None, None, None, '{"unparsed":"ends with X"}'),
    ]
    assert store.journal("r1")[1:] == [
        {"unparsed": "[1, 2]"},
        {"unparsed": "bad line "},
        {"unparsed": "ends with X"},
    ]
