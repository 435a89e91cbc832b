"""The incremental census's pure logic: what is re-read when, how a delta round is applied, how a stored
census is encoded and what counts as damaged. Table-driven; no network."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import pytest

from auditor.census import (
    CENSUS_FORMAT,
    CensusBook,
    CensusDamaged,
    Entry,
    StoredCensus,
    apply_delta,
    decode,
    encode,
    plan_rereads,
)
from auditor.errors import GraphError
from auditor.graph.reader import MailboxAnswer

NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
USER = MailboxAnswer(purpose="user")


def entry(days_old: float | None, *, mail: bool = True) -> Entry:
    return Entry(
        user={"id": "x", "mail": "x@example.test" if mail else None},
        answer=USER if days_old is not None else None,
        classified_at=NOW - timedelta(days=days_old) if days_old is not None else None,
    )


@pytest.mark.parametrize(
    ("ages", "max_age", "expected"),
    [
        # Night after a full read: nothing is old enough, not even for spreading.
        ({"a": 1, "b": 1, "c": 1}, 7, []),
        # Spreading: ceil(3/7) = 1 extra, the oldest first, only from 2 days old.
        ({"a": 2, "b": 3, "c": 1}, 7, ["b"]),
        # Due (>= max_age) are all read, however many; spreading only fills up to the share.
        ({"a": 7, "b": 8, "c": 6}, 7, ["a", "b"]),
        # A night run a little earlier than the day before still counts as a whole day (2 h slack).
        ({"a": 6.95, "b": 1}, 7, ["a"]),
        # Not classified (a failure last night, or new without an answer): always due.
        ({"a": None, "b": 1}, 7, ["a"]),
        # max_age_days = 0: every mailbox every night.
        ({"a": 0, "b": 0}, 0, ["a", "b"]),
        # max_age_days = 1: everything a day old is due.
        ({"a": 1, "b": 0.5}, 1, ["a"]),
    ],
)
def test_plan_rereads(ages: dict[str, float | None], max_age: int, expected: list[str]) -> None:
    entries = {uid: entry(age) for uid, age in ages.items()}
    assert plan_rereads(entries, NOW, max_age) == expected


def test_users_without_mail_are_never_reread() -> None:
    entries = {"a": entry(30, mail=False), "b": entry(30)}
    assert plan_rereads(entries, NOW, 7) == ["b"]


def test_spread_rereads_keep_every_mailbox_within_max_age_and_no_night_full() -> None:
    """Thirty nights of an unchanged 700-mailbox tenant after a full read: every classification stays
    within max_age, the night after the full read reads nothing, and the nightly load settles near M/7."""
    max_age = 7
    start = NOW
    entries = {f"u{i:03d}": Entry({"id": f"u{i:03d}", "mail": "m"}, USER, start) for i in range(700)}
    reads = []
    for night in range(1, 31):
        now = start + timedelta(days=night)
        chosen = plan_rereads(entries, now, max_age)
        reads.append(len(chosen))
        for uid in chosen:
            entries[uid].classified_at = now
        assert all((now - e.classified_at).days <= max_age for e in entries.values() if e.classified_at)
    assert reads[0] == 0
    assert max(reads) < 700
    assert max(reads[14:]) <= 700 // max_age + 1  # settled: about a seventh per night


def test_apply_delta_adds_changes_and_removes() -> None:
    entries = {
        "a": Entry({"id": "a", "mail": "a@x", "displayName": "A"}, USER, NOW),
        "b": Entry({"id": "b", "mail": "b@x"}, USER, NOW),
        "c": Entry({"id": "c", "mail": "c@x"}, USER, NOW),
    }
    changed = apply_delta(
        entries,
        [
            {"id": "a", "displayName": "A2"},  # return=minimal style: only what changed
            {"id": "b", "@removed": {"reason": "changed"}},
            {"id": "d", "mail": "d@x", "displayName": "D"},
            {"id": "c", "@removed": {"reason": "deleted"}},
        ],
    )
    assert changed == {"a", "d"}
    assert set(entries) == {"a", "d"}
    assert entries["a"].user == {"id": "a", "mail": "a@x", "displayName": "A2"}
    assert entries["a"].answer == USER  # kept until re-read (the caller re-reads changed users)


def test_a_delta_entry_without_id_is_an_error_not_a_skip() -> None:
    with pytest.raises(GraphError):
        apply_delta({}, [{"displayName": "nobody"}])


def test_encode_decode_round_trip() -> None:
    failure = MailboxAnswer(purpose=None, failure="503 after 6 attempts", status=503)
    hybrid = MailboxAnswer(
        purpose=None, no_mailbox=True, status=404, code="MailboxNotEnabledForRESTAPI", hybrid_kind=True
    )
    census = StoredCensus(
        "https://graph.example/v1.0/users/delta?$deltatoken=abc",
        NOW,
        ("id", "mail"),
        {
            "a": Entry({"id": "a", "mail": "a@x"}, USER, NOW),
            "b": Entry({"id": "b", "mail": "b@x"}, failure, None),
            "c": Entry({"id": "c", "mail": None}),
            "d": Entry({"id": "d", "mail": "d@x"}, hybrid, NOW),
        },
    )
    back = decode(census.delta_link, NOW.isoformat(), encode(census))
    assert back == census


@pytest.mark.parametrize(
    "blob",
    [
        b"not zlib",
        zlib.compress(b"not json"),
        zlib.compress(b'{"fields": ["id"]}'),
        zlib.compress(b'{"fields": ["id"], "users": [[{"mail": "no id"}, null, null]]}'),
        zlib.compress(b'{"fields": ["id"], "users": [[{"id": "a"}, null, "yesterday"]]}'),
        zlib.compress(b'{"fields": ["id"], "users": [[{"id": "a"}]]}'),
    ],
)
def test_damaged_census_is_refused(blob: bytes) -> None:
    with pytest.raises(CensusDamaged):
        decode("https://graph.example/v1.0/users/delta?$deltatoken=abc", NOW.isoformat(), blob)


class MemoryStore:
    def __init__(self, row: tuple[int, str, str, bytes] | None) -> None:
        self.row = row

    def load_census(self, tenant_id: str) -> tuple[int, str, str, bytes] | None:
        return self.row

    def save_census(self, tenant_id: str, fmt: int, delta_link: str, full_read_at: str, blob: bytes) -> None:
        self.row = (fmt, delta_link, full_read_at, blob)


def test_book_says_why_a_night_is_a_full_read() -> None:
    fields = ("id", "mail")
    good = StoredCensus("https://g/v1.0/users/delta?$deltatoken=t", NOW, fields, {})
    store = MemoryStore(None)
    book = CensusBook(store)
    assert book.load("t", fields) == (None, "no stored census (first night)")
    book.save("t", good)
    assert book.load("t", fields) == (good, "")
    assert book.load("t", ("id",))[1] == "the stored census holds other user properties"
    assert CensusBook(store, full=True).load("t", fields) == (None, "--full-census")
    assert CensusBook(None, unavailable="history off").load("t", fields) == (None, "history off")
    assert store.row is not None
    store.row = (CENSUS_FORMAT + 1, *store.row[1:])
    assert "format" in book.load("t", fields)[1]
    store.row = (CENSUS_FORMAT, store.row[1], store.row[2], b"junk")
    assert "damaged" in book.load("t", fields)[1]


def test_census_age_goes_in_audit_json_mailboxes_and_back() -> None:
    from auditor.model import MailboxCensus, TenantResult

    result = TenantResult.from_dict(
        {
            "name": "Contoso",
            "tenant_id": "t",
            "status": "compliant",
            "mailboxes": {"shared": 0, "user": 5, "census_age_days": 6.04},
        }
    )
    assert result.mailboxes == MailboxCensus(user=5, age_days=6.04)
    data = result.to_dict()["mailboxes"]
    assert data["census_age_days"] == 6.0 and data["user"] == 5
    full = TenantResult.from_dict(
        {"name": "C", "tenant_id": "t", "status": "compliant", "mailboxes": {"user": 5}}
    )
    assert full.mailboxes is not None and full.mailboxes.age_days is None
    assert "census_age_days" not in full.to_dict()["mailboxes"]
