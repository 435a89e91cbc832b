"""The one write: `RoleAssignmentWriter.create` over the real msgraph-sdk against the simulator, and what each
answer means to the remediation that reads it (`WriteAnswer`)."""

from __future__ import annotations

import re

import httpx
import pytest
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from auditor.errors import ErrorCode, GraphError
from auditor.graph.client import ConnectionSettings, GraphSession, ThrottleGate, odata_error
from auditor.graph.writer import RoleAssignmentWriter, WriteAnswer, _request_id
from auditor.simulator import FaultRule, GraphSimulator
from tests.conftest import DEMO_TENANTS, graph_session

SECURITY_READER = "5d6b6bb7-de71-4623-b4af-96380a352509"
REQUEST_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CONFLICT = (
    "A conflicting object with one or more of the specified property values is present in the directory."
)


@pytest.mark.parametrize(
    ("answer", "created", "conflict", "unknown"),
    [
        (WriteAnswer(201, "a1"), True, False, False),
        (WriteAnswer(200), False, False, False),
        (WriteAnswer(409), False, True, False),
        (WriteAnswer(400, message=CONFLICT), False, True, False),
        (WriteAnswer(400, message="a CONFLICTING OBJECT exists"), False, True, False),
        (WriteAnswer(400, message="Required property 'principalId' is missing."), False, False, False),
        (WriteAnswer(400), False, False, False),
        (WriteAnswer(404, message=CONFLICT), False, False, False),
        (WriteAnswer(0), False, False, True),
        (WriteAnswer(500), False, False, True),
        (WriteAnswer(502), False, False, True),
        (WriteAnswer(503), False, False, True),
        (WriteAnswer(504), False, False, True),
        (WriteAnswer(501), False, False, False),
        (WriteAnswer(429), False, False, False),
    ],
)
def test_what_an_answer_to_the_post_means(
    answer: WriteAnswer, created: bool, conflict: bool, unknown: bool
) -> None:
    assert (answer.created, answer.conflict, answer.unknown_outcome) == (created, conflict, unknown)


@pytest.mark.parametrize(
    ("status", "headers", "content", "found"),
    [
        (400, {}, b'{"error": {"code": "X", "innerError": {"request-id": "inner"}}}', "inner"),
        (
            400,
            {"request-id": "header"},
            b'{"error": {"code": "X", "innerError": {"request-id": "inner"}}}',
            "inner",
        ),
        (400, {"request-id": "header"}, b'{"error": {"code": "X"}}', "header"),
        (400, {"request-id": {"from-a-set"}}, b"", "from-a-set"),
        (400, {"request-id": ["from-a-list"]}, b"", "from-a-list"),
        (400, {"request-id": ("from-a-tuple",)}, b"", "from-a-tuple"),
        (400, {"request-id": ""}, b"", None),
        (400, {}, b"", None),
        (400, None, b"", None),
    ],
)
def test_the_request_id_comes_from_the_error_body_else_the_headers(
    status: int, headers: object, content: bytes, found: str | None
) -> None:
    assert _request_id(odata_error(status, headers, content)) == found


def vendor_principal(sim: GraphSimulator) -> str:
    tenant = sim.world.tenant(DEMO_TENANTS["contoso"])
    assert tenant is not None
    return next(iter(tenant.users)).id


async def test_a_created_assignment_is_answered_with_its_id_and_request_id(fresh_sim: GraphSimulator) -> None:
    principal = vendor_principal(fresh_sim)
    async with graph_session(fresh_sim, "contoso") as session:
        writer = RoleAssignmentWriter(session, "Contoso")
        answer = await writer.create(principal, SECURITY_READER, "/")
        again = await writer.create(principal, SECURITY_READER, "/")
    tenant = fresh_sim.world.tenant(DEMO_TENANTS["contoso"])
    assert tenant is not None
    [made] = [a for a in tenant.role_assignments if a["principalId"] == principal]
    assert answer.created and answer.assignment_id == made["id"]
    assert answer.request_id is not None and REQUEST_ID.fullmatch(answer.request_id)
    assert (answer.code, answer.message, answer.retry_after) == (None, None, None)
    # The same assignment again: Graph's "already exists", with what it said.
    assert again.status == 400 and again.conflict and not again.created
    assert (again.code, again.message, again.assignment_id) == ("Request_BadRequest", CONFLICT, None)
    assert again.request_id is not None and REQUEST_ID.fullmatch(again.request_id)
    assert fresh_sim.count(route="roleAssignments.create") == 2


async def test_an_answer_lost_to_a_5xx_is_an_unknown_outcome_with_its_retry_after(
    sim: GraphSimulator,
) -> None:
    sim.add_fault_rule(FaultRule(route="roleAssignments.create", status=503, retry_after=7))
    async with graph_session(sim, "contoso") as session:
        answer = await RoleAssignmentWriter(session, "Contoso").create(
            vendor_principal(sim), SECURITY_READER, "/"
        )
    assert answer.status == 503 and answer.unknown_outcome and answer.retry_after == 7.0
    assert (answer.code, answer.message) == ("ServiceUnavailable", "The service is temporarily unavailable.")
    assert answer.request_id is not None and REQUEST_ID.fullmatch(answer.request_id)
    assert sim.count(route="roleAssignments.create") == 1, "a write is never repeated blindly"


