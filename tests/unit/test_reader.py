"""The mailbox census reads ($batch of mailboxSettings) against a small fake $batch endpoint.

The fake stands in for Graph's `$batch` answer (one response per request, in any order); everything above
it, the chunking, the concurrency limit, the per-item retries and the classification, is the real reader.
The same paths run end to end over the SDK in tests/integration/test_failure_paths.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient

from auditor.deadline import tenant_deadline
from auditor.errors import DEFAULT_HINTS, ErrorCode, GraphError
from auditor.graph.client import odata_error, open_session
from auditor.graph.reader import (
    BATCH_LIMIT,
    BATCH_REFUSALS_TOLERATED,
    MAILBOX_BATCHES_IN_FLIGHT,
    GraphReader,
    MailboxAnswer,
    RetryPolicy,
    _network_error,
    classify_mailbox_item,
    translate_auth_error,
)
from auditor.simulator import FaultRule, GraphSimulator
from auditor.simulator.graph import GraphService
from tests.conftest import DEMO_TENANTS, graph_session, settings_for

Answer = Callable[[str, int], dict[str, Any] | None]  # (user id, times asked) -> batch item (None: left out)


class FakeBatchReader(GraphReader):
    def __init__(self, answer: Answer, *, delay: float = 0.0, policy: RetryPolicy | None = None) -> None:
        session: Any = SimpleNamespace(client=None, settings=SimpleNamespace(client_id="app"))
        # A tenant's time of 5 s (not 600): should an item never be answered, the test fails soon.
        super().__init__(session, "Contoso (t1)", policy=policy or RetryPolicy(budget_seconds=5.0))
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


async def test_the_census_returns_as_soon_as_every_mailbox_is_answered() -> None:
    began = time.monotonic()
    answers, reader = await purposes(lambda uid, times: ok("user"), [f"u{i}" for i in range(45)], delay=0.05)
    assert len(answers) == 45 and len(reader.batches) == 3
    assert time.monotonic() - began < 2.0, "not at the end of the tenant's time (5 s here)"


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


async def test_an_item_waiting_for_its_retry_after_costs_no_cpu_meanwhile() -> None:
    # A thousand tenants are audited on a couple of cores: a wait is a sleep, never a loop that polls.
    def answer(uid: str, times: int) -> dict[str, Any]:
        return error(429, "ApplicationThrottled", {"Retry-After": "1"}) if times == 0 else ok("user")

    cpu = time.process_time()
    answers, reader = await purposes(answer, ["busy"])
    assert answers == {"busy": MailboxAnswer("user")} and len(reader.times_asked("busy")) == 2
    assert time.process_time() - cpu < 0.4, "a second's wait took that much CPU"


async def test_mailboxes_are_asked_in_the_order_they_were_listed() -> None:
    users = ["zeta", "alpha", "mike", "bravo"]
    answers, reader = await purposes(lambda uid, times: ok("user"), [*users, "alpha"])
    assert [uid for _, uid in reader.asked] == users, "in the order listed, each once"
    assert list(answers) == users


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
    assert len(reader.times_asked("u2")) == 1, "the answers after the missing one are kept"


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
    assert error.hint == (
        "The endpoint's TLS certificate is not trusted: set ca_bundle in the config (or SSL_CERT_FILE) to the "
        "CA that issued it."
    )
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


# --- the retry policy of one request (`send`), through its `via` sender ----------------------------------
#
# `send(build, permission, via=...)` is how the lean `$batch` path sends; here `via` answers each try from a
# script of what Graph or the network did (real SDK exceptions: ODataError as the adapter raises it, httpx
# and azure-core errors). The same paths run end to end in tests/integration/test_failure_paths.py; these
# pin the timing and the wording that a log or a report reader sees.

GRAPH = "https://graph.example/v1.0"
# The default policy's times, shortened: a request that is wrongly retried fails its test in seconds.
QUICK = RetryPolicy(budget_seconds=15.0, patience_seconds=5.0)
PERMISSION = "User.Read.All"


class Scripted:
    """Answers try number n with script[n] (the last one repeats): an exception is raised, else JSON sent."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.at: list[float] = []

    async def __call__(self) -> bytes | None:
        step = self.script[min(len(self.at), len(self.script) - 1)]
        self.at.append(time.monotonic())
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            return await step()  # type: ignore[no-any-return]
        return None if step is None else json.dumps(step).encode()


def graph_answer(
    status: int, code: str = "", retry_after: str | None = None, request_id: str = ""
) -> ODataError:
    """The ODataError the SDK's adapter raises for an error answer."""
    body: dict[str, Any] = {"error": {"code": code, "message": f"{code} says no"}}
    if request_id:
        body["error"]["innerError"] = {"request-id": request_id}
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return odata_error(status, headers, json.dumps(body).encode())


def sign_in_failure(status: int) -> ClientAuthenticationError:
    """What azure-identity raises when the sign-in endpoint answered `status`."""
    return ClientAuthenticationError(
        message=f"token request failed with {status}", response=token_answer(status)
    )


def token_answer(status: int) -> Any:
    """The parts of azure-core's HTTP response that ClientAuthenticationError reads."""
    return SimpleNamespace(status_code=status, reason="", text=lambda encoding=None: "")


def make_reader(policy: RetryPolicy | None = None, *, timeout: float = 5.0) -> GraphReader:
    settings = SimpleNamespace(client_id="app", tenant_id="t1", timeout_seconds=timeout)
    session: Any = SimpleNamespace(client=None, settings=settings, base_url=GRAPH)
    return GraphReader(session, "Contoso (t1)", policy=policy or QUICK)


async def send(reader: GraphReader, sender: Scripted, path: str = "/users?$select=id") -> dict[str, Any]:
    return await reader.send(reader.url_request(path), PERMISSION, via=sender)


