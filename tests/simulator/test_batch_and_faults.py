"""$batch, throttling, failures and fault rules, through the real SDK's request adapter over HTTPS."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any

import httpx
import pytest
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.unified_role_assignment import UnifiedRoleAssignment

from auditor.graph.client import GraphSession, make_credential, send_for_bytes
from auditor.simulator import FaultProfile, FaultRule, GraphSimulator
from tests.conftest import DEMO_TENANTS, graph_session, settings_for

SECURITY_READER = "5d6b6bb7-de71-4623-b4af-96380a352509"


async def post_batch(session: GraphSession, requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A hand-built $batch sent through the SDK's adapter (auth and middleware apply), by item id."""
    info = RequestInformation()
    info.http_method = Method.POST
    info.url = session.base_url.rstrip("/") + "/$batch"
    info.headers.try_add("Content-Type", "application/json")
    info.headers.try_add("Accept", "application/json")
    info.content = json.dumps({"requests": requests}).encode()
    raw = await send_for_bytes(session.client, info)
    return {item["id"]: item for item in json.loads(raw)["responses"]}


def users(sim: GraphSimulator, tenant: str) -> list[Any]:
    tenant_state = sim.world.tenant(DEMO_TENANTS[tenant])
    assert tenant_state is not None
    return list(tenant_state.users)


def mailbox_item(user_id: str, index: int, *, absolute: str | None = None) -> dict[str, Any]:
    url = f"/users/{user_id}/mailboxSettings/userPurpose"
    return {"id": str(index), "method": "GET", "url": (absolute + url) if absolute else url}


async def test_batch_of_twenty_mailboxes_with_relative_and_absolute_urls(sim: GraphSimulator) -> None:
    people = users(sim, "fabrikam")[:20]
    async with graph_session(sim, "fabrikam") as session:
        items = [
            mailbox_item(u.id, i, absolute=session.base_url if i % 2 else None) for i, u in enumerate(people)
        ]
        responses = await post_batch(session, items)
    assert set(responses) == {str(i) for i in range(20)}
    for index, user in enumerate(people):
        item = responses[str(index)]
        if user.purpose is None:
            assert item["status"] == 404
            assert item["body"]["error"]["code"] == "MailboxNotEnabledForRESTAPI"
        else:
            assert item["status"] == 200
            assert item["body"]["value"] == user.purpose
            assert set(item["body"]) == {"@odata.context", "value"}
    # each item is its own request in the simulator's log, under its batch
    assert sim.count(route="mailboxSettings.userPurpose", in_batch=True) == 20
    assert sim.count(route="batch", status=200) == 1


@pytest.mark.parametrize(
    ("items", "fragment"),
    [
        ([{"id": str(i), "method": "GET", "url": "/organization"} for i in range(21)], "more than 20"),
        (
            [
                {"id": "a", "method": "GET", "url": "/organization"},
                {"id": "A", "method": "GET", "url": "/users"},
            ],
            "duplicate id",
        ),
        ([{"id": "1", "method": "GET"}], "needs id, method and url"),
        (
            [{"id": "1", "method": "POST", "url": "/roleManagement/directory/roleAssignments", "body": {}}],
            "Content-Type",
        ),
    ],
)
async def test_malformed_batches_are_refused_whole(
    sim: GraphSimulator, items: list[dict[str, Any]], fragment: str
) -> None:
    async with graph_session(sim, "contoso") as session:
        with pytest.raises(ODataError) as caught:
            await post_batch(session, items)
    assert caught.value.response_status_code == 400
    assert caught.value.error is not None and caught.value.error.code == "BadRequest"
    assert fragment in (caught.value.error.message or "")


async def test_item_level_429_inside_a_200_envelope_and_retry_after_is_enforced(sim: GraphSimulator) -> None:
    tenant = DEMO_TENANTS["woodgrove"]
    people = [u for u in users(sim, "woodgrove") if u.purpose][:20]
    sim.set_faults(
        FaultProfile(throttle_rate=0.5, retry_after_seconds=1, routes=("mailboxSettings.userPurpose",)),
        tenant,
    )
    async with graph_session(sim, "woodgrove") as session:
        first = await post_batch(session, [mailbox_item(u.id, i) for i, u in enumerate(people)])
        throttled = [i for i, item in first.items() if item["status"] == 429]
        assert throttled and len(throttled) < 20, "a 50% rate should throttle some items, not all"
        for index in throttled:
            assert first[index]["headers"]["Retry-After"] == "1"
            assert first[index]["body"]["error"]["code"] == "TooManyRequests"
        sim.set_faults(None, tenant)
        # Asking again at once breaks the promise: throttled again, and counted as an early retry.
        again = await post_batch(session, [mailbox_item(people[int(i)].id, int(i)) for i in throttled])
        assert all(item["status"] == 429 for item in again.values())
        assert sim.early_retries == len(throttled)
        await asyncio.sleep(1.1)
        later = await post_batch(session, [mailbox_item(people[int(i)].id, int(i)) for i in throttled])
        assert all(item["status"] == 200 for item in later.values())
    assert sim.early_retries == len(throttled)


