"""Incremental nights: each tenant's mailbox census kept in the history, continued with `GET /users/delta`.

Reading every mailbox's purpose every night is most of a night's Graph requests. So a tenant's census
(every user's directory properties, and for users with a mail address the mailbox answer and when it was
read) is stored in the history with the `/users/delta` deltaLink that continues it. The next night:

1. follows the deltaLink: only new, changed and removed (`@removed`) users come back
   (learn.microsoft.com graph/api/user-delta, graph/delta-query-users; graph-api-notes.md §3.8);
2. re-classifies the new and changed users with a mail address, every classification at least
   ``census.max_age_days`` old (a user converted to a shared mailbox changes no directory property, so
   delta never reports it: this is what catches it), and, to spread the weekly re-read over the week
   instead of re-reading everything on the same night, the oldest others at least
   :data:`SPREAD_MIN_AGE_DAYS` days old, up to a nightly share of ``users with mail / max_age_days``
   (see :func:`plan_rereads`);
3. counts the census from the stored users and answers, exactly as a full read counts it
   (:func:`auditor.collect.census_from`), and stores the result with the new deltaLink.

A full read instead (the census's first night, `--full-census`, history off or unreadable, a missing or
damaged stored census, a delta token Graph no longer accepts (410 Gone: resync required), or any failed
delta read) reads `/users` in full and every mailbox, and first asks `/users/delta?$deltatoken=latest`
for a deltaLink ("sync from now", documented for Entra ID users): taken before the users are read, so a
change made during the read comes again next night rather than being missed. An error is never taken for
"no change": a delta read that fails makes the night a full read, and a full read that fails fails the
section. Classifications that failed (after retries) are stored as not classified, so they are read again
the next night instead of being carried forward.

Requests (U users, M with mail, D delta entries, R re-read mailboxes): full night ceil(U/999) users pages +
1 latest-token + ceil(M/20) mailbox $batches; incremental night ceil(D/200)+1 delta pages (1 with no
change) + ceil(R/20) $batches.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from auditor.errors import ErrorCode, GraphError
from auditor.graph.reader import MailboxAnswer, UsersDelta

log = logging.getLogger(__name__)

CENSUS_FORMAT: Final = 1
# The spreading re-reads never take a classification younger than this: the night after a full read
# sends no mailbox request for an unchanged tenant.
SPREAD_MIN_AGE_DAYS: Final = 2
# Nights are not exactly 24 h apart (a scheduler's start time drifts): an age within this of a whole
# number of days counts as that many days.
AGE_SLACK: Final = timedelta(hours=2)


class CensusReader(Protocol):
    """What the census needs from a GraphReader."""

    async def users(self, select: list[str]) -> list[dict[str, Any]]: ...

    async def users_delta(
        self, select: list[str], delta_link: str | None = None, *, latest: bool = False
    ) -> UsersDelta: ...

    async def mailbox_purposes(self, user_ids: Iterable[str]) -> dict[str, MailboxAnswer]: ...


class CensusStore(Protocol):
    """Where stored censuses live (auditor.history.HistoryStore)."""

    def load_census(self, tenant_id: str) -> tuple[int, str, str, bytes] | None: ...

    def save_census(
        self, tenant_id: str, fmt: int, delta_link: str, full_read_at: str, blob: bytes
    ) -> None: ...


class CensusDamaged(ValueError):
    """A stored census that cannot be used (unknown format, undecodable, inconsistent)."""


@dataclass
class Entry:
    """One user as the census holds them: directory properties, and the mailbox answer when read."""

    user: dict[str, Any]
    answer: MailboxAnswer | None = None
    classified_at: datetime | None = None  # None: not (successfully) classified: read again next night


@dataclass
class StoredCensus:
    """A tenant's census and the deltaLink that continues it."""

    delta_link: str
    full_read_at: datetime
    fields: tuple[str, ...]
    entries: dict[str, Entry] = field(default_factory=dict)