@pytest.fixture
def no_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every back-off draw is its floor (0 s), so retries under test do not wait."""
    monkeypatch.setattr("auditor.graph.reader.random.uniform", lambda low, high: low)


async def test_an_answer_is_returned_as_json_and_no_body_as_empty() -> None:
    assert await send(make_reader(), Scripted({"value": [1]})) == {"value": [1]}
    assert await send(make_reader(), Scripted(None)) == {}


@pytest.mark.parametrize(
    ("status", "code", "error_code"),
    [
        (401, "InvalidAuthenticationToken", ErrorCode.PERMISSION_DENIED),
        (403, "Authorization_RequestDenied", ErrorCode.PERMISSION_DENIED),
        (400, "BadRequest", ErrorCode.GRAPH_ERROR),
        (404, "Request_ResourceNotFound", ErrorCode.GRAPH_ERROR),
        (410, "SyncStateNotFound", ErrorCode.GRAPH_ERROR),
    ],
)
async def test_a_refusal_is_not_retried_and_names_what_graph_said(
    status: int, code: str, error_code: ErrorCode
) -> None:
    sender = Scripted(graph_answer(status, code, request_id="req-1"), {"value": []})
    with pytest.raises(GraphError) as info:
        await send(make_reader(), sender)
    error = info.value
    assert len(sender.at) == 1, "a refusal is final"
    assert (error.code, error.status, error.request_id) == (error_code, status, "req-1")
    what = f"Graph answered {status} {code}: {code} says no"
    if error_code is ErrorCode.PERMISSION_DENIED:
        assert error.message == f"{what} (tenant Contoso (t1); needs User.Read.All)"
        assert error.hint.startswith("Grant the Microsoft Graph application permission User.Read.All to ")
        assert error.hint.endswith(
            " to the auditor app (client id app) and have an administrator of tenant Contoso (t1) grant admin "
            "consent, then re-run."
        )
    else:
        assert error.message == what
        assert error.hint == DEFAULT_HINTS[ErrorCode.GRAPH_ERROR]


async def test_a_refusal_without_a_message_or_request_id_names_the_status() -> None:
    refusal = odata_error(400, {}, b'{"error": {"code": "BadRequest"}}')
    with pytest.raises(GraphError) as info:
        await send(make_reader(), Scripted(refusal))
    assert info.value.message == "Graph answered 400 BadRequest: ODataError (status 400)"
    assert info.value.request_id is None and info.value.status == 400


async def test_a_throttled_answer_without_retry_after_left_to_the_translation_is_throttled() -> None:
    # The reader's own translation, for a 429 that reaches it as a refusal (e.g. through the writer path).
    error = make_reader()._translate_odata(graph_answer(429, "TooManyRequests", request_id="r9"), PERMISSION)
    assert error.code is ErrorCode.THROTTLED and error.status == 429 and error.request_id == "r9"
    assert error.message == "Graph answered 429 TooManyRequests: TooManyRequests says no (still throttled)"


async def test_a_429_with_retry_after_is_pacing_and_uses_up_no_patience() -> None:
    # With no patience at all a failure is given up on at once; a 429 that names a Retry-After is not one.
    sender = Scripted(graph_answer(429, "TooManyRequests", retry_after="0"), {"value": ["ok"]})
    reader = make_reader(RetryPolicy(patience_seconds=0.0))
    assert await send(reader, sender) == {"value": ["ok"]}
    assert len(sender.at) == 2


@pytest.mark.parametrize(
    ("failure", "error_code", "why", "hint"),
    [
        (
            graph_answer(503, "ServiceUnavailable"),
            ErrorCode.GRAPH_ERROR,
            "503 ServiceUnavailable",
            "Microsoft kept failing (503 ServiceUnavailable): check the Microsoft 365 service health page for an "
            "incident and re-run later; if it persists, report it with the request-id from the log.",
        ),
        (graph_answer(500, ""), ErrorCode.GRAPH_ERROR, "500", "Microsoft kept failing (500): "),
        (
            graph_answer(429, "TooManyRequests"),
            ErrorCode.THROTTLED,
            "429 TooManyRequests",
            "Microsoft Graph kept throttling this tenant: re-run later, lower run.concurrency (--concurrency), or raise run.tenant_timeout_seconds.",
        ),
        (
            httpx.ReadTimeout("slow"),
            ErrorCode.TIMEOUT,
            "no answer within 5 s",
            "Microsoft Graph did not answer in time: check the network path to Graph and the Microsoft 365 service health page, then re-run; if the tenant is just slow or large, raise run.tenant_timeout_seconds (and run.request_timeout_seconds).",
        ),
        (TimeoutError(), ErrorCode.TIMEOUT, "no answer within 5 s", "Microsoft Graph did not answer in time"),
        (
            httpx.RemoteProtocolError("closed"),
            ErrorCode.NETWORK_ERROR,
            "connection dropped",
            "Connections to Microsoft Graph or the sign-in endpoint kept failing: check network access, proxy and firewall to both endpoints, then re-run.",
        ),
        (
            httpx.ReadError("reset"),
            ErrorCode.NETWORK_ERROR,
            "connection dropped",
            "Connections to Microsoft Graph",
        ),
        (
            ConnectionResetError(),
            ErrorCode.NETWORK_ERROR,
            "connection dropped",
            "Connections to Microsoft Graph",
        ),
        (
            httpx.WriteError("broken pipe"),
            ErrorCode.NETWORK_ERROR,
            "connection failed (WriteError)",
            "Connections to Microsoft Graph",
        ),
        (
            httpx.ConnectError("refused"),
            ErrorCode.NETWORK_ERROR,
            "could not connect",
            "Connections to Microsoft Graph",
        ),
        (
            ServiceRequestError("no route"),
            ErrorCode.NETWORK_ERROR,
            "could not connect",
            "Connections to Microsoft Graph",
        ),
        (
            ServiceResponseError("dropped"),
            ErrorCode.NETWORK_ERROR,
            "connection failed (ServiceResponseError)",
            "Connections to Microsoft Graph",
        ),
        (
            ServiceResponseTimeoutError("slow"),
            ErrorCode.TIMEOUT,
            "no answer within 5 s",
            "Microsoft Graph did not answer in time",
        ),
        (
            ServiceRequestTimeoutError("slow"),
            ErrorCode.TIMEOUT,
            "no answer within 5 s",
            "Microsoft Graph did not answer in time",
        ),
        (
            sign_in_failure(503),
            ErrorCode.GRAPH_ERROR,
            "sign-in endpoint answered 503",
            "Microsoft kept failing (sign-in endpoint answered 503)",
        ),
        (
            sign_in_failure(429),
            ErrorCode.THROTTLED,
            "sign-in endpoint answered 429",
            "Microsoft Graph kept throttling",
        ),
    ],
)
async def test_a_failure_that_persists_is_retried_for_the_patience_then_named(
    no_back_off: None, failure: BaseException, error_code: ErrorCode, why: str, hint: str
) -> None:
    sender = Scripted(failure)
    reader = make_reader(RetryPolicy(patience_seconds=0.2, connect_patience_seconds=0.2))
    began = time.monotonic()
    with pytest.raises(GraphError) as info:
        await send(reader, sender)
    error = info.value
    assert time.monotonic() - began >= 0.2 and len(sender.at) > 2, "retried until its patience ran out"
    assert error.code is error_code
    assert error.hint.startswith(hint), error.hint
    assert re.fullmatch(
        rf"Gave up on {GRAPH}/users for tenant Contoso \(t1\) after \d+\.\d s: it kept failing for 0\.2 s; "
        rf"{len(sender.at)} x {re.escape(why)}",
        error.message,
    ), error.message


async def test_an_unreachable_endpoint_is_given_up_on_sooner_than_a_failing_one(no_back_off: None) -> None:
    policy = RetryPolicy(patience_seconds=2.0, connect_patience_seconds=0.1)
    for unreachable in (httpx.ConnectError("refused"), ServiceRequestError("no route to host")):
        began = time.monotonic()
        with pytest.raises(GraphError) as info:
            await send(make_reader(policy), Scripted(unreachable))
        assert time.monotonic() - began < 1.5, "connect patience, not the full patience"
        assert info.value.code is ErrorCode.NETWORK_ERROR and "it kept failing for 2 s" in info.value.message
    # Any other failure gets the full patience.
    policy = RetryPolicy(patience_seconds=0.3, connect_patience_seconds=0.0)
    sender = Scripted(httpx.RemoteProtocolError("closed"))
    began = time.monotonic()
    with pytest.raises(GraphError):
        await send(make_reader(policy), sender)
    assert time.monotonic() - began >= 0.3 and len(sender.at) > 2
    # Once the endpoint has answered, it is reachable: a failed connection then gets the full patience.
    sender = Scripted(graph_answer(503, "ServiceUnavailable"), httpx.ConnectError("refused"))
    began = time.monotonic()
    with pytest.raises(GraphError) as info:
        await send(make_reader(policy), sender)
    assert time.monotonic() - began >= 0.3 and len(sender.at) > 2
    assert "1 x 503 ServiceUnavailable" in info.value.message and " x could not connect" in info.value.message


async def test_no_patience_gives_up_on_a_request_at_its_first_failure() -> None:
    sender = Scripted(graph_answer(503, "ServiceUnavailable"), {"value": []})
    with pytest.raises(GraphError) as info:
        await send(make_reader(RetryPolicy(patience_seconds=0.0)), sender)
    assert len(sender.at) == 1 and "it kept failing for 0 s; 1 x 503 ServiceUnavailable" in info.value.message


async def test_the_failures_are_summed_up_most_frequent_first(no_back_off: None) -> None:
    dropped, refused = httpx.RemoteProtocolError("closed"), httpx.ConnectError("refused")
    sender = Scripted(refused, dropped, dropped, dropped, dropped)
    with pytest.raises(GraphError) as info:
        await send(make_reader(RetryPolicy(patience_seconds=0.1)), sender)
    assert info.value.message.endswith(f"{len(sender.at) - 1} x connection dropped, 1 x could not connect")


async def test_an_untrusted_certificate_is_not_retried() -> None:
    sender = Scripted(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] self-signed certificate"))
    with pytest.raises(GraphError) as info:
        await send(make_reader(), sender)
    assert len(sender.at) == 1
    assert info.value.code is ErrorCode.NETWORK_ERROR
    assert info.value.message.startswith("Could not reach Microsoft Graph for tenant Contoso (t1): [SSL:")
    assert "set ca_bundle in the config" in info.value.hint


async def test_a_refused_sign_in_names_the_tenant_id_in_the_consent_link() -> None:
    failure = ClientAuthenticationError(
        message="AADSTS700016: Application not found.", response=token_answer(400)
    )
    with pytest.raises(GraphError) as info:
        await send(make_reader(), Scripted(failure))
    assert "(https://login.microsoftonline.com/t1/adminconsent?client_id=app)" in info.value.hint


@pytest.mark.parametrize("status", [None, 400, 401])
async def test_a_refused_sign_in_is_auth_failed_at_once(status: int | None) -> None:
    failure = ClientAuthenticationError(
        message="AADSTS7000215: Invalid client secret provided.",
        response=None if status is None else token_answer(status),
    )
    sender = Scripted(failure)
    with pytest.raises(GraphError) as info:
        await send(make_reader(), sender)
    assert len(sender.at) == 1
    assert info.value.code is ErrorCode.AUTH_FAILED
    assert (
        info.value.message
        == "Sign-in to tenant Contoso (t1) failed: AADSTS7000215: Invalid client secret provided."
    )
    assert "create a new client secret for app app" in info.value.hint


@pytest.mark.parametrize(
    ("failures", "ceiling"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (30, 30.0), (10_000, 30.0)],
)
def test_the_back_off_ceiling_doubles_per_failure_up_to_max_delay(
    monkeypatch: pytest.MonkeyPatch, failures: int, ceiling: float
) -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return high

    monkeypatch.setattr("auditor.graph.reader.random.uniform", uniform)
    assert RetryPolicy().backoff(failures) == ceiling
    assert drawn == [(0, ceiling)], "full jitter: drawn from 0 up to the ceiling"


@pytest.mark.parametrize(("failures", "ceiling"), [(29, 0.5), (30, 1.0), (31, 1.0), (10_000, 1.0)])
def test_the_back_off_exponent_stops_at_30(
    monkeypatch: pytest.MonkeyPatch, failures: int, ceiling: float
) -> None:
    # Past 2**30 the ceiling stops growing (it is capped by max_delay long before, with any real base).
    monkeypatch.setattr("auditor.graph.reader.random.uniform", lambda low, high: high)
    assert RetryPolicy(base_delay=2.0**-30, max_delay=1e9).backoff(failures) == ceiling


async def test_each_retry_waits_its_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    ceilings: list[float] = []

    def uniform(low: float, high: float) -> float:
        ceilings.append(high)
        return high / 10

    monkeypatch.setattr("auditor.graph.reader.random.uniform", uniform)
    sender = Scripted(graph_answer(502), graph_answer(502), graph_answer(502), {"value": []})
    assert await send(make_reader(), sender) == {"value": []}
    assert ceilings == [0.5, 1.0, 2.0], "the back-off grows with each failure of the same request"
    gaps = [b - a for a, b in itertools.pairwise(sender.at)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.195


async def test_a_503_with_retry_after_waits_that_long_instead_of_a_back_off(no_back_off: None) -> None:
    sender = Scripted(graph_answer(503, "ServiceUnavailable", retry_after="0.3"), {"value": []})
    await send(make_reader(), sender)
    assert sender.at[1] - sender.at[0] >= 0.28


async def test_a_wait_past_the_tenants_time_is_not_started(monkeypatch: pytest.MonkeyPatch) -> None:
    sender = Scripted(graph_answer(503, "ServiceUnavailable", retry_after="5"), {"value": []})
    began = time.monotonic()
    with pytest.raises(GraphError) as info:
        await send(make_reader(RetryPolicy(budget_seconds=2.0)), sender)
    assert time.monotonic() - began < 1.0 and len(sender.at) == 1
    # The tenant is down for us: TIMEOUT; what kept failing is in the message and the hint.
    assert info.value.code is ErrorCode.TIMEOUT
    assert info.value.message.startswith(f"Gave up on {GRAPH}/users for tenant Contoso (t1) after ")
    assert ": the tenant's time ran out (2 s); 1 x 503 ServiceUnavailable" in info.value.message
    assert info.value.hint.startswith("Microsoft kept failing (503 ServiceUnavailable)")
    # The same with the run's deadline, named by its setting.
    with tenant_deadline(1.5, budget=30), pytest.raises(GraphError) as info:
        await send(make_reader(), Scripted(graph_answer(503, "ServiceUnavailable", retry_after="5")))
    assert ": the tenant's time ran out (run.tenant_timeout_seconds = 30); 1 x 503" in info.value.message
    # Nor a back-off.
    monkeypatch.setattr("auditor.graph.reader.random.uniform", lambda low, high: 20.0)
    with pytest.raises(GraphError) as info:
        await send(make_reader(RetryPolicy(budget_seconds=10.0)), Scripted(httpx.ConnectError("refused")))
    assert info.value.code is ErrorCode.TIMEOUT and "; 1 x could not connect" in info.value.message


async def test_a_request_still_unanswered_at_the_deadline_is_cut_short() -> None:
    async def never() -> bytes:
        await asyncio.sleep(30)
        return b"{}"

    began = time.monotonic()
    with pytest.raises(GraphError) as info:
        await send(make_reader(RetryPolicy(budget_seconds=0.3)), Scripted(never))
    assert time.monotonic() - began < 2
    assert info.value.code is ErrorCode.TIMEOUT
    assert re.fullmatch(
        rf"Gave up on {GRAPH}/users for tenant Contoso \(t1\) after 0\.[34] s: the tenant's time ran out "
        r"\(0\.3 s\); no answer yet",
        info.value.message,
    ), info.value.message


async def test_a_request_with_no_time_left_says_what_the_tenant_went_through(no_back_off: None) -> None:
    reader = make_reader(RetryPolicy(budget_seconds=0.3))
    await send(reader, Scripted(graph_answer(503, "ServiceUnavailable", request_id="r1"), {"value": []}))
    await asyncio.sleep(0.35)
    sender = Scripted({"value": []})
    with pytest.raises(GraphError) as info:
        await send(reader, sender, "/groups")
    assert sender.at == [], "nothing is sent once the tenant's time is over"
    error = info.value
    assert error.code is ErrorCode.TIMEOUT and error.request_id == "r1"
    assert error.message.endswith(
        "the tenant's time ran out (0.3 s); it waited behind the tenant's other requests, which met "
        "1 x 503 ServiceUnavailable"
    )
    assert error.message.startswith(f"Gave up on {GRAPH}/groups for tenant Contoso (t1) after ")
    assert error.hint.startswith("Microsoft kept failing (503 ServiceUnavailable)")


async def test_a_tenant_that_was_only_throttled_is_reported_throttled() -> None:
    reader = make_reader(RetryPolicy(budget_seconds=0.3))
    throttled = graph_answer(429, "TooManyRequests", retry_after="0", request_id="r2")
    await send(reader, Scripted(throttled, throttled, {"value": []}))
    await asyncio.sleep(0.35)
    with pytest.raises(GraphError) as info:
        await send(reader, Scripted({"value": []}))
    assert info.value.code is ErrorCode.THROTTLED and info.value.request_id == "r2"
    assert info.value.message.endswith("which met 2 x 429 with Retry-After (waited out)")
    assert info.value.hint.startswith("Microsoft Graph kept throttling this tenant")


# --- a users delta round, over the SDK against the simulator -------------------------------------------

DELTA_SELECT = ["id", "displayName", "mail"]


async def test_a_users_delta_round_follows_every_page_to_the_delta_link(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GraphService, "DELTA_PAGE", 2)
    tenant = sim.world.tenant(DEMO_TENANTS["contoso"])
    assert tenant is not None and len(tenant.users) > 4
    async with graph_session(sim, "contoso") as session:
        reader = GraphReader(session, "Contoso", policy=QUICK)
        first = await reader.users_delta(DELTA_SELECT)
        assert sorted(u["id"] for u in first.items) == sorted(u.id for u in tenant.users)
        assert all(set(item) == set(DELTA_SELECT) for item in first.items), "only what was selected"
        assert sim.count(route="users.delta") == -(-len(tenant.users) // 2), "one request per page"
        assert first.delta_link.startswith(reader.session.base_url + "/users/delta?$deltatoken=")
        again = await reader.users_delta(DELTA_SELECT, first.delta_link)
        assert again.items == [] and again.delta_link.startswith(reader.session.base_url + "/users/delta?")


async def test_a_users_delta_refused_names_its_permission(sim: GraphSimulator) -> None:
    sim.add_fault_rule(FaultRule(route="users.delta", status=403, code="Authorization_RequestDenied"))
    async with graph_session(sim, "contoso") as session:
        with pytest.raises(GraphError) as info:
            await GraphReader(session, "Contoso", policy=QUICK).users_delta(DELTA_SELECT)
    assert info.value.code is ErrorCode.PERMISSION_DENIED
    assert info.value.message.endswith("(tenant Contoso; needs User.Read.All)")


DELTA_HINT = (
    "Delta links always point back at Graph: check graph_endpoint and any proxy; the next night reads the "
    "census in full."
)


async def test_a_users_delta_link_to_another_host_is_not_followed(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GraphService, "DELTA_PAGE", 2)
    async with graph_session(sim, "contoso") as session:
        reader = GraphReader(session, "Contoso", policy=QUICK)
        with pytest.raises(GraphError) as stored:
            await reader.users_delta(DELTA_SELECT, "https://evil.example/v1.0/users/delta?$deltatoken=abc")
        sim.next_link_origin = "https://evil.example:8443"
        try:
            with pytest.raises(GraphError) as paged:
                await reader.users_delta(DELTA_SELECT)
        finally:
            sim.next_link_origin = None
    assert sim.count(route="users.delta") == 1, "the first page only; no link to another host is followed"
    for error, what, origin in [
        (stored.value, "its stored delta link (@odata.deltaLink)", "https://evil.example:443"),
        (paged.value, "its next page (@odata.nextLink)", "https://evil.example:8443"),
    ]:
        assert error.code is ErrorCode.GRAPH_ERROR
        assert error.message == (
            f"Graph's users delta for tenant Contoso points {what} at another host, {origin}; not followed, "
            "so the access token stays with Graph"
        )
        assert error.hint == DELTA_HINT


class ScriptedDeltaReader(GraphReader):
    """Graph's answers to a users delta round, from a list (one per page); everything else is the reader."""

    def __init__(self, *pages: dict[str, Any]) -> None:
        session: Any = SimpleNamespace(client=None, settings=SimpleNamespace(client_id="app"), base_url=GRAPH)
        super().__init__(session, "Contoso (t1)")
        self.pages = list(pages)
        self.sent: list[tuple[str, str]] = []

    async def send(self, build: Any, permission: str, *, via: Any = None) -> dict[str, Any]:
        self.sent.append((str(build().url), permission))
        return self.pages.pop(0)


