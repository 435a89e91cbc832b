"""The run history: an embedded SQLite database, versioned and migrated, written one transaction per run.

Schema (migrations 1-2; ``PRAGMA user_version`` holds the schema version, ``PRAGMA application_id`` marks
the file as ours so a path pointing at some other database is refused rather than "migrated"):

* ``runs``: one row per run. A run gets its row when it *starts* (``complete = 0``: a placeholder with
  only its start time), and the row is filled in and set ``complete = 1`` in the same transaction that
  adds its tenants. So a run that was killed or crashed stays visible as "interrupted", and every reader
  of results (insights, trend, timelines) looks at complete runs only.
* ``tenant_results``: each tenant's verdict, billing, mailbox counts, error and remediation outcome.
* ``findings``: each finding (code, severity, message) in order.
* ``mailbox_sets``: each tenant's shared mailboxes as one sorted list of ``[id, display_name]`` pairs
  (no addresses: ids are what "new since last run" needs, display names what a person reads), stored
  once per distinct list and referenced by ``tenant_results.shared_mailbox_set``. A tenant's shared
  mailboxes rarely change from night to night, so a year of nightly runs over a thousand tenants costs
  a few sets per tenant instead of millions of rows.
* ``remediation_journal``: this run's lines of ``remediation.jsonl``.
* ``census_state`` (migration 2): each tenant's mailbox census and its `/users/delta` link, written as
  each tenant's census is read (not with the run: it is a cache of the directory, see auditor.census).

Durability and consistency: WAL mode (readers such as ``auditor history`` never block the run and vice
versa) with ``synchronous = FULL``; each run is recorded inside one ``BEGIN IMMEDIATE ... COMMIT``, so a
process killed mid-write leaves the database exactly as before that run (SQLite discards an uncommitted
WAL tail on the next open). Overlapping runs are kept apart by :class:`~auditor.history.lock.RunLock`.

Free text (messages, details, journal lines) passes through :func:`auditor.errors.redact` once more on
the way in: results are redacted when built, but the database outlives any one code path.

Adding a migration: append ``Migration.sql(2, "what it does", "ALTER TABLE ...", ...)`` (or
``Migration(2, "...", function_taking_the_connection)`` for a data migration) to :data:`MIGRATIONS`.
Never edit a released migration: a database at version N has run exactly migrations 1..N. Migrations
run in one transaction, so a failed one leaves the file at its old version with every earlier run
intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeAlias, TypeVar

from auditor.errors import redact
from auditor.history.insights import (
    TREND_RUNS,
    MailboxRef,
    Observation,
    RunInsights,
    TenantInsight,
    TrendPoint,
    tenant_insight,
)
from auditor.history.lock import HistoryError
from auditor.model import RemediationAction, RunMode, RunResult, SharedMailbox, Status, TenantResult, money

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "HistoryStore",
    "JournalLine",
    "Migration",
    "RunRecord",
    "TenantRef",
    "TimelineEntry",
    "history_failure",
]

JournalLine: TypeAlias = str | Mapping[str, Any]
_E = TypeVar("_E", Status, RunMode)
# (database, what, value) already warned about in this process: unknown values are warned once.
_WARNED: set[tuple[str, str, str]] = set()
log = logging.getLogger(__name__)

# "USSA": marks the file as an uss-auditor history (sqlite's `PRAGMA application_id`, see `file` magic).
APPLICATION_ID: Final = 0x55535341
# How long a write waits for another connection's write transaction (e.g. a reader migrating the file).
BUSY_TIMEOUT_SECONDS: Final = 30.0


# --- schema and migrations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """One step of the schema: from ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]

    @classmethod
    def sql(cls, version: int, description: str, *statements: str) -> Migration:
        """A migration made of SQL statements, run in order."""

        # Statement by statement: executescript() would COMMIT the surrounding migration transaction.
        def apply(connection: sqlite3.Connection) -> None:
            for statement in statements:
                connection.execute(statement)

        return cls(version, description, apply)


