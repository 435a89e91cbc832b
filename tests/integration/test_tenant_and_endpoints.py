"""The right tenant, and secrets and tokens that go only to Microsoft (issue 10 case 6, issue 12 items 1-2).

Real azure-identity and msgraph-sdk over HTTPS to the simulator. A second TLS listener on 127.0.0.1 (trusted
like the simulator, so nothing but the auditor's own checks keeps a request from it) stands in for a hostile
host and records every byte it is sent.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openpyxl
import pytest
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from typer.testing import CliRunner

from auditor.cli.main import app
from auditor.collect import TenantAuditor
from auditor.config import AuditConfig, load_config
from auditor.errors import ErrorCode, GraphError
from auditor.graph.client import jwt_claims, open_session, send_for_bytes
from auditor.graph.preflight import preflight_session
from auditor.graph.reader import GraphReader
from auditor.model import RemediationAction, Status
from auditor.remediation import Journal, apply_plan, plan_remediation
from auditor.simulator import FaultRule, GraphSimulator
from tests.conftest import DEMO_TENANTS, settings_for
from tests.integration.conftest import demo_config_text, write_demo_config


class HostileListener:
    """A TLS server on 127.0.0.1 with the simulator's certificate: whatever reaches it is recorded, and it
    answers 400. ``received`` holds each connection's raw bytes."""

    def __init__(self, sim: GraphSimulator) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(sim.state_dir / "server.pem", sim.state_dir / "server-key.pem")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        data = b""
        try:
            conn.settimeout(5)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                data = head + b"\r\n\r\n" + body
                tls.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            self.received.append(data)

    def text(self) -> str:
        return b"\n".join(self.received).decode("latin-1").lower()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def hostile(sim: GraphSimulator) -> Iterator[HostileListener]:
    listener = HostileListener(sim)
    yield listener
    listener.close()


def host_identity(sim: GraphSimulator) -> str:
    return next(a.client_id for a in sim.world.apps.values() if a.env_prefix == "USS_DEMO_HOST_IDENTITY")


# --- issue 10 case 6: WRONG_TENANT ------------------------------------------------------------------------


async def test_a_managed_identity_token_for_another_tenant_is_wrong_tenant_never_that_tenants_verdict(
    sim_env: GraphSimulator, tmp_path: Path
) -> None:
    # The demo fleet's Bellows College signs in with the host's managed identity (App Service IDENTITY_ENDPOINT
    # + IDENTITY_HEADER, azure-identity's ManagedIdentityCredential), whose home tenant is Contoso's.
    config = write_demo_config(sim_env, tmp_path)
    bellows = next(t for t in config.tenants if t.tenant_id == DEMO_TENANTS["bellows"])
    assert bellows.auth.method.value == "managed_identity"
    result = await TenantAuditor(config)(bellows)

    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.WRONG_TENANT
    for text in (result.error.message, result.error.hint):
        assert DEMO_TENANTS["contoso"] in text and DEMO_TENANTS["bellows"] in text
    # Nothing of Contoso's directory is reported under Bellows's name.
    assert result.findings == () and result.service_principal is None and result.mailboxes is None
    assert result.billing.monthly_cost is None
    # The token came from the managed identity endpoint, for Contoso; not one Graph request carried it.
    identity = host_identity(sim_env)
    asked = [r for r in sim_env.requests() if r.route == "identity.managed_identity"]
    assert asked and all(r.status == 200 and r.tenant_id == DEMO_TENANTS["contoso"] for r in asked)
    assert not [
        r for r in sim_env.requests() if r.app_id == identity and r.route != "identity.managed_identity"
    ]


async def test_with_opaque_tokens_organization_alone_tells_the_tenant(
    sim_env: GraphSimulator, tmp_path: Path
) -> None:
    # Tokens the client cannot read (Microsoft: treat access tokens as opaque): /organization decides.
    config = write_demo_config(sim_env, tmp_path)
    bellows = next(t for t in config.tenants if t.tenant_id == DEMO_TENANTS["bellows"])
    sim_env.identity.opaque_tokens = True
    try:
        result = await TenantAuditor(config)(bellows)
    finally:
        sim_env.identity.opaque_tokens = False
    assert result.error is not None and result.error.code is ErrorCode.WRONG_TENANT
    assert "GET /organization" in result.error.message and DEMO_TENANTS["contoso"] in result.error.message
    assert result.findings == () and result.mailboxes is None
    identity = host_identity(sim_env)
    graph_routes = {r.route for r in sim_env.requests() if r.app_id == identity}
    assert graph_routes == {"identity.managed_identity", "organization.list"}  # nothing else was read