async def test_a_users_delta_page_with_neither_link_is_an_error_not_a_short_list() -> None:
    reader = ScriptedDeltaReader(
        {"value": [{"id": "u1"}], "@odata.nextLink": f"{GRAPH}/users/delta?$skiptoken=2"},
        {"value": [{"id": "u2"}]},
    )
    with pytest.raises(GraphError) as info:
        await reader.users_delta(["id"])
    assert info.value.code is ErrorCode.GRAPH_ERROR
    assert info.value.message == (
        "Graph's answer to a users delta query for tenant Contoso (t1) carried neither @odata.nextLink nor "
        "@odata.deltaLink"
    )
    assert reader.sent == [
        (f"{GRAPH}/users/delta?$select=id", "User.Read.All"),
        (f"{GRAPH}/users/delta?$skiptoken=2", "User.Read.All"),
    ]


async def test_a_users_delta_page_without_users_still_leads_on() -> None:
    reader = ScriptedDeltaReader(
        {"@odata.nextLink": f"{GRAPH}/users/delta?$skiptoken=2"},
        {"value": [{"id": "u2"}], "@odata.deltaLink": f"{GRAPH}/users/delta?$deltatoken=9"},
    )
    delta = await reader.users_delta(["id", "mail"], latest=True)
    assert delta.items == [{"id": "u2"}] and delta.delta_link == f"{GRAPH}/users/delta?$deltatoken=9"
    assert reader.sent[0][0] == f"{GRAPH}/users/delta?$select=id,mail&$deltatoken=latest"


