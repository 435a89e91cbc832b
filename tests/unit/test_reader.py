"""The mailbox census reads ($batch of mailboxSettings) against a small fake $batch endpoint.

The fake stands in for Graph's `$batch` answer (one response per request, in any order); everything above
it, the chunking, the concurrency limit, the per-item retries and the classification, is the real reader.
The same paths run end to end over the SDK in tests/integration/test_failure_paths.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from auditor.graph.reader import BATCH_LIMIT, MAILBOX_BATCHES_IN_FLIGHT, GraphReader, MailboxAnswer

Answer = Callable[[str, int], dict[str, Any] | None]  # (user id, times asked) -> batch item (None: left out)


class FakeBatchReader(GraphReader):
    def __init__(self, answer: Answer, *, delay: float = 0.0) -> None:
        session: Any = SimpleNamespace(client=None, settings=SimpleNamespace(client_id="app"))
        super().__init__(session, "Contoso (t1)")
        self.answer = answer
        self.delay = delay
        self.asked: list[tuple[float, str]] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.in_flight = self.most_in_flight = 0

    async def batch(self, items: list[dict[str, Any]], permission: str) -> dict[str, dict[str, Any]]:
        assert permission == "MailboxSettings.Read"
        self.batches.append(items)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            responses = {}
            for item in items:
                assert item["method"] == "GET" and item["url"].endswith(
                    "/mailboxSettings?$select=userPurpose"
                )
                uid = item["url"].split("/")[2]
                times = sum(1 for _, asked in self.asked if asked == uid)
                self.asked.append((time.monotonic(), uid))
                body = self.answer(uid, times)
                if body is not None:
                    responses[str(item["id"])] = {"id": item["id"], **body}
            return responses
        finally:
            self.in_flight -= 1

    def times_asked(self, uid: str) -> list[float]:
        return [at for at, asked in self.asked if asked == uid]


def ok(purpose: Any) -> dict[str, Any]:
    return {"status": 200, "body": {"userPurpose": purpose}}


def error(status: int, code: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"status": status, "headers": headers or {}, "body": {"error": {"code": code, "message": "x"}}}


async def purposes(
    answer: Answer, users: list[str], **options: Any
) -> tuple[dict[str, MailboxAnswer], FakeBatchReader]:
    reader = FakeBatchReader(answer, **options)
    return await reader.mailbox_purposes(users), reader


async def test_answers_are_classified() -> None:
    table = {
        "shared": ok("shared"),
        "room-old-shape": ok({"value": "room"}),  # an older documented shape
        "blank": ok(None),
        "gone": error(404, "MailboxNotEnabledForRESTAPI"),
        "denied": error(403, "ErrorAccessDenied"),
        "bad": {"status": 400},
    }
    answers, reader = await purposes(lambda uid, _: table[uid], list(table))
    assert answers["shared"] == MailboxAnswer("shared")
    assert answers["room-old-shape"] == MailboxAnswer("room")
    assert answers["blank"] == MailboxAnswer("unknown")
    assert answers["gone"] == MailboxAnswer(None, no_mailbox=True, status=404)
    assert answers["denied"] == MailboxAnswer(None, failure="403 ErrorAccessDenied", status=403)
    assert answers["bad"] == MailboxAnswer(None, failure="400", status=400)
    assert len(reader.asked) == len(table), "none of these is asked twice"


async def test_a_throttled_item_is_asked_again_after_its_own_retry_after() -> None:
    def answer(uid: str, times: int) -> dict[str, Any]:
        if uid == "busy" and times == 0:
            return error(429, "ApplicationThrottled", {"Retry-After": "1"})
        return ok("user")

    answers, reader = await purposes(answer, ["busy", "calm"])
    assert answers == {"busy": MailboxAnswer("user"), "calm": MailboxAnswer("user")}
    first, second = reader.times_asked("busy")
    assert second - first >= 0.95, "not before its Retry-After"
    assert len(reader.times_asked("calm")) == 1, "only the throttled item goes again"


async def test_a_5xx_item_is_asked_again_after_a_back_off() -> None:
    def answer(uid: str, times: int) -> dict[str, Any]:
        return error(503, "ServiceUnavailable") if times == 0 else ok("shared")

    answers, reader = await purposes(answer, ["u1"])
    assert answers == {"u1": MailboxAnswer("shared")}
    first, second = reader.times_asked("u1")
    assert second - first >= 0.2


async def test_an_item_missing_from_the_answer_is_asked_again() -> None:
    answers, reader = await purposes(
        lambda uid, times: ok("user") if times or uid != "lost" else None, ["lost", "u2"]
    )
    assert answers == {"lost": MailboxAnswer("user"), "u2": MailboxAnswer("user")}
    assert len(reader.times_asked("lost")) == 2


async def test_users_go_twenty_to_a_batch_at_most_four_batches_at_a_time() -> None:
    users = [f"u{i}" for i in range(5 * BATCH_LIMIT + 3)]
    answers, reader = await purposes(lambda uid, _: ok("user"), users, delay=0.05)
    assert set(answers) == set(users)
    assert sorted(len(b) for b in reader.batches) == [3] + [BATCH_LIMIT] * 5
    assert reader.most_in_flight == MAILBOX_BATCHES_IN_FLIGHT
    for batch in reader.batches:
        assert [item["id"] for item in batch] == [str(i) for i in range(len(batch))]


async def test_no_users_no_requests() -> None:
    answers, reader = await purposes(lambda uid, _: ok("user"), [])
    assert answers == {} and reader.batches == []
