"""The lean `$batch` path (issue 13): the SDK's token and our httpx hooks, without kiota's middleware chain."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from auditor.errors import ErrorCode, GraphError
from auditor.graph.client import jwt_claims, lean_sender, open_session
from auditor.graph.reader import GraphReader
from auditor.simulator import GraphSimulator
from auditor.simulator.faults import FaultRule
from auditor.simulator.fixtures import DEFAULT_VENDOR
from tests.conftest import DEMO_TENANTS, settings_for

VENDOR_APP_ID = DEFAULT_VENDOR["app_id"]

pytestmark = pytest.mark.asyncio


def sdk_chain(session: Any) -> Any:
    """What enters the SDK's middleware chain (the transport kiota put around the connection pool)."""
    return session.client.request_adapter._http_client._transport


async def test_reads_and_batches_carry_the_sdk_token_through_our_hooks_but_not_the_middleware(
    fresh_sim: GraphSimulator,
) -> None:
    seen: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(request)

    settings = settings_for(fresh_sim, "contoso")
    async with open_session(settings, event_hooks={"request": [on_request]}) as session:
        assert lean_sender(session.client) is not None
        chain = sdk_chain(session)
        through_chain: list[str] = []
        original = chain.handle_async_request

        async def spy(request: httpx.Request) -> httpx.Response:
            through_chain.append(request.url.path)
            return await original(request)

        chain.handle_async_request = spy
        reader = GraphReader(session, "Contoso")
        users = await reader.users(["id", "mail"])
        ids = [u["id"] for u in users if u.get("mail")][:30]
        answers = await reader.mailbox_purposes(ids)
    assert set(answers) == set(ids) and all(a.failure is None for a in answers.values())
    batches = [r for r in seen if r.url.path.endswith("/$batch")]
    gets = [r for r in seen if r.method == "GET"]
    assert len(batches) == 2 and gets
    # Reads and batches skip the SDK's middleware chain, and the hooks still see each of them.
    assert through_chain == []
    for request in batches + gets:
        # ... but carry the token the SDK's authentication provider got (the tenant's, checked by the guard)
        scheme, _, token = request.headers["authorization"].partition(" ")
        assert scheme == "Bearer" and jwt_claims(token)["tid"] == DEMO_TENANTS["contoso"]
    for request in batches:
        assert len(json.loads(request.content)["requests"]) <= 20
    # The query parameter names go out decoded, as kiota's ParametersNameDecodingHandler sends them.
    assert gets[0].url.query.decode().startswith("$select=id,mail&$top=999")
    assert session.guard is not None and session.guard.token_tenant_id == DEMO_TENANTS["contoso"]