# --- one mailbox's answer ----------------------------------------------------------------------------------

PREVIEW = "REST APIs for this mailbox are currently in preview. You can find more information here."


@pytest.mark.parametrize(
    ("status", "body", "answer"),
    [
        (200, {"value": "shared"}, MailboxAnswer("shared")),
        (200, {"value": ""}, MailboxAnswer("unknown")),
        (200, {}, MailboxAnswer("unknown")),
        (200, {"userPurpose": "room"}, MailboxAnswer("room")),  # the whole mailboxSettings object
        (200, {"userPurpose": {"value": "equipment"}}, MailboxAnswer("equipment")),
        (200, {"value": {"value": "linked"}}, MailboxAnswer("linked")),
        (200, {"value": "user", "userPurpose": "shared"}, MailboxAnswer("user")),
        (
            404,
            {"error": {"code": "MailboxNotEnabledForRESTAPI"}},
            MailboxAnswer(
                None, no_mailbox=True, status=404, code="MailboxNotEnabledForRESTAPI", hybrid_kind=True
            ),
        ),
        (
            404,
            {"error": {"code": "mailboxnothostedinexchangeonline"}},
            MailboxAnswer(
                None, no_mailbox=True, status=404, code="mailboxnothostedinexchangeonline", hybrid_kind=True
            ),
        ),
        (
            404,
            {"error": {"code": "ErrorInvalidUser"}},
            MailboxAnswer(None, no_mailbox=True, status=404, code="ErrorInvalidUser"),
        ),
        (404, {}, MailboxAnswer(None, no_mailbox=True, status=404)),
        (
            403,
            {"error": {"code": "ErrorAccessDenied", "message": PREVIEW}},
            MailboxAnswer(
                None, failure="403 ErrorAccessDenied", status=403, code="ErrorAccessDenied", hybrid_kind=True
            ),
        ),
        (
            403,
            {"error": {"code": "ErrorAccessDenied", "message": "Access is denied."}},
            MailboxAnswer(None, failure="403 ErrorAccessDenied", status=403, code="ErrorAccessDenied"),
        ),
        (
            400,
            {"error": {"code": "ErrorAccessDenied", "message": PREVIEW}},
            MailboxAnswer(None, failure="400 ErrorAccessDenied", status=400, code="ErrorAccessDenied"),
        ),
        (400, {"error": "not an object"}, MailboxAnswer(None, failure="400", status=400)),
        (400, {"error": {"code": ""}}, MailboxAnswer(None, failure="400", status=400)),
        (429, {"error": {"code": "TooManyRequests"}}, None),
        (500, {}, None),
        (502, {}, None),
        (503, {}, None),
        (504, {}, None),
        (501, {}, MailboxAnswer(None, failure="501", status=501)),
    ],
)
def test_a_mailbox_answer_is_classified_by_status_code_and_message(
    status: int, body: dict[str, Any], answer: MailboxAnswer | None
) -> None:
    assert classify_mailbox_item(status, body) == answer