async def test_failed_dependency_answers_424(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        responses = await post_batch(
            session,
            [
                {
                    "id": "1",
                    "method": "GET",
                    "url": "/users/00000000-0000-0000-0000-000000000000/mailboxSettings",
                },
                {"id": "2", "method": "GET", "url": "/organization", "dependsOn": ["1"]},
            ],
        )
    assert responses["1"]["status"] == 404 and responses["2"]["status"] == 424


async def test_top_level_429_blocks_the_tenant_until_retry_after(sim: GraphSimulator) -> None:
    # A client without a throttle gate (plain httpx), to see what the simulator does to one that ignores
    # Retry-After; the auditor's own client waits (tests/integration).
    tenant = DEMO_TENANTS["tailspin"]
    credential = make_credential(settings_for(sim, "tailspin"))
    try:
        token = (await credential.get_token(sim.scope)).token
    finally:
        await credential.close()
    sim.set_faults(FaultProfile(throttle_rate=1.0, retry_after_seconds=1), tenant)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=sim.ca_file), headers=headers
    ) as http:
        first = await http.get(f"{sim.graph_url}/v1.0/organization")
        assert first.status_code == 429 and first.headers["Retry-After"] == "1"
        assert first.json()["error"]["code"] == "TooManyRequests"
        sim.set_faults(None, tenant)
        await asyncio.sleep(0.1)  # past the simulator's in-flight grace, well before Retry-After
        early = await http.get(f"{sim.graph_url}/v1.0/servicePrincipals")  # any route of this tenant
        assert early.status_code == 429 and sim.early_retries == 1
        await asyncio.sleep(1.0)
        assert (await http.get(f"{sim.graph_url}/v1.0/organization")).status_code == 200


async def test_the_auditors_client_waits_out_retry_after_by_itself(sim: GraphSimulator) -> None:
    tenant = DEMO_TENANTS["tailspin"]
    sim.set_faults(FaultProfile(throttle_rate=1.0, retry_after_seconds=1), tenant)
    async with graph_session(sim, "tailspin") as session:
        with pytest.raises(ODataError) as caught:
            await session.client.organization.get()
        assert caught.value.response_status_code == 429
        sim.set_faults(None, tenant)
        started = time.monotonic()
        assert (await session.client.organization.get()) is not None
    assert time.monotonic() - started >= 0.9, "the session's throttle gate held the next request back"
    assert sim.early_retries == 0
    # the SDK's own retry middleware is off: the 429 reached us exactly once
    assert sim.count(route="organization.list", tenant=tenant, status=429) == 1


async def test_random_server_errors_use_gateway_statuses(sim: GraphSimulator) -> None:
    tenant = DEMO_TENANTS["contoso"]
    sim.set_faults(FaultProfile(error_rate=1.0), tenant)
    statuses = set()
    async with graph_session(sim, "contoso") as session:
        for _ in range(12):
            with pytest.raises(ODataError) as caught:
                await session.client.organization.get()
            statuses.add(caught.value.response_status_code)
    assert statuses <= {500, 502, 503, 504} and len(statuses) >= 2


async def test_connection_reset_and_slow_response(sim: GraphSimulator) -> None:
    tenant = DEMO_TENANTS["contoso"]
    sim.set_faults(FaultProfile(reset_rate=1.0), tenant)
    async with graph_session(sim, "contoso") as session:
        with pytest.raises(httpx.TransportError):
            await session.client.organization.get()
    sim.set_faults(FaultProfile(slow_rate=1.0, slow_seconds=3), tenant)
    started = time.monotonic()
    async with graph_session(sim, "contoso", timeout_seconds=0.5) as session:
        with pytest.raises(httpx.TimeoutException):
            await session.client.organization.get()
    assert time.monotonic() - started < 2.5


async def test_mailbox_concurrency_limit(sim: GraphSimulator) -> None:
    tenant = DEMO_TENANTS["alpine"]
    sim.set_faults(FaultProfile(latency_ms=300, mailbox_concurrency=4), tenant)
    people = [u for u in users(sim, "alpine") if u.purpose][:10]

    async def read(session: GraphSession, user_id: str) -> int:
        try:
            await session.client.users.by_user_id(user_id).mailbox_settings.get()
            return 200
        except ODataError as exc:
            assert exc.error is not None and exc.error.code == "ApplicationThrottled"
            assert "MailboxConcurrency" in (exc.error.message or "")
            return exc.response_status_code or 0

    async with graph_session(sim, "alpine") as session:
        statuses = await asyncio.gather(*(read(session, u.id) for u in people))
    # Ten reads leave together; at most four are served at once. On a loaded machine a late request can
    # arrive after an early one finished, so more than four may succeed, but never all ten.
    assert statuses.count(200) >= 4 and statuses.count(429) >= 1
    assert statuses.count(200) + statuses.count(429) == 10


async def test_rule_applies_a_post_and_then_answers_503(fresh_sim: GraphSimulator) -> None:
    tenant = DEMO_TENANTS["fabrikam"]
    fresh_sim.add_fault_rule(
        FaultRule(route="roleAssignments.create", tenant_id=tenant, status=503, after=True)
    )
    state = fresh_sim.world.tenant(tenant)
    assert state is not None
    uss = next(sp for sp in state.service_principals if sp["displayName"] == "USS AzureAD")
    before = len(state.role_assignments)
    async with graph_session(fresh_sim, "fabrikam") as session:
        body = UnifiedRoleAssignment(
            principal_id=uss["id"], role_definition_id=SECURITY_READER, directory_scope_id="/"
        )
        with pytest.raises(ODataError) as caught:
            await session.client.role_management.directory.role_assignments.post(body)
        assert caught.value.response_status_code == 503
        # the write happened all the same; a blind second POST is a conflict, not a second assignment
        with pytest.raises(ODataError) as again:
            await session.client.role_management.directory.role_assignments.post(body)
    assert again.value.response_status_code == 400
    assert len(state.role_assignments) == before + 1
    posts = [r for r in fresh_sim.requests() if r.route == "roleAssignments.create"]
    assert [r.status for r in posts] == [503, 400]
    assert posts[0].body["principalId"] == uss["id"]