async def test_a_tenant_that_cannot_be_confirmed_is_audited_with_a_warning(
    sim_env: GraphSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Opaque tokens and no Organization.Read.All: nothing names the tenant. The audit goes on (Organization
    # .Read.All is a required permission that `auditor doctor` checks) and says it could not confirm it.
    config = write_demo_config(sim_env, tmp_path)
    contoso = next(t for t in config.tenants if t.tenant_id == DEMO_TENANTS["contoso"])
    sim_env.add_fault_rule(
        FaultRule(
            route="organization.list",
            tenant_id=DEMO_TENANTS["contoso"],
            status=403,
            code="Authorization_RequestDenied",
            message="Insufficient privileges to complete the operation.",
        )
    )
    sim_env.identity.opaque_tokens = True
    try:
        result = await TenantAuditor(config)(contoso)
    finally:
        sim_env.identity.opaque_tokens = False
    assert result.status is Status.COMPLIANT, result.error
    assert [r for r in caplog.records if getattr(r, "event", None) == "tenant_unconfirmed"]


async def test_the_managed_identity_endpoint_answers_as_app_service(sim_env: GraphSimulator) -> None:
    identity = host_identity(sim_env)
    header = {"X-IDENTITY-HEADER": sim_env.credentials["IDENTITY_HEADER"]}
    query = {"api-version": "2019-08-01", "resource": sim_env.graph_url}
    url = sim_env.credentials["IDENTITY_ENDPOINT"]
    assert url.startswith("http://127.0.0.1:")
    async with httpx.AsyncClient() as http:
        good = await http.get(url, params={**query, "client_id": identity}, headers=header)
        system = await http.get(url, params=query, headers=header)  # the only identity: no client_id needed
        no_header = await http.get(url, params=query)
        unknown = await http.get(url, params={**query, "client_id": DEMO_TENANTS["fabrikam"]}, headers=header)
    assert good.status_code == 200 and system.status_code == 200
    body = good.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert (
        body["resource"] == sim_env.graph_url
        and body["client_id"] == identity
        and body["expires_on"].isdigit()
    )
    claims = jwt_claims(body["access_token"])
    assert claims["tid"] == DEMO_TENANTS["contoso"] and claims["appid"] == identity
    assert "User.Read.All" in claims["roles"]
    assert no_header.status_code == 401 and "access_token" not in no_header.json()
    assert unknown.status_code == 400 and "No User Assigned" in unknown.json()["message"]


def test_wrong_tenant_reaches_every_report_and_the_history(sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim_env, tmp_path)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        app, ["audit", "-c", str(config.path), "-o", str(out), "--tenant", "Bellows College"]
    )
    assert result.exit_code == 3, result.output
    assert "WRONG_TENANT" in result.stdout and DEMO_TENANTS["contoso"] in result.stdout
    (tenant,) = json.loads((out / "audit.json").read_text())["tenants"]
    assert tenant["status"] == "error" and tenant["error"]["code"] == "WRONG_TENANT"
    assert "WRONG_TENANT" in (out / "audit.html").read_text()
    cells = [
        c.value for ws in openpyxl.load_workbook(out / "audit.xlsx") for row in ws.iter_rows() for c in row
    ]
    assert "WRONG_TENANT" in cells
    again = runner.invoke(app, ["report", str(out / "audit.json"), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert "WRONG_TENANT" in (tmp_path / "again" / "audit.html").read_text()
    history = runner.invoke(app, ["history", "-c", str(config.path), "--tenant", "Bellows College"])
    assert history.exit_code == 0, history.output
    assert "WRONG_TENANT" in history.stdout


async def test_the_same_managed_identity_audits_its_home_tenant(
    sim_env: GraphSimulator, tmp_path: Path
) -> None:
    # The check does not misfire: configured for the tenant it lives in, the identity gets the real verdict.
    extra = {"contoso": {"method": "managed_identity", "client_id": host_identity(sim_env)}}
    config = write_demo_config(sim_env, tmp_path, extra_tenant_keys=extra)
    contoso = next(t for t in config.tenants if t.tenant_id == DEMO_TENANTS["contoso"])
    result = await TenantAuditor(config)(contoso)
    assert result.status is Status.COMPLIANT, result.error
    assert sim_env.count(route="identity.managed_identity", tenant=DEMO_TENANTS["contoso"]) >= 1


async def test_a_remediation_credential_for_another_tenant_writes_nothing(
    fresh_sim_env: GraphSimulator, tmp_path: Path
) -> None:
    # Fabrikam is audited with the right credential (ROLE_MISSING) but its remediation_auth is the host's
    # managed identity, whose token is for Contoso: the write must not land in Contoso (or anywhere).
    sim = fresh_sim_env
    text = demo_config_text(sim)
    anchor = f'tenant_id = "{DEMO_TENANTS["fabrikam"]}"'
    text = text.replace(
        anchor,
        anchor
        + f'\nremediation_auth = {{ method = "managed_identity", client_id = "{host_identity(sim)}" }}',
    )
    path = tmp_path / "audit.toml"
    path.write_text(text)
    config = load_config(path)
    fabrikam = next(t for t in config.tenants if t.tenant_id == DEMO_TENANTS["fabrikam"])
    result = await TenantAuditor(config)(fabrikam)
    assert result.status is Status.NON_COMPLIANT
    contoso_before = len(sim.world.tenants[DEMO_TENANTS["contoso"]].role_assignments)

    outcomes = await apply_plan(plan_remediation([result], [fabrikam]), Journal(tmp_path / "journal.jsonl"))

    outcome = outcomes[fabrikam.tenant_id]
    assert outcome.action is RemediationAction.FAILED
    assert DEMO_TENANTS["contoso"] in outcome.detail and DEMO_TENANTS["fabrikam"] in outcome.detail
    assert not [r for r in sim.requests() if r.method == "POST" and r.route == "roleAssignments.create"]
    assert len(sim.world.tenants[DEMO_TENANTS["contoso"]].role_assignments) == contoso_before


async def test_doctor_says_which_tenant_the_token_is_for(sim_env: GraphSimulator) -> None:
    settings = settings_for(sim_env, "bellows", method="managed_identity", client_id=host_identity(sim_env))
    async with preflight_session(settings, "Bellows College") as probe:
        with pytest.raises(GraphError) as caught:
            await probe.token()
    assert caught.value.code is ErrorCode.WRONG_TENANT
    assert DEMO_TENANTS["contoso"] in caught.value.hint and DEMO_TENANTS["bellows"] in caught.value.hint


# --- issue 12 item 1: the fleet's secret goes to Microsoft's hosts only ---------------------------------


def _microsoft_config(tmp_path: Path, tenant_lines: str, auth_lines: str = "") -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(
        "[auth]\n"
        'client_id = "00000000-0000-0000-0000-0000000000c1"\n'
        'client_secret_env = "USS_DEMO_AUDITOR_SECRET"\n'
        f"{auth_lines}\n"
        "[[tenants]]\n"
        'name = "Contoso"\n'
        f'tenant_id = "{DEMO_TENANTS["contoso"]}"\n'
        f"{tenant_lines}\n"
    )
    return path


@pytest.mark.parametrize(
    ("tenant_lines", "key"),
    [
        ('authority = "{origin}"', "tenants[0].authority"),
        ('graph_endpoint = "{origin}"', "tenants[0].graph_endpoint"),
        ('[tenants.auth]\nauthority = "{origin}"', "tenants[0].auth.authority"),
        ('[tenants.remediation_auth]\nauthority = "{origin}"', "tenants[0].remediation_auth.authority"),
    ],
)
def test_a_config_sending_the_secret_to_another_host_is_refused_before_any_request(
    sim_env: GraphSimulator, hostile: HostileListener, tmp_path: Path, tenant_lines: str, key: str
) -> None:
    path = _microsoft_config(tmp_path, tenant_lines.format(origin=hostile.origin))
    result = CliRunner().invoke(app, ["audit", "-c", str(path), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert key in result.stderr and "allow_custom_endpoints" in result.stderr
    assert "not a Microsoft" in result.stderr and hostile.origin in result.stderr
    assert hostile.received == [], "the hostile host was contacted"
    assert not (tmp_path / "out" / "audit.json").exists()


def test_with_allow_custom_endpoints_the_operator_is_warned_first(
    sim_env: GraphSimulator, hostile: HostileListener, tmp_path: Path
) -> None:
    path = _microsoft_config(
        tmp_path,
        f'authority = "{hostile.origin}"',
        f'allow_custom_endpoints = true\nca_bundle = "{sim_env.ca_file}"\n',
    )
    result = CliRunner().invoke(
        app, ["audit", "-c", str(path), "-o", str(tmp_path / "out"), "--log-format", "json"]
    )
    assert result.exit_code == 3, result.output  # the "authority" answers 400: the tenant fails sign-in
    first = result.stderr.splitlines()[0]
    assert '"custom_endpoints"' in first and '"warning"' in first
    assert hostile.origin in first and "tenants[0].authority" in first
    # The opt-in is what let the secret go there: the warning said so before the run.
    assert sim_env.credentials["USS_DEMO_AUDITOR_SECRET"].lower() in hostile.text()


# --- issue 12 item 2: the bearer token goes to the Graph host only ------------------------------------


async def test_a_next_link_to_another_host_is_not_followed(
    sim_env: GraphSimulator, hostile: HostileListener
) -> None:
    # Lucerne has 2,150 users: the users list has a second page. Its nextLink is rewritten to the listener.
    sim_env.next_link_origin = hostile.origin
    try:
        async with open_session(settings_for(sim_env, "lucerne")) as session:
            with pytest.raises(GraphError) as caught:
                await GraphReader(session, "Lucerne").users(["id", "mail"])
    finally:
        sim_env.next_link_origin = None
    assert caught.value.code is ErrorCode.GRAPH_ERROR
    assert f"127.0.0.1:{hostile.port}" in caught.value.message and "nextLink" in caught.value.message
    assert hostile.received == [], "the hostile host was contacted"


async def test_a_foreign_next_link_fails_that_section_only_and_the_token_stays(
    sim_env: GraphSimulator, hostile: HostileListener, tmp_path: Path
) -> None:
    config: AuditConfig = write_demo_config(sim_env, tmp_path)
    lucerne = next(t for t in config.tenants if t.tenant_id == DEMO_TENANTS["lucerne"])
    sim_env.next_link_origin = hostile.origin
    try:
        result = await TenantAuditor(config)(lucerne)
    finally:
        sim_env.next_link_origin = None
    # The census could not be read and the result says why, naming the host; it is never taken for "no
    # shared mailboxes", and the sections on one page (the vendor app, its roles) were still read.
    assert result.mailboxes is None and result.billing.monthly_cost is None
    assert result.service_principal is not None
    reported = " ".join(
        [f.message for f in result.findings] + ([result.error.message] if result.error else [])
    )
    assert f"127.0.0.1:{hostile.port}" in reported, (result.status, reported)
    assert hostile.received == []


async def _get(session_url: str, sim: GraphSimulator) -> None:
    async with open_session(settings_for(sim, "contoso")) as session:
        await session.client.organization.get()  # a token is in use
        info = RequestInformation()
        info.http_method = Method.GET
        info.url = session_url
        info.headers.try_add("Accept", "application/json")
        await send_for_bytes(session.client, info)


async def test_the_sdk_attaches_the_token_to_the_graph_host_only(
    sim_env: GraphSimulator, hostile: HostileListener
) -> None:
    # Another host name (localhost, same machine): the request goes, but without the token.
    with pytest.raises(Exception):  # noqa: B017 - the listener's 400, whatever the SDK makes of it
        await _get(f"https://localhost:{hostile.port}/v1.0/users", sim_env)
    assert len(hostile.received) == 1 and b"GET /v1.0/users" in hostile.received[0]
    assert "authorization" not in hostile.text()
    assert not any(token.lower() in hostile.text() for token in sim_env.issued_tokens())


async def test_a_token_bound_for_the_graph_host_name_on_another_port_is_not_sent(
    sim_env: GraphSimulator, hostile: HostileListener
) -> None:
    # Same host name as Graph (127.0.0.1), another port: the SDK's host check would attach the token; the
    # auditor's own check stops the request before it leaves.
    with pytest.raises(GraphError) as caught:
        await _get(f"{hostile.origin}/v1.0/users", sim_env)
    assert f"127.0.0.1:{hostile.port}" in caught.value.message
    assert hostile.received == []