_SCHEMA_1: Final = (
    """
    CREATE TABLE mailbox_sets (
        id INTEGER PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,             -- SHA-256 of mailboxes_json: equal lists are stored once
        mailboxes_json TEXT NOT NULL             -- [[id, display_name], ...] sorted by id
    )
    """,
    """
    CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- recording order; run ids are UUIDs and do not sort
        run_id TEXT UNIQUE,                      -- NULL while the run is in progress
        started_at TEXT NOT NULL,                -- ISO 8601 UTC with microseconds: sorts as text
        finished_at TEXT,
        recorded_at TEXT,
        mode TEXT,
        tool_version TEXT,
        currency TEXT,
        tenants INTEGER NOT NULL DEFAULT 0,
        summary_json TEXT,                       -- RunSummary.to_dict() as recorded
        complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1))
    )
    """,
    "CREATE INDEX runs_by_time ON runs (complete, started_at, seq)",
    """
    CREATE TABLE tenant_results (
        run_seq INTEGER NOT NULL REFERENCES runs (seq),
        position INTEGER NOT NULL,               -- order in the run (config order)
        tenant_id TEXT NOT NULL,
        name TEXT NOT NULL,
        tags_json TEXT NOT NULL,
        status TEXT NOT NULL,
        service_principal_id TEXT,
        billed_shared_mailboxes INTEGER,         -- NULL: unknown (never 0 for unknown)
        price_per_mailbox REAL NOT NULL,
        monthly_cost REAL,                       -- NULL: unknown
        currency TEXT NOT NULL,
        shared_mailboxes INTEGER,                -- NULL: the census could not be read
        shared_mailbox_set INTEGER REFERENCES mailbox_sets (id),  -- NULL when shared_mailboxes is NULL
        mailbox_counts_json TEXT,
        error_code TEXT,
        error_json TEXT,
        remediation_action TEXT NOT NULL,
        remediation_json TEXT,                   -- NULL when remediation did nothing (action none)
        PRIMARY KEY (run_seq, tenant_id)
    )
    """,
    "CREATE INDEX tenant_results_by_tenant ON tenant_results (tenant_id, run_seq)",
    """
    CREATE TABLE findings (
        run_seq INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        code TEXT NOT NULL,
        severity TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (run_seq, tenant_id, position),
        FOREIGN KEY (run_seq, tenant_id) REFERENCES tenant_results (run_seq, tenant_id)
    )
    """,
    """
    CREATE TABLE remediation_journal (
        run_seq INTEGER NOT NULL REFERENCES runs (seq),
        position INTEGER NOT NULL,
        time TEXT,
        tenant_id TEXT,
        action TEXT,
        outcome TEXT,
        line_json TEXT NOT NULL,                 -- the journal line, as JSON
        PRIMARY KEY (run_seq, position)
    )
    """,
)

# Migration 2 (issue 13, incremental nights): each tenant's mailbox census as last read, with the
# `GET /users/delta` deltaLink that continues it (see auditor.census). One row per tenant, replaced after
# every census; `census_json` is zlib-compressed JSON (a 2,000-user census is ~40 KB). The deltaLink is an
# opaque Graph URL: it holds no secret (the token is ours to hold, like a page link).
_SCHEMA_2: Final = (
    """
    CREATE TABLE census_state (
        tenant_id TEXT PRIMARY KEY,
        format INTEGER NOT NULL,                 -- auditor.census.CENSUS_FORMAT of census_json
        delta_link TEXT NOT NULL,
        full_read_at TEXT NOT NULL,              -- when the users were last read in full
        updated_at TEXT NOT NULL,
        census_json BLOB NOT NULL
    )
    """,
)

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration.sql(1, "initial schema: runs, tenant results, findings, mailbox sets, journal", *_SCHEMA_1),
    Migration.sql(2, "census_state: each tenant's stored census and users delta link", *_SCHEMA_2),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version