async def test_a_dropped_connection_is_no_answer_and_is_not_repeated(sim: GraphSimulator) -> None:
    sim.add_fault_rule(FaultRule(route="roleAssignments.create", reset=True))
    async with graph_session(sim, "contoso") as session:
        answer = await RoleAssignmentWriter(session, "Contoso").create(
            vendor_principal(sim), SECURITY_READER, "/"
        )
    assert answer.status == 0 and answer.unknown_outcome and answer.assignment_id is None
    assert answer.message == "no answer: RemoteProtocolError: Server disconnected without sending a response."
    assert (answer.request_id, answer.code, answer.retry_after) == (None, None, None)
    assert len([r for r in sim.requests() if r.route == "roleAssignments.create"]) == 1


@pytest.mark.parametrize(
    ("status", "code"), [(401, "InvalidAuthenticationToken"), (403, "Authorization_RequestDenied")]
)
async def test_a_refused_write_names_the_permission_and_the_remediation_app(
    sim: GraphSimulator, status: int, code: str
) -> None:
    sim.add_fault_rule(FaultRule(route="roleAssignments.create", status=status, code=code, message="Denied."))
    async with graph_session(sim, "contoso") as session:
        client_id = session.settings.client_id
        with pytest.raises(GraphError) as info:
            await RoleAssignmentWriter(session, "Contoso").create(vendor_principal(sim), SECURITY_READER, "/")
    error = info.value
    assert error.code is ErrorCode.PERMISSION_DENIED and error.status == status
    assert error.message == f"Graph refused the role assignment in tenant Contoso: {status} {code}: Denied."
    assert error.hint.startswith(
        "Grant the Microsoft Graph application permission RoleManagement.ReadWrite.Directory"
    )
    assert (
        f"the remediation app (client id {client_id})" in error.hint and "tenant Contoso grant" in error.hint
    )
    assert error.request_id is not None and REQUEST_ID.fullmatch(error.request_id)


async def test_a_write_is_never_retried_even_by_a_client_with_sdk_retries_on(sim: GraphSimulator) -> None:
    sim.add_fault_rule(FaultRule(route="roleAssignments.create", status=503, retry_after=0, times=1))
    async with graph_session(sim, "contoso", sdk_retries=2) as session:
        answer = await RoleAssignmentWriter(session, "Contoso").create(
            vendor_principal(sim), SECURITY_READER, "/"
        )
    assert answer.status == 503 and answer.unknown_outcome
    assert sim.count(route="roleAssignments.create") == 1


@pytest.mark.parametrize(
    ("tenant", "overrides", "hint"),
    [
        (
            "contoso",
            {"client_secret": "not-the-secret"},
            "The client secret is wrong or has expired: create a new client secret for app {client}",
        ),
        (
            "relecloud",
            {},
            "App {client} is not known in tenant Relecloud: an administrator of that tenant must "
            "grant admin consent to it (https://login.microsoftonline.com/{tenant_id}/adminconsent?client_id={client})",
        ),
    ],
)
async def test_a_refused_sign_in_is_auth_failed_and_nothing_is_posted(
    sim: GraphSimulator, tenant: str, overrides: dict[str, str], hint: str
) -> None:
    async with graph_session(sim, tenant, **overrides) as session:
        client, tenant_id = session.settings.client_id, session.settings.tenant_id
        with pytest.raises(GraphError) as info:
            await RoleAssignmentWriter(session, "Relecloud").create(
                vendor_principal(sim), SECURITY_READER, "/"
            )
    assert info.value.code is ErrorCode.AUTH_FAILED
    assert info.value.message.startswith("Sign-in to tenant Relecloud failed: ")
    assert info.value.hint.startswith(hint.format(client=client, tenant_id=tenant_id)), info.value.hint
    assert sim.count(route="roleAssignments.create") == 0


def session_answering(answer: httpx.Response) -> GraphSession:
    """A session whose Graph is one fixed HTTP answer (a gateway or a proxy in front of Graph, say): the SDK
    and the writer above it are the real ones."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: answer))
    client = GraphClientFactory.create_with_default_middleware(client=http)  # as client.make_graph_client
    adapter = GraphRequestAdapter(AnonymousAuthenticationProvider(), client=client)
    adapter.base_url = "https://graph.example/v1.0"
    settings = ConnectionSettings("t1", "c1", "secret", "https://login.example", "https://graph.example", "s")
    return GraphSession(settings, None, GraphServiceClient(request_adapter=adapter), ThrottleGate())  # type: ignore[arg-type]


async def test_an_error_answer_without_graphs_error_object_is_still_an_answer() -> None:
    """A gateway in front of Graph answers 502 with JSON of its own: the SDK raises ODataError without an
    error object, and the write is an unknown outcome, with the gateway's request-id."""
    session = session_answering(httpx.Response(502, json={"message": "no"}, headers={"request-id": "gw-1"}))
    answer = await RoleAssignmentWriter(session, "Contoso").create("p1", SECURITY_READER, "/")
    assert answer == WriteAnswer(502, None, "gw-1", None, "ODataError (status 502)", None)
    assert answer.unknown_outcome


@pytest.mark.parametrize(
    ("answer", "assignment_id", "request_id"),
    [
        (httpx.Response(201, json={"id": "a1"}, headers={"request-id": "r1"}), "a1", "r1"),
        (httpx.Response(201, json={"id": "a1"}), "a1", None),
        (httpx.Response(201, json={"principalId": "p1"}, headers={"request-id": "r1"}), None, "r1"),
        (httpx.Response(201, json={"id": ""}), None, None),
        (httpx.Response(201), None, None),
    ],
)
async def test_a_created_answer_is_read_for_what_it_carries(
    answer: httpx.Response, assignment_id: str | None, request_id: str | None
) -> None:
    created = await RoleAssignmentWriter(session_answering(answer), "Contoso").create(
        "p1", SECURITY_READER, "/"
    )
    assert created == WriteAnswer(201, assignment_id, request_id)
