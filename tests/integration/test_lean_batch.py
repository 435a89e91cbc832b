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
from tests.conftest import DEMO_TENANTS, settings_for

pytestmark = pytest.mark.asyncio


async def test_batches_carry_the_sdk_token_through_our_hooks_but_not_the_middleware(
    fresh_sim: GraphSimulator,
) -> None:
    seen: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(request)

    settings = settings_for(fresh_sim, "contoso")
    async with open_session(settings, event_hooks={"request": [on_request]}) as session:
        assert lean_sender(session.client) is not None
        # What enters the SDK's middleware chain (the transport kiota put around the connection pool).
        chain: Any = session.client.request_adapter._http_client._transport  # type: ignore[attr-defined]
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
    # The GETs go through the SDK's middleware chain; the batches skip it.
    assert len(through_chain) == len(gets) and not any(p.endswith("/$batch") for p in through_chain)
    for request in batches:
        # ... but carry the token the SDK's authentication provider got (the tenant's, checked by the guard)
        scheme, _, token = request.headers["authorization"].partition(" ")
        assert scheme == "Bearer" and jwt_claims(token)["tid"] == DEMO_TENANTS["contoso"]
        assert len(json.loads(request.content)["requests"]) <= 20
    assert session.guard is not None and session.guard.token_tenant_id == DEMO_TENANTS["contoso"]


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