@dataclass(frozen=True)
class CensusRead:
    """What one night's census read produced, for :func:`auditor.collect.census_from`."""

    users: list[dict[str, Any]]
    answers: dict[str, MailboxAnswer]
    incremental: bool
    age_days: float | None  # incremental only: the oldest classification relied on, in days
    full_reason: str = ""  # why the night was a full read ("" when incremental)
    reread: int = 0  # mailboxes read this night


# --- encoding -------------------------------------------------------------------------------------------


def _answer_to_json(answer: MailboxAnswer) -> list[Any]:
    return [answer.purpose, answer.no_mailbox, answer.failure, answer.status, answer.code, answer.hybrid_kind]


def _answer_from_json(data: Any, cache: dict[tuple[Any, ...], MailboxAnswer]) -> MailboxAnswer:
    key = tuple(data)
    answer = cache.get(key)
    if answer is None:  # a census holds a handful of distinct answers: each is built once
        purpose, no_mailbox, failure, status, code, hybrid = key
        answer = cache[key] = MailboxAnswer(
            purpose=None if purpose is None else str(purpose),
            no_mailbox=bool(no_mailbox),
            failure=None if failure is None else str(failure),
            status=int(status),
            code=None if code is None else str(code),
            hybrid_kind=bool(hybrid),
        )
    return answer


def encode(census: StoredCensus) -> bytes:
    """The stored census as compressed JSON (the deltaLink and full-read time are stored beside it);
    classification times as POSIX seconds."""
    # A census holds a handful of distinct answers and classification times: each is encoded once.
    answers: dict[MailboxAnswer, list[Any]] = {}
    times: dict[datetime, float] = {}
    users = []
    for entry in census.entries.values():
        answer, classified = entry.answer, entry.classified_at
        if answer is not None and answer not in answers:
            answers[answer] = _answer_to_json(answer)
        if classified is not None and classified not in times:
            times[classified] = classified.timestamp()
        users.append(
            [
                entry.user,
                answers[answer] if answer is not None else None,
                times[classified] if classified is not None else None,
            ]
        )
    return zlib.compress(json.dumps({"fields": list(census.fields), "users": users}).encode(), 1)


def decode(delta_link: str, full_read_at: str, blob: bytes) -> StoredCensus:
    """Inverse of :func:`encode`; raises :class:`CensusDamaged` for anything it cannot trust."""
    try:
        data = json.loads(zlib.decompress(blob))
        fields = tuple(str(f) for f in data["fields"])
        entries: dict[str, Entry] = {}
        answers: dict[tuple[Any, ...], MailboxAnswer] = {}
        times: dict[float, datetime] = {}
        for user, answer, classified in data["users"]:
            if not isinstance(user, dict) or not user.get("id"):
                raise CensusDamaged("a user without an id")
            when = None
            if classified is not None:
                when = times.get(classified)
                if when is None:
                    when = times[classified] = datetime.fromtimestamp(float(classified), UTC)
            entries[str(user["id"])] = Entry(
                user=user,
                answer=_answer_from_json(answer, answers) if answer is not None else None,
                classified_at=when,
            )
        return StoredCensus(delta_link, _aware(datetime.fromisoformat(full_read_at)), fields, entries)
    except CensusDamaged:
        raise
    except (ValueError, TypeError, KeyError, OverflowError, zlib.error, json.JSONDecodeError) as exc:
        raise CensusDamaged(f"{type(exc).__name__}: {exc}") from exc


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# --- what to re-read -------------------------------------------------------------------------------------


def age_days(classified_at: datetime, now: datetime) -> float:
    """Age of a classification in days, rounded up to the next whole day within :data:`AGE_SLACK`."""
    return (now - classified_at + AGE_SLACK) / timedelta(days=1)