async def test_every_read_goes_out_as_the_sdk_s_own_adapter_sends_it(fresh_sim: GraphSimulator) -> None:
    """Each read the collector makes, sent by the lean path and by the SDK's adapter (with its middleware):
    the same method, URL and headers on the wire, and the same answer."""

    async def reads(lean: bool) -> tuple[list[tuple[str, str, dict[str, str]]], list[Any]]:
        wire: list[tuple[str, str, dict[str, str]]] = []

        def keep(request: httpx.Request) -> None:
            headers = {k.lower(): v for k, v in request.headers.items() if k.lower() in WIRE_HEADERS}
            # Each session signs in on its own: compare who the token is for, not when it was issued.
            scheme, _, token = headers.pop("authorization", "").partition(" ")
            headers["authorization"] = f"{scheme} for tenant {jwt_claims(token)['tid']}" if token else ""
            wire.append((request.method, str(request.url), headers))

        async def on_request(request: httpx.Request) -> None:
            if lean:  # the lean path's hook sees the request as it goes out
                keep(request)

        settings = settings_for(fresh_sim, "contoso")
        async with open_session(settings, event_hooks={"request": [on_request]}) as session:
            bare = sdk_chain(session).transport  # the connection pool, after every middleware
            original = bare.handle_async_request

            async def after_middleware(request: httpx.Request) -> httpx.Response:
                keep(request)
                return await original(request)

            bare.handle_async_request = after_middleware
            reader = GraphReader(session, "Contoso")
            if not lean:
                reader._lean = None  # the SDK's adapter and its middleware chain
            sp = await reader.service_principal_by_app_id(VENDOR_APP_ID, ["id", "appId", "displayName"])
            answers = [
                await reader.organization(),
                sp,
                await reader.service_principals(f"appId eq '{VENDOR_APP_ID}'", ["id", "appId"]),
                await reader.role_assignments(f"principalId in ('{sp['id']}')"),
                await reader.role_assignment_instances(
                    "roleDefinitionId eq '5d6b6bb7-de71-4623-b4af-96380a352509'"
                ),
                await reader.role_eligibility_instances(
                    "roleDefinitionId eq '5d6b6bb7-de71-4623-b4af-96380a352509'"
                ),
                await reader.transitive_member_of(sp["id"]),
                await reader.app_role_assignments(sp["id"]),
                await reader.users(["id", "mail", "displayName"]),
                (await reader.users_delta(["id", "mail"], latest=True)).delta_link.split("?")[0],
            ]
        return wire, answers

    lean_wire, lean_answers = await reads(lean=True)
    sdk_wire, sdk_answers = await reads(lean=False)
    assert len(lean_wire) == len(sdk_wire) >= 10
    assert lean_wire == sdk_wire, (lean_wire, sdk_wire)
    assert lean_answers == sdk_answers


WIRE_HEADERS = {"accept", "consistencylevel", "content-type", "authorization"}


async def test_a_batch_throttled_as_a_whole_pauses_the_tenant_and_is_retried(
    fresh_sim: GraphSimulator,
) -> None:
    fresh_sim.add_fault_rule(FaultRule(route="batch", status=429, code="TooManyRequests", retry_after=1))
    settings = settings_for(fresh_sim, "contoso")
    async with open_session(settings) as session:
        reader = GraphReader(session, "Contoso")
        users = await reader.users(["id", "mail"])
        ids = [u["id"] for u in users if u.get("mail")][:5]
        answers = await reader.mailbox_purposes(ids)
        assert session.gate._until > 0  # the response hook saw the 429 and paused the tenant
    assert set(answers) == set(ids) and all(a.failure is None for a in answers.values())


async def test_a_refused_batch_is_an_odata_error_with_graph_s_code(fresh_sim: GraphSimulator) -> None:
    fresh_sim.add_fault_rule(
        FaultRule(route="batch", status=403, code="Authorization_RequestDenied", message="no", times=99)
    )
    settings = settings_for(fresh_sim, "contoso")
    async with open_session(settings) as session:
        reader = GraphReader(session, "Contoso")
        with pytest.raises(GraphError) as refused:
            await reader.batch([{"id": "0", "method": "GET", "url": "/organization"}], "MailboxSettings.Read")
    error: Any = refused.value
    assert error.status == 403 and error.code is ErrorCode.PERMISSION_DENIED
    assert "Authorization_RequestDenied" in str(error)


async def test_a_retried_read_keeps_the_ids_of_its_url(fresh_sim: GraphSimulator) -> None:
    # The URL of a read built by an SDK request builder is expanded once per try; the ids in it come from
    # the builder, so a retry must find them still there.
    fresh_sim.add_fault_rule(
        FaultRule(
            route="servicePrincipals.appRoleAssignments", status=503, code="ServiceUnavailable", times=2
        )
    )
    settings = settings_for(fresh_sim, "contoso")
    async with open_session(settings) as session:
        reader = GraphReader(session, "Contoso")
        sp = await reader.service_principal_by_app_id(VENDOR_APP_ID, ["id"])
        await reader.app_role_assignments(sp["id"])
    sent = [r for r in fresh_sim.requests() if r.route == "servicePrincipals.appRoleAssignments"]
    assert [r.status for r in sent] == [503, 503, 200]
    assert all(r.path.endswith(f"/servicePrincipals/{sp['id']}/appRoleAssignments") for r in sent)
