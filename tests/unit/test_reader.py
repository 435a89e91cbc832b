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

import pytest

from auditor.errors import DEFAULT_HINTS, ErrorCode
from auditor.graph.reader import (
    BATCH_LIMIT,
    MAILBOX_BATCHES_IN_FLIGHT,
    GraphReader,
    MailboxAnswer,
    RetryPolicy,
    _network_error,
    translate_auth_error,
)

Answer = Callable[[str, int], dict[str, Any] | None]  # (user id, times asked) -> batch item (None: left out)


class FakeBatchReader(GraphReader):
    def __init__(self, answer: Answer, *, delay: float = 0.0, policy: RetryPolicy | None = None) -> None:
        session: Any = SimpleNamespace(client=None, settings=SimpleNamespace(client_id="app"))
        super().__init__(session, "Contoso (t1)", policy=policy)
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
                assert item["method"] == "GET" and item["url"].endswith("/mailboxSettings/userPurpose")
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
    """GET /users/{id}/mailboxSettings/userPurpose answers {"value": ...} (issue 10)."""
    return {"status": 200, "body": {"value": purpose}}


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
        "room-old-shape": {"status": 200, "body": {"userPurpose": {"value": "room"}}},  # an older shape
        "blank": ok(None),
        "gone": error(404, "MailboxNotEnabledForRESTAPI"),
        "denied": error(403, "ErrorAccessDenied"),
        "bad": {"status": 400},
    }
    answers, reader = await purposes(lambda uid, _: table[uid], list(table))
    assert answers["shared"] == MailboxAnswer("shared")
    assert answers["room-old-shape"] == MailboxAnswer("room")
    assert answers["blank"] == MailboxAnswer("unknown")
    assert answers["gone"] == MailboxAnswer(
        None, no_mailbox=True, status=404, code="MailboxNotEnabledForRESTAPI", hybrid_kind=True
    )
    assert answers["denied"] == MailboxAnswer(
        None, failure="403 ErrorAccessDenied", status=403, code="ErrorAccessDenied"
    )
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


async def test_a_5xx_item_is_asked_again_after_a_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # full-jitter back-off draws uniform(0, ceiling): pinned to the ceiling (0.5 s), so "none" shows
    monkeypatch.setattr("auditor.graph.reader.random.uniform", lambda low, high: high)

    def answer(uid: str, times: int) -> dict[str, Any]:
        return error(503, "ServiceUnavailable") if times == 0 else ok("shared")

    answers, reader = await purposes(answer, ["u1"])
    assert answers == {"u1": MailboxAnswer("shared")}
    first, second = reader.times_asked("u1")
    assert second - first >= 0.45


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


# --- sign-in and network failures, as the administrator reads them ----------------------------------------


@pytest.mark.parametrize(
    ("aadsts", "hint"),
    [
        ("7000215", "The client secret is wrong or has expired: create a new client secret for app c1"),
        ("7000222", "The client secret has expired: create a new client secret for app c1."),
        (
            "700016",
            "App c1 is not known in tenant Contoso (t1): an administrator of that tenant must grant admin consent "
            "to it (https://login.microsoftonline.com/t1/adminconsent?client_id=c1)",
        ),
        ("90002", "Tenant t1 does not exist in this cloud"),
        ("700027", "The certificate is not registered on app c1"),
        ("700024", "check this machine's clock"),
        ("70021", "No federated credential on app c1 matches this workload identity"),
    ],
)
def test_sign_in_failures_carry_the_fix_for_their_aadsts_code(aadsts: str, hint: str) -> None:
    error = translate_auth_error(
        Exception(f"Microsoft Entra ID error '(invalid_client) AADSTS{aadsts}: Something. Trace ID: abc'"),
        "c1",
        "Contoso (t1)",
        "t1",
    )
    assert error.code is ErrorCode.AUTH_FAILED
    assert hint in error.hint
    assert (
        error.message == f"Sign-in to tenant Contoso (t1) failed: (invalid_client) AADSTS{aadsts}: Something."
    )


def test_an_unknown_sign_in_failure_gets_the_general_advice_and_is_redacted() -> None:
    error = translate_auth_error(Exception("boom client_secret=hunter2"), "c1", "Contoso (t1)")
    assert error.hint == DEFAULT_HINTS[ErrorCode.AUTH_FAILED] and "hunter2" not in error.message
    with_tenant_label = translate_auth_error(Exception("AADSTS700016: x"), "c1", "Contoso (t1)")
    assert "https://login.microsoftonline.com/Contoso (t1)/adminconsent" in with_tenant_label.hint


def test_a_certificate_error_says_how_to_trust_the_endpoint() -> None:
    error = _network_error(Exception("[SSL: CERTIFICATE_VERIFY_FAILED] self-signed"), "Contoso (t1)")
    assert error.code is ErrorCode.NETWORK_ERROR
    assert error.message.startswith(
        "Could not reach Microsoft Graph for tenant Contoso (t1): [SSL: CERTIFICATE"
    )
    assert "set ca_bundle in the config (or SSL_CERT_FILE)" in error.hint
    plain = _network_error(ConnectionResetError(), "Contoso (t1)")
    assert plain.hint == DEFAULT_HINTS[ErrorCode.NETWORK_ERROR]
    assert plain.message.endswith(": ConnectionResetError")


async def test_an_item_that_stays_throttled_is_reported_never_dropped() -> None:
    def answer(uid: str, times: int) -> dict[str, Any]:
        if uid == "stuck":
            return error(429, "TooManyRequests", {"Retry-After": "0"})
        return ok("user")

    # A 429 with Retry-After is pacing, not a failure: only the tenant's time (here 1 s) ends it.
    answers, reader = await purposes(answer, ["stuck", "fine"], policy=RetryPolicy(budget_seconds=1.0))
    assert answers["fine"] == MailboxAnswer("user")
    stuck = answers["stuck"]
    assert stuck.purpose is None and not stuck.no_mailbox
    assert stuck.failure is not None
    assert stuck.failure.startswith("not answered before the tenant's time ran out"), stuck.failure
    assert len(reader.times_asked("stuck")) > 1


def test_a_sign_in_failure_is_read_from_the_sdk_errors_message() -> None:
    class SdkError(Exception):
        message = "AADSTS7000222: The provided client secret keys are expired."

    error = translate_auth_error(SdkError("ClientSecretCredential.get_token failed"), "c1", "Contoso (t1)")
    assert (
        error.message
        == "Sign-in to tenant Contoso (t1) failed: AADSTS7000222: The provided client secret keys are expired."
    )
    assert "create a new client secret for app c1" in error.hint