def test_the_default_patience_is_what_the_readme_promises() -> None:
    # README "Throttling and failures": two minutes per request, 20 s when the endpoint cannot be reached,
    # and a tenant's time of 600 s (run.tenant_timeout_seconds' default) when no run deadline is set.
    policy = RetryPolicy()
    assert (policy.patience_seconds, policy.connect_patience_seconds, policy.budget_seconds) == (120, 20, 600)


# --- each read over the SDK: what it asks, and the permission a refusal names ------------------------------

PIM = "; Directory.Read.All does not cover PIM)"
Read = Callable[[GraphReader, dict[str, Any]], Any]  # (reader, the vendor's service principal) -> a read
READS: list[tuple[str, str, Read]] = [
    ("organization.list", "Organization.Read.All", lambda r, sp: r.organization()),
    (
        "servicePrincipals.list",
        "Application.Read.All",
        lambda r, sp: r.service_principals(f"appId eq '{sp['appId']}'", ["id", "appId"]),
    ),
    (
        "servicePrincipals.getByAppId",
        "Application.Read.All",
        lambda r, sp: r.service_principal_by_app_id(sp["appId"], ["id", "displayName"]),
    ),
    (
        "roleAssignments.list",
        "RoleManagement.Read.Directory",
        lambda r, sp: r.role_assignments(f"principalId eq '{sp['id']}'"),
    ),
    (
        "roleAssignmentScheduleInstances.list",
        "RoleManagement.Read.Directory (or RoleAssignmentSchedule.Read.Directory" + PIM,
        lambda r, sp: r.role_assignment_instances(f"principalId eq '{sp['id']}'"),
    ),
    (
        "roleEligibilityScheduleInstances.list",
        "RoleManagement.Read.Directory (or RoleEligibilitySchedule.Read.Directory" + PIM,
        lambda r, sp: r.role_eligibility_instances(f"principalId eq '{sp['id']}'"),
    ),
    (
        "servicePrincipals.transitiveMemberOf",
        "Application.Read.All",
        lambda r, sp: r.transitive_member_of(sp["id"]),
    ),
    (
        "servicePrincipals.appRoleAssignments",
        "Application.Read.All",
        lambda r, sp: r.app_role_assignments(sp["id"]),
    ),
    ("users.list", "User.Read.All", lambda r, sp: r.users(["id"])),
]


def vendor_sp(sim: GraphSimulator) -> dict[str, Any]:
    tenant = sim.world.tenant(DEMO_TENANTS["contoso"])
    assert tenant is not None
    return dict(tenant.service_principals[0])