def migrate(connection: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the database to the latest version in one transaction; returns the version it was at.

    Refuses (:class:`HistoryError`) a database written by a newer version, or one that is not a history
    database at all. An up-to-date database is only read, so a reader never waits for a run's write.
    """
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migrations must be numbered 1..n in order; found {migration.version} at {expected}"
            )
    latest = len(migrations)
    version = _check_version(connection, latest)
    if version == latest:
        return version
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Again inside the write lock: another process may have migrated it in the meantime.
        version = _check_version(connection, latest)
        for migration in migrations[version:]:
            migration.apply(connection)
            # PRAGMA takes no parameters; the value is an int from our own table.
            connection.execute(f"PRAGMA user_version = {int(migration.version)}")
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return version


def _check_version(connection: sqlite3.Connection, latest: int) -> int:
    """The schema version of a history database we can migrate; raises :class:`HistoryError` otherwise."""
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    application_id = int(connection.execute("PRAGMA application_id").fetchone()[0])
    if application_id != APPLICATION_ID and (
        application_id != 0
        or version
        or connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    ):
        raise HistoryError(
            "the file is an SQLite database, but not an auditor history",
            hint="Point [history] path at a new file (or remove the setting to use history.sqlite beside the "
            "config).",
        )
    if version > latest:
        raise HistoryError(
            f"the history database has schema version {version}, newer than this auditor understands "
            f"({latest}); it was written by a newer version",
            hint="Upgrade uss-auditor, or point [history] path at another file.",
        )
    return version


# --- what readers get --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRecord:
    """A run as listed by ``auditor history``: complete, or started and never recorded."""

    seq: int
    run_id: str | None  # None for a run that never finished
    started_at: datetime
    complete: bool
    finished_at: datetime | None = None
    tool_version: str | None = None
    totals: TrendPoint | None = None  # None for an incomplete run


@dataclass(frozen=True)
class TenantRef:
    """A tenant history knows, with the name it had in its latest run."""

    tenant_id: str
    name: str
    runs: int


@dataclass(frozen=True)
class TimelineEntry:
    """One tenant in one complete run."""

    run_id: str
    started_at: datetime
    mode: RunMode | None  # None: a value this version does not know (written by a newer one)
    name: str
    status: Status | None  # None: unknown, as for mode
    finding_codes: tuple[str, ...]
    billed_shared_mailboxes: int | None
    monthly_cost: float | None
    currency: str
    error_code: str | None
    remediation_action: str


# --- the store ---------------------------------------------------------------------------------------------


class HistoryStore:
    """An open history database. Not thread-safe: one per thread (SQLite handles the rest)."""

    def __init__(self, connection: sqlite3.Connection, path: Path, schema_version: int) -> None:
        self._db = connection
        self.path = path
        self.schema_version = schema_version

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        create: bool = True,
        migrations: Sequence[Migration] = MIGRATIONS,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    ) -> HistoryStore:
        """Open (or with ``create``, create) the database at ``path`` and migrate it to the latest schema.

        Raises :class:`HistoryError` when it cannot be created or read, is not a history database, or is
        from a newer version.
        """
        path = Path(path)
        if not create and not path.exists():
            raise HistoryError(
                f"no history database at {path}", hint="`auditor audit` creates it on its first run."
            )
        try:
            if create and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                # Created here, not by sqlite, to set the mode: the -wal/-shm files inherit it.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o640))
        except OSError as exc:
            raise HistoryError(
                f"cannot open the history database {path} ({_reason(exc)})",
                hint="Check that the directory exists and is writable, or set [history] path.",
            ) from exc
        try:
            return cls._connect(path, migrations, busy_timeout, read_only=False)
        except sqlite3.Error as exc:
            failure = history_failure(exc, path)
            if create or not _is_access_problem(exc):
                raise failure from exc
        # A reader (`auditor history`, `auditor report --history`) on a history it may not write: a WAL
        # database needs its -shm file, which a read-only directory cannot hold, so it is read as an
        # immutable snapshot instead (nothing can be writing there that this user could see anyway).
        try:
            return cls._connect(path, migrations, busy_timeout, read_only=True)
        except sqlite3.Error as exc:
            raise history_failure(exc, path) from exc

    @classmethod
    def _connect(
        cls, path: Path, migrations: Sequence[Migration], busy_timeout: float, *, read_only: bool
    ) -> HistoryStore:
        query = "mode=ro&immutable=1" if read_only else "mode=rw"
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?{query}", uri=True, timeout=busy_timeout, isolation_level=None
        )
        try:
            connection.execute("PRAGMA foreign_keys = ON")
            # WAL: `auditor history` can read while a run writes. Set outside a transaction, and only when
            # needed (switching takes a write lock that a reader should not wait for).
            if not read_only and connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            if not read_only:
                connection.execute("PRAGMA synchronous = FULL")
            migrate(connection, migrations)
        except HistoryError as exc:
            connection.close()
            raise HistoryError(f"{path}: {exc.message}", hint=exc.hint) from exc
        except BaseException:
            connection.close()
            raise
        return cls(connection, path, len(migrations))

    def close(self) -> None:
        """Close the connection (committed data is already durable)."""
        self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the stored census (auditor.census)

    def load_census(self, tenant_id: str) -> tuple[int, str, str, bytes] | None:
        """A tenant's stored census as (format, delta_link, full_read_at, compressed JSON), or None."""
        row = self._db.execute(
            "SELECT format, delta_link, full_read_at, census_json FROM census_state WHERE tenant_id = ?",
            (tenant_id.lower(),),
        ).fetchone()
        if row is None:
            return None
        return int(row[0]), str(row[1]), str(row[2]), bytes(row[3])

    def save_census(self, tenant_id: str, fmt: int, delta_link: str, full_read_at: str, blob: bytes) -> None:
        """Replace a tenant's stored census (one statement: atomic on its own)."""
        self._db.execute(
            "INSERT OR REPLACE INTO census_state (tenant_id, format, delta_link, full_read_at, updated_at, "
            "census_json) VALUES (?, ?, ?, ?, ?, ?)",
            (tenant_id.lower(), fmt, delta_link, full_read_at, _ts(datetime.now(UTC)), blob),
        )

    def forget_census(self, tenant_id: str) -> None:
        """Drop a tenant's stored census (the next night reads it in full)."""
        self._db.execute("DELETE FROM census_state WHERE tenant_id = ?", (tenant_id.lower(),))

    # -- writing

    def begin_run(self, started_at: datetime) -> int:
        """Add the placeholder row of a run that is starting; returns its ``seq`` for :meth:`record`.

        If the run never gets recorded (killed, crashed) the row stays, marked incomplete.
        """
        cursor = self._db.execute("INSERT INTO runs (started_at, complete) VALUES (?, 0)", (_ts(started_at),))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def discard_placeholder(self, seq: int) -> None:
        """Remove the :meth:`begin_run` row of a run that finished but could not be recorded (it must not
        read as "interrupted"); a completed row is never touched."""
        self._db.execute("DELETE FROM runs WHERE seq = ? AND complete = 0", (seq,))

    def has_run(self, run_id: str) -> bool:
        """Whether a complete run with this id is recorded."""
        row = self._db.execute("SELECT 1 FROM runs WHERE run_id = ? AND complete = 1", (run_id,)).fetchone()
        return row is not None

    def record(
        self, run: RunResult, journal_lines: Iterable[JournalLine] = (), *, placeholder: int | None = None
    ) -> int:
        """Record a finished run and its remediation journal lines in one transaction; returns its ``seq``.

        ``placeholder`` is the :meth:`begin_run` row to complete (a new row is added without one). Raises
        :class:`HistoryError` when the run id is already recorded; ``sqlite3.Error`` for database failures
        (nothing of the run is then stored).
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)).fetchone():
                raise HistoryError(f"run {run.run_id} is already recorded in {self.path}")
            summary = run.summary()
            values = {
                "run_id": run.run_id,
                "started_at": _ts(run.started_at),
                "finished_at": _ts(run.finished_at),
                "recorded_at": _ts(datetime.now(UTC)),
                "mode": run.mode.value,
                "tool_version": run.tool_version,
                "currency": run.currency,
                "tenants": len(run.tenants),
                "summary_json": _json(summary.to_dict()),
            }
            seq: int | None = None
            if placeholder is not None:
                cursor = db.execute(
                    "UPDATE runs SET run_id = :run_id, started_at = :started_at, finished_at = :finished_at, "
                    "recorded_at = :recorded_at, mode = :mode, tool_version = :tool_version, "
                    "currency = :currency, tenants = :tenants, summary_json = :summary_json "
                    "WHERE seq = :seq AND complete = 0",
                    {**values, "seq": placeholder},
                )
                seq = placeholder if cursor.rowcount == 1 else None
            if seq is None:
                cursor = db.execute(
                    "INSERT INTO runs (run_id, started_at, finished_at, recorded_at, mode, tool_version, "
                    "currency, tenants, summary_json) VALUES (:run_id, :started_at, :finished_at, "
                    ":recorded_at, :mode, :tool_version, :currency, :tenants, :summary_json)",
                    values,
                )
                assert cursor.lastrowid is not None
                seq = cursor.lastrowid
            for position, tenant in enumerate(run.tenants):
                self._insert_tenant(seq, position, tenant)
            db.executemany(
                "INSERT INTO remediation_journal (run_seq, position, time, tenant_id, action, outcome, "
                "line_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (seq, position, *_journal_row(line))
                    for position, line in enumerate(_nonblank(journal_lines))
                ],
            )
            # Last, so that a run is complete exactly when everything above is in.
            db.execute("UPDATE runs SET complete = 1 WHERE seq = ?", (seq,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return seq

    def _insert_tenant(self, seq: int, position: int, tenant: TenantResult) -> None:
        db = self._db
        census = tenant.mailboxes
        db.execute(
            "INSERT INTO tenant_results (run_seq, position, tenant_id, name, tags_json, status, "
            "service_principal_id, billed_shared_mailboxes, price_per_mailbox, monthly_cost, currency, "
            "shared_mailboxes, shared_mailbox_set, mailbox_counts_json, error_code, error_json, "
            "remediation_action, remediation_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                position,
                tenant.tenant_id,
                tenant.name,
                _json(list(tenant.tags)),
                tenant.status.value,
                tenant.service_principal.record.id if tenant.service_principal else None,
                tenant.billing.billed_shared_mailboxes,
                tenant.billing.price_per_mailbox,
                tenant.billing.monthly_cost,
                tenant.billing.currency,
                census.shared if census is not None else None,
                self._mailbox_set(census.shared_mailboxes) if census is not None else None,
                _json(census.counts()) if census is not None else None,
                tenant.error.code.value if tenant.error else None,
                redact(_json(tenant.error.to_dict())) if tenant.error else None,
                tenant.remediation.action.value,
                None
                if tenant.remediation.action is RemediationAction.NONE
                else redact(_json(tenant.remediation.to_dict())),
            ),
        )
        db.executemany(
            "INSERT INTO findings (run_seq, tenant_id, position, code, severity, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (seq, tenant.tenant_id, i, f.code.value, f.severity.value, redact(f.message))
                for i, f in enumerate(tenant.findings)
            ],
        )

    def _mailbox_set(self, mailboxes: Iterable[SharedMailbox]) -> int:
        """The id of the stored set holding exactly these mailboxes, adding it when new."""
        # By id, once each: a census listing one mailbox twice must not make a different set.
        pairs = sorted({m.id: m.display_name for m in mailboxes}.items())
        text = _json(pairs)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        self._db.execute(
            "INSERT OR IGNORE INTO mailbox_sets (digest, mailboxes_json) VALUES (?, ?)", (digest, text)
        )
        row = self._db.execute("SELECT id FROM mailbox_sets WHERE digest = ?", (digest,)).fetchone()
        return int(row[0])

    def _mailboxes(self, set_id: int) -> list[MailboxRef]:
        row = self._db.execute("SELECT mailboxes_json FROM mailbox_sets WHERE id = ?", (set_id,)).fetchone()
        return [MailboxRef(str(mailbox_id), str(name)) for mailbox_id, name in json.loads(row[0])]

    # -- reading

    def runs(self, limit: int | None = None) -> list[RunRecord]:
        """The latest runs, newest first, complete and incomplete."""
        rows = self._db.execute(
            "SELECT seq, run_id, started_at, finished_at, tool_version, complete FROM runs "
            "ORDER BY started_at DESC, seq DESC LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        totals = self._totals([row[0] for row in rows if row[5]])
        return [
            RunRecord(
                seq=seq,
                run_id=run_id,
                started_at=_dt(started),
                complete=bool(complete),
                finished_at=_dt(finished) if finished else None,
                tool_version=version,
                totals=totals.get(seq),
            )
            for seq, run_id, started, finished, version, complete in rows
        ]

    def run_count(self) -> tuple[int, int]:
        """``(complete, incomplete)`` run counts."""
        row = self._db.execute(
            "SELECT coalesce(sum(complete), 0), count(*) - coalesce(sum(complete), 0) FROM runs"
        ).fetchone()
        return int(row[0]), int(row[1])

    def tenants(self) -> list[TenantRef]:
        """Every tenant history knows, by name."""
        rows = self._db.execute(
            "SELECT tr.tenant_id, tr.name, count(*) OVER (PARTITION BY tr.tenant_id), "
            "row_number() OVER (PARTITION BY tr.tenant_id ORDER BY r.started_at DESC, r.seq DESC) "
            "FROM tenant_results tr JOIN runs r ON r.seq = tr.run_seq WHERE r.complete = 1"
        ).fetchall()
        refs = [TenantRef(tenant_id, name, int(count)) for tenant_id, name, count, rank in rows if rank == 1]
        return sorted(refs, key=lambda ref: (ref.name.casefold(), ref.tenant_id))

    def find_tenants(self, name_or_id: str) -> list[TenantRef]:
        """Tenants whose id, or latest name, matches (case-insensitively)."""
        needle = name_or_id.strip().casefold()
        return [t for t in self.tenants() if needle in (t.tenant_id.casefold(), t.name.casefold())]

    def timeline(self, tenant_id: str, limit: int | None = None) -> list[TimelineEntry]:
        """The tenant's latest ``limit`` complete runs, oldest first."""
        rows = self._db.execute(
            "SELECT r.seq, r.run_id, r.started_at, r.mode, tr.name, tr.status, tr.billed_shared_mailboxes, "
            "tr.monthly_cost, tr.currency, tr.error_code, tr.remediation_action "
            "FROM tenant_results tr JOIN runs r ON r.seq = tr.run_seq "
            "WHERE tr.tenant_id = ? AND r.complete = 1 ORDER BY r.started_at DESC, r.seq DESC LIMIT ?",
            (tenant_id, -1 if limit is None else limit),
        ).fetchall()
        codes: dict[int, list[str]] = defaultdict(list)
        for seq, code in self._db.execute(
            "SELECT run_seq, code FROM findings WHERE tenant_id = ? ORDER BY run_seq, position", (tenant_id,)
        ):
            codes[seq].append(code)
        return [
            TimelineEntry(
                run_id=run_id,
                started_at=_dt(started),
                mode=self._known(RunMode, mode, "mode"),
                name=name,
                status=self._known(Status, status, "status"),
                finding_codes=tuple(codes.get(seq, ())),
                billed_shared_mailboxes=billed,
                monthly_cost=cost,
                currency=currency,
                error_code=error_code,
                remediation_action=action,
            )
            for seq, run_id, started, mode, name, status, billed, cost, currency, error_code, action in reversed(
                rows
            )
        ]

    def journal(self, run_id: str) -> list[dict[str, Any]]:
        """The remediation journal lines recorded with a run."""
        rows = self._db.execute(
            "SELECT j.line_json FROM remediation_journal j JOIN runs r ON r.seq = j.run_seq "
            "WHERE r.run_id = ? ORDER BY j.position",
            (run_id,),
        )
        return [json.loads(line) for (line,) in rows]

    def latest_run_id(self, tenant_id: str | None = None) -> str | None:
        """The latest complete run (that included ``tenant_id``, when given)."""
        if tenant_id is None:
            row = self._db.execute(
                "SELECT run_id FROM runs WHERE complete = 1 ORDER BY started_at DESC, seq DESC LIMIT 1"
            ).fetchone()
        else:
            row = self._db.execute(
                "SELECT r.run_id FROM runs r JOIN tenant_results tr ON tr.run_seq = r.seq "
                "WHERE r.complete = 1 AND tr.tenant_id = ? ORDER BY r.started_at DESC, r.seq DESC LIMIT 1",
                (tenant_id,),
            ).fetchone()
        return None if row is None else str(row[0])

    def insights(self, run_id: str) -> RunInsights:
        """History's view of a recorded run: changes against each tenant's baseline, gap ages and accrued
        cost up to that run, and the trend ending with it (runs recorded later are ignored)."""
        row = self._db.execute(
            "SELECT seq, started_at, currency FROM runs WHERE run_id = ? AND complete = 1", (run_id,)
        ).fetchone()
        if row is None:
            raise HistoryError(
                f"run {run_id} is not in the history {self.path} (it holds {self._run_summary()})",
                hint="Pass with --history the history that run was recorded in (the [history] path of the "
                "config it was audited with), or leave --history out to render the run without history.",
            )
        seq, started, currency = int(row[0]), str(row[1]), str(row[2])
        # "Before this run" (in the queries below): a complete run that started earlier, or at the same
        # time but was recorded earlier (ties happen with hand-made timestamps).
        params = {"at": started, "seq": seq}

        current = self._db.execute(
            "SELECT tenant_id, name, status, monthly_cost, currency, shared_mailbox_set FROM tenant_results "
            "WHERE run_seq = ? ORDER BY position",
            (seq,),
        ).fetchall()
        earlier: dict[str, list[Observation]] = defaultdict(list)
        census: dict[str, int] = {}  # each tenant's latest earlier mailbox set
        for tenant_id, e_run_id, e_started, status, cost, e_currency, mailbox_set in self._db.execute(
            "SELECT tr.tenant_id, r.run_id, r.started_at, tr.status, tr.monthly_cost, tr.currency, "
            "tr.shared_mailbox_set FROM tenant_results tr JOIN runs r ON r.seq = tr.run_seq "
            "WHERE r.complete = 1 AND (r.started_at < :at OR (r.started_at = :at AND r.seq < :seq)) "
            "AND tr.tenant_id IN (SELECT tenant_id FROM tenant_results WHERE run_seq = :seq) "
            "ORDER BY tr.tenant_id, r.started_at, r.seq",
            params,
        ):
            known = self._known(Status, status, "status")
            if known is None:
                continue  # a verdict this version cannot read is left out, as if not observed
            earlier[tenant_id].append(Observation(e_run_id, _dt(e_started), known, cost, e_currency))
            if mailbox_set is not None:
                census[tenant_id] = mailbox_set  # rows are chronological: the last one wins

        as_of = _dt(started)
        insights: list[TenantInsight] = []
        for tenant_id, name, status, cost, t_currency, mailbox_set in current:
            current_status = self._known(Status, status, "status")
            if current_status is None:
                continue  # nothing to compare: the report shows this tenant without history
            now: list[MailboxRef] | None = None
            previous_ids: list[str] | None = None
            if mailbox_set is not None:
                now = self._mailboxes(mailbox_set)
                if census.get(tenant_id) == mailbox_set:
                    previous_ids = [m.id for m in now]  # the same list as last time: nothing new
                elif tenant_id in census:
                    previous_ids = [m.id for m in self._mailboxes(census[tenant_id])]
            insights.append(
                tenant_insight(
                    tenant_id=tenant_id,
                    name=name,
                    current=Observation(run_id, as_of, current_status, cost, t_currency),
                    earlier=earlier.get(tenant_id, ()),
                    shared_mailboxes=now,
                    previous_mailbox_ids=previous_ids,
                )
            )

        previous = self._db.execute(
            "SELECT r.run_id, r.started_at FROM runs r "
            "WHERE r.complete = 1 AND (r.started_at < :at OR (r.started_at = :at AND r.seq < :seq)) "
            "ORDER BY r.started_at DESC, r.seq DESC LIMIT 1",
            params,
        ).fetchone()
        trend_seqs = [
            int(s)
            for (s,) in self._db.execute(
                "SELECT r.seq FROM runs r WHERE r.complete = 1 AND (r.started_at < :at OR (r.started_at = :at "
                "AND r.seq <= :seq)) ORDER BY r.started_at DESC, r.seq DESC LIMIT :limit",
                {**params, "limit": TREND_RUNS},
            )
        ]
        totals = self._totals(trend_seqs)
        return RunInsights(
            run_id=run_id,
            as_of=as_of,
            currency=currency,
            tenants=tuple(insights),
            trend=tuple(totals[s] for s in reversed(trend_seqs)),
            previous_run_id=previous[0] if previous else None,
            previous_run_at=_dt(previous[1]) if previous else None,
        )

    def _known(self, kind: type[_E], value: object, what: str) -> _E | None:
        """``value`` as a member of ``kind``, or None (warned once per value and database) for one this
        version does not know: a status or mode written by a newer auditor must not stop anything."""
        try:
            return kind(str(value))
        except ValueError:
            key = (str(self.path), what, str(value))
            if key not in _WARNED:
                _WARNED.add(key)
                log.warning(
                    "The history %s holds a %s %r that this version of the auditor does not know (written by a "
                    "newer version?); it is shown as unknown",
                    self.path,
                    what,
                    value,
                    extra={"event": "history_unknown_value"},
                )
            return None

    def _run_summary(self) -> str:
        complete, _incomplete = self.run_count()
        if not complete:
            return "no recorded run"
        row = self._db.execute(
            "SELECT min(started_at), max(started_at) FROM runs WHERE complete = 1"
        ).fetchone()
        return f"{complete} run(s) from {str(row[0])[:10]} to {str(row[1])[:10]}"

    def _totals(self, seqs: Sequence[int]) -> dict[int, TrendPoint]:
        """Per-run totals computed from the tenant rows (not from summary_json, whose shape may evolve)."""
        if not seqs:
            return {}
        wanted = _json(list(seqs))  # one parameter, expanded by json_each: no SQL built from strings
        runs = {
            int(seq): (run_id, started, mode, currency)
            for seq, run_id, started, mode, currency in self._db.execute(
                "SELECT seq, run_id, started_at, mode, currency FROM runs "
                "WHERE seq IN (SELECT value FROM json_each(?))",
                (wanted,),
            )
        }
        statuses: dict[int, Counter[Status]] = defaultdict(Counter)
        unknown_status: Counter[int] = Counter()
        billed: Counter[int] = Counter()
        cost: dict[int, Decimal] = defaultdict(Decimal)
        unknown: Counter[int] = Counter()
        for seq, status, tenant_billed, tenant_cost in self._db.execute(
            "SELECT run_seq, status, billed_shared_mailboxes, monthly_cost FROM tenant_results "
            "WHERE run_seq IN (SELECT value FROM json_each(?))",
            (wanted,),
        ):
            known = self._known(Status, status, "status")
            if known is None:
                unknown_status[seq] += 1
            else:
                statuses[seq][known] += 1
            billed[seq] += tenant_billed or 0
            if tenant_cost is None:
                unknown[seq] += 1
            else:
                cost[seq] += Decimal(str(tenant_cost))
        return {
            seq: TrendPoint(
                run_id=run_id,
                started_at=_dt(started),
                mode=self._known(RunMode, mode, "mode"),
                tenants=sum(statuses[seq].values()) + unknown_status[seq],
                by_status={status: statuses[seq].get(status, 0) for status in Status},
                billed_shared_mailboxes=billed[seq],
                estimated_monthly_cost=money(cost[seq]),
                currency=currency,
                tenants_with_unknown_cost=unknown[seq],
                tenants_with_unknown_status=unknown_status[seq],
            )
            for seq, (run_id, started, mode, currency) in runs.items()
        }


# --- helpers -----------------------------------------------------------------------------------------------


def _ts(value: datetime) -> str:
    """A timestamp as stored: UTC, microseconds, so that text order is time order."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # the model promises aware datetimes; be safe with naive ones
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


_MOVE_ASIDE: Final = (
    "Move it aside (the next run starts a new history) and keep it for recovery (sqlite3 FILE .recover)."
)


def history_failure(exc: sqlite3.Error, path: Path) -> HistoryError:
    """A :class:`HistoryError` naming the real cause of an SQLite failure on the history at ``path``:
    damaged, not a database, read-only, disk full, an I/O error or busy (each with its own remedy), told
    apart by SQLite's error code rather than guessed from where it happened."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    detail = _reason(exc)
    text = detail.lower()
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return HistoryError(
            f"{path} is not an SQLite database ({detail}), so it cannot be the auditor's history",
            hint="Point [history] path at the history file, or move this file aside (the next run starts a "
            "new history).",
        )
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return HistoryError(f"the history database {path} is damaged ({detail})", hint=_MOVE_ASIDE)
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")) or "readonly" in text:
        return HistoryError(
            f"the history database {path} is read-only for this user ({detail}), so this run could not be "
            "recorded",
            hint="Give the user running the auditor write access to the file and its directory (SQLite keeps "
            "-wal and -shm files beside it); `auditor history` and `auditor report --history` only read it.",
        )
    if name == "SQLITE_FULL" or "disk is full" in text:
        return HistoryError(
            f"the disk holding the history database {path} is full ({detail})",
            hint="Free some space on that file system, then re-run.",
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return HistoryError(
            f"cannot open the history database {path} ({detail})",
            hint="Check that its directory exists and that the user running the auditor may write there.",
        )
    if name.startswith("SQLITE_IOERR") or "i/o error" in text:
        return HistoryError(
            f"the disk reported an I/O error on the history database {path} ({detail})",
            hint="Check the disk and the file system (SQLite needs a local disk, not a network share).",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return HistoryError(
            f"the history database {path} is locked by another program ({detail})",
            hint="Close whatever has it open (an sqlite3 shell, a backup job), then re-run.",
        )
    return HistoryError(
        f"cannot use the history database {path} ({detail})",
        hint="If the file is damaged, move it aside (the next run starts a new history) and keep it for "
        "recovery with the sqlite3 tool.",
    )


def _is_access_problem(exc: sqlite3.Error) -> bool:
    """The file or its directory cannot be written (or the -shm file created): a reader may still read."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or (
        "readonly" in text or "unable to open" in text
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


def _nonblank(lines: Iterable[JournalLine]) -> Iterable[JournalLine]:
    return (line for line in lines if not isinstance(line, str) or line.strip())


def _journal_row(line: JournalLine) -> tuple[str | None, str | None, str | None, str | None, str]:
    """``(time, tenant_id, action, outcome, line_json)`` for one journal line; a line that is not a JSON
    object is kept as ``{"unparsed": ...}`` rather than dropped (the journal is evidence)."""
    record: Mapping[str, Any]
    if isinstance(line, str):
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = None
        record = parsed if isinstance(parsed, dict) else {"unparsed": line.rstrip("\n")}
    else:
        record = line

    def text(key: str) -> str | None:
        value = record.get(key)
        return None if value is None else redact(str(value))

    return text("time"), text("tenant_id"), text("action"), text("outcome"), redact(_json(dict(record)))
