"""The census table in the history database: migration 2 from a version-1 file, save/load per tenant."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from auditor.census import CENSUS_FORMAT, CensusBook, Entry, StoredCensus
from auditor.graph.reader import MailboxAnswer
from auditor.history.store import MIGRATIONS, SCHEMA_VERSION, HistoryStore

NOW = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


def test_a_version_1_history_is_migrated_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    with HistoryStore.open(path, migrations=MIGRATIONS[:1]) as old:
        old.begin_run(NOW)
    with HistoryStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        assert store.load_census("t") is None
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_census_is_stored_per_tenant_and_replaced(tmp_path: Path) -> None:
    fields = ("id", "mail")
    census = StoredCensus(
        "https://graph.example/v1.0/users/delta?$deltatoken=one",
        NOW,
        fields,
        {"a": Entry({"id": "a", "mail": "a@x"}, MailboxAnswer("shared"), NOW)},
    )
    with HistoryStore.open(tmp_path / "history.sqlite") as store:
        book = CensusBook(store)
        book.save("AAAA-Tenant", census)
        assert book.load("aaaa-tenant", fields) == (census, "")  # tenant ids compare case-insensitively
        assert book.load("other", fields)[0] is None
        census.delta_link = "https://graph.example/v1.0/users/delta?$deltatoken=two"
        book.save("aaaa-tenant", census)
        row = store.load_census("aaaa-tenant")
        assert row is not None and row[0] == CENSUS_FORMAT and row[1].endswith("two")