@pytest.mark.parametrize(("route", "permission", "read"), READS, ids=[r[0] for r in READS])
async def test_a_refused_read_names_the_permission_it_needs(
    sim: GraphSimulator, route: str, permission: str, read: Read
) -> None:
    sim.add_fault_rule(FaultRule(route=route, status=403, code="Authorization_RequestDenied"))
    async with graph_session(sim, "contoso") as session:
        with pytest.raises(GraphError) as info:
            await read(GraphReader(session, "Contoso", policy=QUICK), vendor_sp(sim))
    assert info.value.code is ErrorCode.PERMISSION_DENIED
    assert info.value.message.endswith(f"(tenant Contoso; needs {permission})"), info.value.message
    assert sim.count(route=route) == 1


async def test_each_read_asks_graph_for_what_it_needs_and_returns_what_it_holds(sim: GraphSimulator) -> None:
    sent: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        sent.append(request)

    sp = vendor_sp(sim)
    tenant = sim.world.tenant(DEMO_TENANTS["contoso"])
    assert tenant is not None
    answers = []
    async with open_session(settings_for(sim, "contoso"), event_hooks={"request": [on_request]}) as session:
        reader = GraphReader(session, "Contoso", policy=QUICK)
        for _, _, read in READS:
            answers.append(await read(reader, sp))
    by_sp = f"principalId eq '{sp['id']}'"
    assert [unquote(str(r.url)).removeprefix(sim.graph_url) for r in sent] == [
        "/v1.0/organization?$select=id,displayName",
        f"/v1.0/servicePrincipals?$filter=appId eq '{sp['appId']}'&$select=id,appId&$top=999",
        f"/v1.0/servicePrincipals(appId='{sp['appId']}')?$select=id,displayName",
        f"/v1.0/roleManagement/directory/roleAssignments?$filter={by_sp}",
        f"/v1.0/roleManagement/directory/roleAssignmentScheduleInstances?$filter={by_sp}",
        f"/v1.0/roleManagement/directory/roleEligibilityScheduleInstances?$filter={by_sp}",
        f"/v1.0/servicePrincipals/{sp['id']}/transitiveMemberOf",
        f"/v1.0/servicePrincipals/{sp['id']}/appRoleAssignments",
        "/v1.0/users?$select=id&$top=999",
    ]
    assert all(r.headers["accept"] == "application/json" for r in sent)
    organization, sps, by_app_id, assignments, *_, users = answers
    assert organization["id"] == DEMO_TENANTS["contoso"] and set(organization) >= {"id", "displayName"}
    assert sps == [{"id": sp["id"], "appId": sp["appId"]}]
    assert by_app_id["id"] == sp["id"] and by_app_id["displayName"] == sp["displayName"]
    assert assignments and all(a["principalId"] == sp["id"] for a in assignments)
    assert sorted(u["id"] for u in users) == sorted(u.id for u in tenant.users)


async def test_each_wait_is_logged_with_its_reason_for_a_verbose_run(
    no_back_off: None, caplog: pytest.LogCaptureFixture
) -> None:
    sender = Scripted(
        graph_answer(429, "TooManyRequests", retry_after="0"), graph_answer(503, "ServiceUnavailable"), {}
    )
    with caplog.at_level(logging.DEBUG, logger="auditor.graph.reader"):
        await send(make_reader(), sender)
    assert [r.getMessage() for r in caplog.records if r.name == "auditor.graph.reader"] == [
        f"Contoso (t1): {GRAPH}/users throttled for 0 s",
        f"Contoso (t1): {GRAPH}/users failed (503 ServiceUnavailable), retry in 0.00 s",
    ]


async def test_a_mailbox_batch_refused_as_a_whole_is_logged(
    no_back_off: None, caplog: pytest.LogCaptureFixture
) -> None:
    refusal = GraphError("Graph answered 400 BadRequest: no", status=400)

    class RefusedBatchReader(FakeBatchReader):
        async def batch(self, items: list[dict[str, Any]], permission: str) -> dict[str, dict[str, Any]]:
            self.batches.append(items)
            raise refusal

    reader = RefusedBatchReader(lambda uid, times: ok("user"))
    with caplog.at_level(logging.DEBUG, logger="auditor.graph.reader"):
        answers = await reader.mailbox_purposes(["u1"])
    assert answers["u1"] == MailboxAnswer(
        None, failure="400 on the $batch request as a whole, 3 times", status=0
    )
    assert len(reader.batches) == BATCH_REFUSALS_TOLERATED
    logged = [r.getMessage() for r in caplog.records if r.name == "auditor.graph.reader"]
    assert logged == [f"Contoso (t1): a mailbox $batch failed as a whole: {refusal}"] * 3


async def test_a_batch_of_more_than_twenty_is_refused_before_anything_is_sent() -> None:
    reader = make_reader()
    with pytest.raises(ValueError) as info:
        await reader.batch([{"id": str(i)} for i in range(BATCH_LIMIT + 1)], "MailboxSettings.Read")
    assert str(info.value) == "a $batch holds at most 20 requests"


# --- the mailbox census when items or whole $batches keep failing -----------------------------------------


class FailingBatchReader(FakeBatchReader):
    """Every $batch POST fails as a whole with `error` (as `send` raises it after its own retries)."""

    def __init__(self, error: GraphError, **options: Any) -> None:
        super().__init__(lambda uid, times: ok("user"), **options)
        self.error = error
        self.batch_times: list[float] = []

    async def batch(self, items: list[dict[str, Any]], permission: str) -> dict[str, dict[str, Any]]:
        self.batches.append(items)
        self.batch_times.append(time.monotonic())
        await asyncio.sleep(self.delay)
        raise self.error


@pytest.mark.parametrize(
    ("status", "code"),
    [(None, ErrorCode.NETWORK_ERROR), (503, ErrorCode.GRAPH_ERROR), (429, ErrorCode.THROTTLED)],
)
async def test_a_batch_that_kept_failing_leaves_its_mailboxes_unclassified_at_once(
    status: int | None, code: ErrorCode
) -> None:
    reader = FailingBatchReader(GraphError("gave up", code=code, status=status))
    answers = await reader.mailbox_purposes(["u1", "u2"])
    assert answers == {
        uid: MailboxAnswer(None, failure=f"$batch request kept failing ({code.value})")
        for uid in ("u1", "u2")
    }
    assert len(reader.batches) == 1, "send already retried it for its whole patience"


async def test_a_batch_that_failed_as_the_tenants_time_ran_out_is_reported_as_such() -> None:
    reader = FailingBatchReader(
        GraphError("gave up", code=ErrorCode.TIMEOUT, status=None), policy=RetryPolicy(budget_seconds=0.2)
    )
    reader.delay = 0.3  # the POST comes back after the tenant's time is over
    answers = await reader.mailbox_purposes(["u1"])
    assert answers["u1"].failure == "not answered before the tenant's time ran out (0.2 s)"