def plan_rereads(entries: Mapping[str, Entry], now: datetime, max_age_days: int) -> list[str]:
    """The users (ids, oldest first) whose mailbox is re-read tonight although the directory says nothing
    changed: every user with mail not yet classified or classified at least ``max_age_days`` ago, plus
    (spreading) the oldest others at least :data:`SPREAD_MIN_AGE_DAYS` old up to ``ceil(M/max_age_days)``
    in all, M being the users with mail."""
    with_mail = [(uid, e) for uid, e in entries.items() if e.user.get("mail")]
    if max_age_days <= 0:
        return [uid for uid, _ in with_mail]
    due: list[str] = []
    candidates: list[tuple[float, str]] = []
    for uid, entry in with_mail:
        if entry.classified_at is None:
            due.append(uid)
            continue
        age = age_days(entry.classified_at, now)
        if age >= max_age_days:
            due.append(uid)
        elif age >= min(SPREAD_MIN_AGE_DAYS, max_age_days):
            candidates.append((age, uid))
    share = math.ceil(len(with_mail) / max_age_days)
    candidates.sort(key=lambda pair: (-pair[0], pair[1]))
    extra = [uid for _, uid in candidates[: max(0, share - len(due))]]
    return due + extra


def apply_delta(entries: dict[str, Entry], items: Iterable[Mapping[str, Any]]) -> set[str]:
    """Apply a delta round to the stored entries; returns the ids of new or changed users (removed users
    are dropped). A changed user's returned properties replace the stored ones (with `Prefer:
    return=minimal` only changed ones come back; without it, every selected one: both merge right)."""
    changed: set[str] = set()
    for item in items:
        uid = str(item.get("id") or "")
        if not uid:
            raise GraphError("a users delta entry without an id", code=ErrorCode.GRAPH_ERROR)
        if "@removed" in item:
            entries.pop(uid, None)
            changed.discard(uid)
            continue
        entry = entries.get(uid)
        properties = {k: v for k, v in item.items() if not k.startswith("@")}
        if entry is None:
            entries[uid] = Entry(user=properties)
        else:
            entry.user = {**entry.user, **properties}
        changed.add(uid)
    return changed


# --- the night --------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CensusBook:
    """The run's access to stored censuses. ``store`` None: history off or unusable (every night full)."""

    store: CensusStore | None
    max_age_days: int = 7
    full: bool = False  # --full-census
    clock: Callable[[], datetime] = _now
    unavailable: str = "history is not available"

    def load(self, tenant_id: str, fields: tuple[str, ...]) -> tuple[StoredCensus | None, str]:
        """The tenant's stored census, or None and why the night is a full read."""
        if self.full:
            return None, "--full-census"
        if self.store is None:
            return None, self.unavailable
        try:
            row = self.store.load_census(tenant_id)
        except sqlite3.Error as exc:
            return None, f"the stored census could not be read ({exc})"
        if row is None:
            return None, "no stored census (first night)"
        fmt, link, full_read_at, blob = row
        if fmt != CENSUS_FORMAT:
            return None, f"the stored census has format {fmt}, this version reads {CENSUS_FORMAT}"
        try:
            stored = decode(link, full_read_at, blob)
        except CensusDamaged as exc:
            return None, f"the stored census is damaged ({exc})"
        if stored.fields != fields:
            return None, "the stored census holds other user properties"
        return stored, ""

    def save(self, tenant_id: str, census: StoredCensus) -> None:
        """Store a census; a failure only costs the next night its increment (logged)."""
        if self.store is None:
            return
        try:
            self.store.save_census(
                tenant_id, CENSUS_FORMAT, census.delta_link, census.full_read_at.isoformat(), encode(census)
            )
        except sqlite3.Error as exc:
            log.warning(
                "The census of tenant %s could not be stored (%s); the next night reads it in full",
                tenant_id,
                exc,
            )


