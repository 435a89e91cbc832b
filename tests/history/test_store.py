"""The history database: schema and migrations, the record/read round trip, one transaction per run."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from auditor.errors import ErrorCode, TenantError
from auditor.history.lock import HistoryError
from auditor.history.store import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    HistoryStore,
    JournalLine,
    Migration,
)
from auditor.model import FindingCode, RemediationAction, RunMode, Status
from tests.history.builders import CONTOSO, DAY, FABRIKAM, NORTHWIND, T0, record_all, run, tenant

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
    assert caught.value.exit_code == 2 and "Upgrade" in str(caught.value)


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