async def test_a_refused_sign_in_during_the_census_stops_the_tenant() -> None:
    reader = FailingBatchReader(GraphError("Sign-in failed", code=ErrorCode.AUTH_FAILED))
    with pytest.raises(GraphError) as info:
        await reader.mailbox_purposes(["u1"])
    assert info.value.code is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize(
    ("item", "failure", "status"),
    [
        (error(503, "ServiceUnavailable"), "503 ServiceUnavailable", 503),
        (error(429, "TooManyRequests"), "429 TooManyRequests", 429),  # no Retry-After: a failure
        ({"status": 502, "body": "Bad Gateway"}, "502", 502),
    ],
)
async def test_an_item_that_keeps_failing_is_given_up_on_after_its_patience(
    no_back_off: None, item: dict[str, Any], failure: str, status: int
) -> None:
    answers, reader = await purposes(
        lambda uid, times: item if uid == "bad" else ok("user"),
        ["bad", "good"],
        policy=RetryPolicy(patience_seconds=0.2),
    )
    assert answers["good"] == MailboxAnswer("user")
    assert answers["bad"] == MailboxAnswer(None, failure=f"{failure} (kept failing for 0.2 s)", status=status)
    assert len(reader.times_asked("bad")) > 2 and len(reader.times_asked("good")) == 1


async def test_an_item_answered_503_with_retry_after_waits_that_long(no_back_off: None) -> None:
    def answer(uid: str, times: int) -> dict[str, Any]:
        return error(503, "ServiceUnavailable", {"Retry-After": "0.3"}) if times == 0 else ok("shared")

    answers, reader = await purposes(answer, ["u1"])
    assert answers == {"u1": MailboxAnswer("shared")}
    first, second = reader.times_asked("u1")
    assert 0.28 <= second - first < 0.8, "that long, and no longer"


async def test_an_item_without_a_status_is_not_taken_for_an_answer() -> None:
    answers, _ = await purposes(lambda uid, times: {"body": {"value": "shared"}}, ["u1"])
    assert answers == {"u1": MailboxAnswer(None, failure="0", status=0)}