async def read_census(
    reader: CensusReader, book: CensusBook, tenant_id: str, fields: list[str], label: str
) -> CensusRead:
    """This night's users and mailbox answers, incrementally when the stored census allows it."""
    now = book.clock()
    stored, reason = book.load(tenant_id, tuple(fields))
    delta: UsersDelta | None = None
    if stored is not None:
        try:
            delta = await reader.users_delta(fields, stored.delta_link)
        except GraphError as exc:
            if exc.code is ErrorCode.AUTH_FAILED:
                raise
            if exc.status == 410:
                reason = "Graph no longer accepts the stored delta token (410 Gone: resync required)"
            else:
                reason = f"the users delta could not be read ({exc.code.value}: {exc.message})"
            log.warning("%s: %s; reading the census in full", label, reason, extra={"event": "census_full"})
            stored = None
    changed: set[str] | None = None
    if stored is not None and delta is not None:
        try:
            changed = apply_delta(stored.entries, delta.items)
        except GraphError as exc:
            reason = f"the users delta could not be applied ({exc.message})"
            log.warning("%s: %s; reading the census in full", label, reason, extra={"event": "census_full"})
    if stored is None or delta is None or changed is None:
        return await _full_read(reader, book, tenant_id, fields, label, now, reason)
    entries = stored.entries
    to_read = [uid for uid in changed if entries[uid].user.get("mail")]
    chosen = set(to_read)
    to_read += [uid for uid in plan_rereads(entries, now, book.max_age_days) if uid not in chosen]
    answers = await reader.mailbox_purposes(to_read) if to_read else {}
    for uid in to_read:
        _classify(entries[uid], answers.get(uid), now)
    for entry in entries.values():
        if not entry.user.get("mail"):  # a mail address removed: nothing left to classify
            entry.answer, entry.classified_at = None, None
    ages = [age_days(e.classified_at, now) for e in entries.values() if e.classified_at is not None]
    oldest = max(0.0, (max(ages) if ages else 0.0) - AGE_SLACK / timedelta(days=1))
    book.save(tenant_id, StoredCensus(delta.delta_link, stored.full_read_at, tuple(fields), entries))
    log.info(
        "%s: incremental census, %d change(s) from the users delta, %d mailbox(es) read",
        label,
        len(delta.items),
        len(to_read),
        extra={"event": "census_incremental"},
    )
    return CensusRead(*_census_inputs(entries), incremental=True, age_days=oldest, reread=len(to_read))


async def _full_read(
    reader: CensusReader,
    book: CensusBook,
    tenant_id: str,
    fields: list[str],
    label: str,
    now: datetime,
    reason: str,
) -> CensusRead:
    log.info("%s: full census read (%s)", label, reason or "no stored census", extra={"event": "census_full"})
    link: str | None = None
    if book.store is not None:
        try:
            # Before the users are read: a change made during the read comes again next night.
            link = (await reader.users_delta(fields, latest=True)).delta_link
        except GraphError as exc:
            if exc.code is ErrorCode.AUTH_FAILED:
                raise
            log.warning(
                "%s: no users delta link (%s: %s); the next night reads the census in full too",
                label,
                exc.code.value,
                exc.message,
            )
    users = await reader.users(fields)
    with_mail = [str(u["id"]) for u in users if u.get("mail")]
    answers = await reader.mailbox_purposes(with_mail)
    if link is not None:
        entries: dict[str, Entry] = {}
        for user in users:
            entry = entries[str(user["id"])] = Entry(user=dict(user))
            if user.get("mail"):
                _classify(entry, answers.get(str(user["id"])), now)
        book.save(tenant_id, StoredCensus(link, now, tuple(fields), entries))
    return CensusRead(
        users, answers, incremental=False, age_days=None, full_reason=reason, reread=len(with_mail)
    )


def _classify(entry: Entry, answer: MailboxAnswer | None, now: datetime) -> None:
    if answer is None:
        answer = MailboxAnswer(purpose=None, failure="missing from the mailbox answers")
    entry.answer = answer
    # A failure is not a classification: it is read again the next night, never carried forward.
    entry.classified_at = now if answer.failure is None else None


def _census_inputs(entries: Mapping[str, Entry]) -> tuple[list[dict[str, Any]], dict[str, MailboxAnswer]]:
    users = [e.user for e in entries.values()]
    answers = {uid: e.answer for uid, e in entries.items() if e.answer is not None and e.user.get("mail")}
    return users, answers