async def test_a_batch_on_a_closed_session_is_refused(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        reader = GraphReader(session, "Contoso", policy=QUICK)
    with pytest.raises(RuntimeError, match=r"^this Graph session is closed: it has no \$batch sender$"):
        await reader.batch([{"id": "0", "method": "GET", "url": "/organization"}], "MailboxSettings.Read")
    assert sim.count(route="batch") == 0


async def test_an_organization_graph_does_not_list_is_none() -> None:
    async def organization(answer: dict[str, Any]) -> dict[str, Any] | None:
        reader = ScriptedDeltaReader(answer)
        # The SDK's request builders, with nothing to send through: the answer is scripted.
        reader.client = GraphServiceClient(
            request_adapter=GraphRequestAdapter(AnonymousAuthenticationProvider())
        )
        return await reader.organization()

    assert await organization({"value": []}) is None
    assert await organization({}) is None
    assert await organization({"value": [{"id": "t1"}, {"id": "t2"}]}) == {"id": "t1"}


async def test_a_batch_answers_each_item_by_its_id(sim: GraphSimulator) -> None:
    tenant = sim.world.tenant(DEMO_TENANTS["contoso"])
    assert tenant is not None
    users = [u.id for u in list(tenant.users)[:3]]
    items = [
        {"id": str(i), "method": "GET", "url": f"/users/{uid}/mailboxSettings/userPurpose"}
        for i, uid in enumerate(users)
    ]
    async with graph_session(sim, "contoso") as session:
        reader = GraphReader(
            session, "Contoso", policy=RetryPolicy(budget_seconds=10.0, patience_seconds=2.0)
        )
        answers = await reader.batch(items, "MailboxSettings.Read")
    assert sorted(answers) == ["0", "1", "2"]
    assert all(answers[str(i)]["id"] == str(i) and answers[str(i)]["status"] in (200, 404) for i in range(3))
    assert sim.count(route="batch") == 1


async def test_a_refusal_without_an_error_object_is_still_a_graph_error() -> None:
    refusal = ODataError()  # a JSON body without Graph's "error" object (a proxy's, say)
    refusal.response_status_code = 400
    with pytest.raises(GraphError) as info:
        await send(make_reader(), Scripted(refusal))
    assert info.value.code is ErrorCode.GRAPH_ERROR and info.value.status == 400
    assert info.value.message.startswith("Graph answered 400: ") and info.value.request_id is None


async def test_a_graph_message_is_shown_with_single_spaces() -> None:
    refusal = graph_answer(400, "BadRequest")
    assert refusal.error is not None
    refusal.error.message = "Invalid  filter  clause."
    with pytest.raises(GraphError) as info:
        await send(make_reader(), Scripted(refusal))
    assert info.value.message == "Graph answered 400 BadRequest: Invalid filter clause."


@pytest.mark.parametrize("purpose", ["user", "shared", "room", "equipment", "others", "unknownFutureValue"])
def test_every_purpose_graph_answers_is_kept_even_the_first_time_it_is_seen(purpose: str) -> None:
    # One first-seen value per run of this test (the reader shares an answer per purpose it has seen).
    first_seen = f"{purpose}-{uuid.uuid4().hex}"
    for value in (first_seen, first_seen, purpose):
        answer = classify_mailbox_item(200, {"value": value})
        assert answer is not None, "an answer, not a transient failure to ask again"
        assert (answer.purpose, answer.failure, answer.no_mailbox) == (value, None, False)


def test_a_sign_in_message_keeps_its_own_last_letter() -> None:
    error = translate_auth_error(
        Exception(
            "Microsoft Entra ID error '(unauthorized_client) AADSTS700016: App 'PAYROLL-X'' Trace ID: 1"
        ),
        "c1",
        "Contoso (t1)",
    )
    assert error.message == (
        "Sign-in to tenant Contoso (t1) failed: (unauthorized_client) AADSTS700016: App 'PAYROLL-X"
    )


# --- paging a collection -----------------------------------------------------------------------------------


async def test_every_page_is_read_with_the_same_headers(sim: GraphSimulator) -> None:
    sent: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        sent.append(request)

    tenant = sim.world.tenant(DEMO_TENANTS["contoso"])
    assert tenant is not None
    eventual = {"ConsistencyLevel": "eventual"}
    async with open_session(settings_for(sim, "contoso"), event_hooks={"request": [on_request]}) as session:
        reader = GraphReader(session, "Contoso", policy=QUICK)
        users = await reader.get_all(
            reader.url_request("/users?$select=id&$top=50", eventual), "User.Read.All", eventual
        )
    assert sorted(u["id"] for u in users) == sorted(u.id for u in tenant.users)
    assert len(sent) == -(-len(tenant.users) // 50) > 2, "one request per page"
    assert all(r.headers.get("consistencylevel") == "eventual" for r in sent)
    assert all(r.url.params.get("$skiptoken") for r in sent[1:]), "the next pages are Graph's own links"


async def test_a_page_without_users_still_leads_on() -> None:
    reader = ScriptedDeltaReader(
        {"@odata.nextLink": f"{GRAPH}/users?$skiptoken=2"}, {"value": [{"id": "u2"}]}
    )
    assert await reader.get_all(reader.url_request("/users"), "User.Read.All") == [{"id": "u2"}]
    assert reader.sent == [
        (f"{GRAPH}/users", "User.Read.All"),
        (f"{GRAPH}/users?$skiptoken=2", "User.Read.All"),
    ]


async def test_a_next_page_on_another_host_is_not_followed(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        reader = GraphReader(session, "Contoso", policy=QUICK)
        sim.next_link_origin = "https://evil.example:8443"
        try:
            with pytest.raises(GraphError) as info:
                await reader.get_all(reader.url_request("/users?$select=id&$top=50"), "User.Read.All")
        finally:
            sim.next_link_origin = None
    assert sim.count(route="users.list") == 1
    assert info.value.code is ErrorCode.GRAPH_ERROR
    assert info.value.message == (
        "Graph's answer for tenant Contoso points its next page (@odata.nextLink) at another host, "
        "https://evil.example:8443; not followed, so the access token stays with Graph and this section is "
        "incomplete"
    )
    assert info.value.hint == (
        "Graph's next-page links always point back at Graph: something between the auditor and Graph (a proxy, "
        "a test double) rewrote the answer. Check graph_endpoint and any proxy, then re-run."
    )


async def test_a_refused_batch_names_the_permission_its_items_need(sim: GraphSimulator) -> None:
    sim.add_fault_rule(FaultRule(route="batch", status=403, code="Authorization_RequestDenied"))
    async with graph_session(sim, "contoso") as session:
        reader = GraphReader(session, "Contoso", policy=QUICK)
        with pytest.raises(GraphError) as info:
            await reader.batch([{"id": "0", "method": "GET", "url": "/organization"}], "MailboxSettings.Read")
    assert info.value.code is ErrorCode.PERMISSION_DENIED
    assert info.value.message.endswith("(tenant Contoso; needs MailboxSettings.Read)")


async def test_a_delta_link_to_another_host_at_the_end_of_a_round_is_not_kept() -> None:
    reader = ScriptedDeltaReader(
        {"value": [{"id": "u1"}], "@odata.deltaLink": "https://evil.example/users/delta?t=1"}
    )
    with pytest.raises(GraphError) as info:
        await reader.users_delta(["id"])
    assert info.value.message == (
        "Graph's users delta for tenant Contoso (t1) points its delta link (@odata.deltaLink) at another host, "
        "https://evil.example:443; not followed, so the access token stays with Graph"
    )


@pytest.fixture
def ceilings(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Each back-off's ceiling, in order; the wait drawn is a tenth of it (so a test can see it, quickly)."""
    drawn: list[float] = []

    def uniform(low: float, high: float) -> float:
        drawn.append(high)
        return high / 10

    monkeypatch.setattr("auditor.graph.reader.random.uniform", uniform)
    return drawn


async def test_a_refused_batch_is_tried_again_after_a_growing_back_off(ceilings: list[float]) -> None:
    reader = FailingBatchReader(GraphError("Graph answered 400 BadRequest: no", status=400))
    answers = await reader.mailbox_purposes(["u1"])
    assert answers["u1"].failure == "400 on the $batch request as a whole, 3 times"
    assert ceilings == [0.5, 1.0]
    first, second, third = (batch_at for batch_at in reader.batch_times)
    assert second - first >= 0.045 and third - second >= 0.095


async def test_each_failing_item_backs_off_by_its_own_count(ceilings: list[float]) -> None:
    def answer(uid: str, times: int) -> dict[str, Any]:
        return error(503, "ServiceUnavailable") if times < 3 else ok("user")

    answers, reader = await purposes(answer, ["u1"])
    assert answers == {"u1": MailboxAnswer("user")}
    assert ceilings == [0.5, 1.0, 2.0]
    gaps = [b - a for a, b in itertools.pairwise(reader.times_asked("u1"))]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.195


async def test_each_item_has_its_own_patience(no_back_off: None) -> None:
    def answer(uid: str, times: int) -> dict[str, Any]:
        if uid == "late" and times == 0:  # paced first (no failure), failing from then on
            return error(429, "TooManyRequests", {"Retry-After": "0.2"})
        return error(503, "ServiceUnavailable")

    answers, reader = await purposes(answer, ["early", "late"], policy=RetryPolicy(patience_seconds=0.4))
    for uid in ("early", "late"):
        assert answers[uid].failure == "503 ServiceUnavailable (kept failing for 0.4 s)"
        asked = reader.times_asked(uid)
        failing_from = asked[1] if uid == "late" else asked[0]
        assert asked[-1] - failing_from >= 0.38, f"{uid} had its whole patience"


async def test_no_patience_gives_up_on_an_item_at_its_first_failure() -> None:
    answers, reader = await purposes(
        lambda uid, times: error(503, "ServiceUnavailable"), ["u1"], policy=RetryPolicy(patience_seconds=0.0)
    )
    assert answers["u1"] == MailboxAnswer(
        None, failure="503 ServiceUnavailable (kept failing for 0 s)", status=503
    )
    assert len(reader.times_asked("u1")) == 1


async def test_an_item_that_stays_missing_is_given_up_on_without_a_status(no_back_off: None) -> None:
    answers, _ = await purposes(lambda uid, times: None, ["u1"], policy=RetryPolicy(patience_seconds=0.2))
    assert answers["u1"] == MailboxAnswer(
        None, failure="missing from the $batch answer (kept failing for 0.2 s)", status=0
    )


async def test_a_batch_that_kept_failing_with_little_time_left_is_reported_at_once() -> None:
    reader = FailingBatchReader(
        GraphError("gave up", code=ErrorCode.GRAPH_ERROR, status=503), policy=RetryPolicy(budget_seconds=1.0)
    )
    reader.delay = 0.3  # about 0.7 s of the tenant's time are left when it comes back
    answers = await reader.mailbox_purposes(["u1"])
    assert answers["u1"].failure == "$batch request kept failing (GRAPH_ERROR)"
    assert len(reader.batches) == 1


async def test_a_request_without_a_url_is_named_in_general_words() -> None:
    reader = make_reader(RetryPolicy(patience_seconds=0.0))
    with pytest.raises(GraphError) as info:
        await reader.send(
            RequestInformation, PERMISSION, via=Scripted(graph_answer(503, "ServiceUnavailable"))
        )
    assert info.value.message.startswith("Gave up on a Graph request for tenant Contoso (t1) after ")
