"""The Graph client layer's own decisions: Retry-After, error answers, token claims, the tenant-wide pause,
where a token may go, and which credential a configured method gets.

Pure functions are table-driven; the pause is timed on the real `ThrottleGate` with real httpx responses.
The same parts run end to end over the SDKs in tests/simulator/ and tests/integration/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseTimeoutError
from azure.identity.aio import (
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from auditor.errors import ErrorCode, GraphError
from auditor.graph.client import (
    ConnectionSettings,
    GraphSession,
    TenantGuard,
    ThrottleGate,
    graph_origin,
    jwt_claims,
    lean_sender,
    make_credential,
    make_graph_client,
    odata_error,
    open_session,
    retry_after_seconds,
    send_for_bytes,
    tenant_mismatch,
    wrong_tenant_error,
)
from auditor.graph.reader import GraphReader
from auditor.simulator import FaultRule, GraphSimulator
from tests.conftest import DEMO_TENANTS, settings_for

T1 = "11111111-1111-1111-1111-111111111111"
T2 = "22222222-2222-2222-2222-222222222222"


# --- Retry-After -------------------------------------------------------------------------------------------


def http_date(seconds_from_now: float) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        (None, None),
        ({}, None),
        ("not a mapping", None),
        ({"Retry-After": "5"}, 5.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "1", "Retry-After": "9"}, 1.0),
        (httpx.Headers({"RETRY-AFTER": "7"}), 7.0),
        ({"Retry-After": " 3 "}, 3.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": ["6", "8"]}, 6.0),  # kiota's response headers hold lists / sets of values
        ({"Retry-After": ("4",)}, 4.0),
        ({"Retry-After": {"3"}}, 3.0),
        ({"Retry-After": frozenset({"2"})}, 2.0),
        ({"Retry-After": []}, None),
        ({"Retry-After": 12}, 12.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({"Retry-After": http_date(-3600)}, 0.0),  # a date in the past: no wait
    ],
)
def test_retry_after_is_read_as_seconds_or_left_unknown(headers: Any, seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


def test_retry_after_as_an_http_date_is_the_time_until_then() -> None:
    seconds = retry_after_seconds({"Retry-After": http_date(120)})
    assert seconds is not None and 118 <= seconds <= 120


# --- error answers as the SDK raises them ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code", "message", "request_id"),
    [
        (
            b'{"error": {"code": "BadRequest", "message": "No.", "innerError": {"request-id": "r1"}}}',
            "BadRequest",
            "No.",
            "r1",
        ),
        (b'{"error": {"code": "X", "innererror": {"request-id": "r2"}}}', "X", None, "r2"),
        (b'{"error": {"code": "X", "innerError": {"date": "today"}}}', "X", None, None),
        (b'{"error": {"code": "X", "innerError": "r3"}}', "X", None, None),
        (b'{"error": {"code": "", "message": ""}}', None, None, None),
        (b'{"error": "flat"}', None, None, None),
        (b"[1, 2]", None, None, None),
        (b"<html>502 Bad Gateway</html>", None, None, None),
        (b"", None, None, None),
    ],
)
def test_an_error_answer_becomes_the_odata_error_the_sdk_would_raise(
    content: bytes, code: str | None, message: str | None, request_id: str | None
) -> None:
    headers = {"Retry-After": "3"}
    exc = odata_error(502, headers, content)
    assert exc.response_status_code == 502 and exc.response_headers is headers
    assert exc.error is not None
    assert (exc.error.code, exc.error.message) == (code, message)
    found = exc.error.inner_error.request_id if exc.error.inner_error is not None else None
    assert found == request_id


# --- the tenant a token was issued for ---------------------------------------------------------------------


def part(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("claims", [{"tid": T1}, {"tid": T1, "roles": ["User.Read.All"]}, {"a": "b" * 7}])
def test_jwt_claims_reads_the_payload_whatever_its_padding(claims: dict[str, Any]) -> None:
    assert jwt_claims(f"{part({'alg': 'none'})}.{part(claims)}.sig") == claims


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("opaque-token", "the access token is not a JWT (expected three dot-separated parts)"),
        ("a.b.c.d", "the access token is not a JWT (expected three dot-separated parts)"),
        ("head..sig", "the access token is not a JWT (expected three dot-separated parts)"),
        ("head.a.sig", "the access token's payload is not base64url JSON (Error)"),
        ("head.bm90IGpzb24.sig", "the access token's payload is not base64url JSON (JSONDecodeError)"),
        ("head.__8.sig", "the access token's payload is not base64url JSON (UnicodeDecodeError)"),
        (f"head.{part([1, 2])}.sig", "the access token's payload is not a JSON object"),
    ],
)
def test_jwt_claims_refuses_what_is_not_a_jwt_with_a_reason(token: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        jwt_claims(token)
    assert str(info.value) == why


def test_a_token_for_another_tenant_is_explained_with_both_ids() -> None:
    error = wrong_tenant_error(T1, T2, "The access token")
    assert error.code is ErrorCode.WRONG_TENANT
    assert error.message == (
        f"The access token is for tenant {T2}, not the configured tenant_id {T1}; nothing was judged, so no "
        "verdict for another tenant's directory is reported"
    )
    assert error.hint == (
        f"The sign-in gave a token for tenant {T2}, but the config says tenant_id = {T1}. Check this tenant's "
        "tenant_id, authority and auth method: a managed identity only ever gets tokens for its own home "
        "tenant, and a client id, secret or authority copied from another tenant's entry signs in there."
    )


@pytest.mark.parametrize(
    ("organization", "token", "source", "found"),
    [
        (T1, T2.upper(), "The access token", T2),
        (T2.upper(), T1, "GET /organization", T2),
        (T2, T2, "The access token", T2),  # the token is named first
    ],
)
def test_a_mismatch_names_where_the_other_tenant_was_seen(
    organization: str, token: str, source: str, found: str
) -> None:
    error = tenant_mismatch(T1.upper(), organization, token)
    assert error is not None
    assert error.message.startswith(f"{source} is for tenant {found}, not the configured tenant_id {T1};")


def session_for(tenant_id: str, guard: TenantGuard | None) -> GraphSession:
    settings = ConnectionSettings(tenant_id, "app", "secret", "https://login.example", "https://g", "s")
    return GraphSession(settings, credential=None, client=None, gate=ThrottleGate(), guard=guard)  # type: ignore[arg-type]


def test_the_session_confirms_its_tenant_or_says_it_could_not(caplog: pytest.LogCaptureFixture) -> None:
    guard = TenantGuard(T1)
    guard.token_tenant_id = T1
    session_for(T1.upper(), guard).confirm_tenant({"id": T1.upper()})
    session_for(T1, None).confirm_tenant({"id": T1})
    session_for(T1, guard).confirm_tenant(None)
    assert not caplog.records
    with pytest.raises(GraphError) as info:
        session_for(T1, None).confirm_tenant({"id": T2})
    assert info.value.code is ErrorCode.WRONG_TENANT and info.value.message.startswith("GET /organization")
    guard.token_tenant_id = T2
    with pytest.raises(GraphError) as info:
        session_for(T1, guard).confirm_tenant({"id": T1})
    assert info.value.message.startswith(f"The access token is for tenant {T2}")
    lettered = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    with caplog.at_level(logging.WARNING, logger="auditor.graph.client"):
        session_for(lettered.upper(), TenantGuard(lettered)).confirm_tenant({"displayName": "no id"})
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"tenant {lettered}: neither the access token (not a JWT) nor GET /organization (not readable) names "
        "the tenant; it could not be confirmed that the credential signed in to it"
    )
    assert (record.tenant_id, record.event) == (lettered, "tenant_unconfirmed")  # type: ignore[attr-defined]


# --- where a token may go ----------------------------------------------------------------------------------


def jwt(tid: str) -> str:
    return f"Bearer {part({'alg': 'RS256'})}.{part({'tid': tid})}.c2ln"


async def test_a_token_is_not_sent_to_another_origin_than_graph() -> None:
    guard = TenantGuard(T1, "https://graph.example")
    for url in [
        "https://graph.example:8443/v1.0/users",
        "http://graph.example/v1.0/users",
        "https://evil.example/x",
    ]:
        with pytest.raises(GraphError) as info:
            await guard.on_request(httpx.Request("GET", url, headers={"Authorization": jwt(T1)}))
        scheme, rest = url.split("://")
        host = rest.split("/")[0]
        origin = (
            f"{scheme}://{host}" if ":" in host else f"{scheme}://{host}:{443 if scheme == 'https' else 80}"
        )
        assert info.value.code is ErrorCode.GRAPH_ERROR
        assert info.value.message == (
            f"A request carrying the Graph access token was about to go to {origin}, which is not the "
            "configured Graph endpoint; it was not sent"
        )
        assert (
            info.value.hint
            == "Check graph_endpoint in the config, and any proxy that rewrites Graph's answers."
        )
    assert guard.token_tenant_id is None
    # No token, no concern; to Graph, the token's tenant is checked.
    await guard.on_request(httpx.Request("GET", "https://evil.example/x"))
    await guard.on_request(
        httpx.Request("GET", "https://GRAPH.example:443/v1.0/users", headers={"Authorization": jwt(T1)})
    )
    assert guard.token_tenant_id == T1
    with pytest.raises(GraphError) as info:
        await guard.on_request(
            httpx.Request("GET", "https://graph.example/v1.0", headers={"Authorization": jwt(T2)})
        )
    assert info.value.code is ErrorCode.WRONG_TENANT
    assert info.value.message.startswith(
        f"The access token is for tenant {T2}, not the configured tenant_id {T1};"
    )
    # Without a configured endpoint only the tenant is checked.
    await TenantGuard(T1).on_request(
        httpx.Request("GET", "https://any.example/", headers={"Authorization": jwt(T1)})
    )


# --- the tenant-wide pause ---------------------------------------------------------------------------------


async def timed(gate: ThrottleGate) -> float:
    began = time.monotonic()
    await gate.wait()
    return time.monotonic() - began


async def test_the_gate_holds_requests_until_the_longest_pause_has_passed() -> None:
    gate = ThrottleGate()
    assert await timed(gate) < 0.05, "no pause, no wait"
    gate.pause(0.3)
    gate.pause(0.1)  # a shorter pause does not shorten the longer one
    assert 0.28 <= await timed(gate) < 1.0
    assert await timed(gate) < 0.05, "over once it has passed"


async def test_the_gate_waits_for_a_pause_pushed_further_out_while_it_waits() -> None:
    gate = ThrottleGate()
    gate.pause(0.2)

    async def later() -> None:
        await asyncio.sleep(0.1)
        gate.pause(0.3)

    began = time.monotonic()
    await asyncio.gather(gate.on_request(httpx.Request("GET", "https://g/")), later())
    assert time.monotonic() - began >= 0.38


@pytest.mark.parametrize(
    ("status", "headers", "paused"),
    [
        (429, {"Retry-After": "0.3"}, True),
        (429, {}, False),  # no Retry-After: that request backs off alone
        (503, {"Retry-After": "0.3"}, False),  # only throttling pauses the tenant
        (200, {"Retry-After": "0.3"}, False),
    ],
)
async def test_only_a_429_with_retry_after_pauses_the_tenant(
    status: int, headers: dict[str, str], paused: bool
) -> None:
    gate = ThrottleGate()
    await gate.on_response(httpx.Response(status, headers=headers))
    waited = await timed(gate)
    assert (waited >= 0.28) is paused and waited < 1.0


# --- the credential for each configured method -------------------------------------------------------------


def settings(method: str, **extra: Any) -> ConnectionSettings:
    return ConnectionSettings(
        T1,
        "c1",
        method,  # type: ignore[arg-type]
        "https://login.example",
        "https://graph.example",
        "https://graph.example/.default",
        **extra,
    )


@pytest.mark.parametrize(
    ("method", "extra", "kind"),
    [
        ("secret", {"client_secret": "s3cret"}, ClientSecretCredential),
        ("certificate", {"certificate_path": Path("cert.pem")}, CertificateCredential),
        ("workload_identity", {"token_file": Path("token")}, WorkloadIdentityCredential),
        ("managed_identity", {}, ManagedIdentityCredential),
    ],
)
async def test_each_method_gets_its_credential(
    tmp_path: Path, method: str, extra: dict[str, Any], kind: type
) -> None:
    if method == "certificate":
        extra = {"certificate_path": write_certificate(tmp_path)}
    credential = make_credential(settings(method, **extra))
    try:
        assert isinstance(credential, kind)
    finally:
        await credential.close()


def write_certificate(tmp_path: Path, password: bytes | None = None) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auditor")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "cert.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return path


@pytest.mark.parametrize(
    ("method", "why"),
    [
        ("secret", "a client secret is required for method 'secret'"),
        ("certificate", "a certificate path is required for method 'certificate'"),
        ("workload_identity", "a token file is required for method 'workload_identity'"),
    ],
)
def test_a_method_without_its_credential_material_is_refused(method: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        make_credential(settings(method, client_secret=""))
    assert str(info.value) == why


# --- the credential's own retries and trust, against the simulator's sign-in endpoint ----------------------


async def test_a_failing_sign_in_endpoint_gets_two_quick_retries_from_the_credential(
    sim: GraphSimulator,
) -> None:
    # azure-core would retry a token POST up to 10 times with 300 s time-outs; the auditor allows two retries,
    # and its own retry policy (inside the tenant's deadline) does the rest.
    sim.add_fault_rule(FaultRule(route="identity.token", status=503, times=50))
    began = time.monotonic()
    credential = make_credential(settings_for(sim, "contoso"))
    try:
        with pytest.raises(ClientAuthenticationError) as info:
            await credential.get_token(sim.scope)
    finally:
        await credential.close()
    assert info.value.status_code == 503
    assert sim.count(route="identity.token") == 3, "the first try and two retries"
    # at once, then after 1 s (azure-core's back-off: 0.5 s x 2 for the second retry; its default factor
    # of 0.8 would wait 1.6 s)
    assert 0.9 <= time.monotonic() - began < 2.5
    first, second, third = [r.time for r in sim.requests() if r.route == "identity.token"]
    assert second - first < 0.4 and 0.9 <= third - second < 1.4


async def test_the_credential_trusts_the_configured_ca_bundle(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    credential = make_credential(settings_for(sim, "contoso"))
    try:
        token = await credential.get_token(sim.scope)
    finally:
        await credential.close()
    assert jwt_claims(token.token)["tid"] == DEMO_TENANTS["contoso"]
    untrusted = make_credential(settings_for(sim, "contoso", ca_bundle=None))
    try:
        with pytest.raises(ServiceRequestError) as info:
            await untrusted.get_token(sim.scope)
    finally:
        await untrusted.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)


# --- the Graph client a session opens ------------------------------------------------------------------------


def get(session: GraphSession, path: str) -> Any:
    info = RequestInformation()
    info.http_method = Method.GET
    info.url = session.base_url + path
    info.headers.try_add("Accept", "application/json")
    return send_for_bytes(session.client, info)


async def test_the_sdk_does_not_retry_unless_told_to(sim: GraphSimulator) -> None:
    # Retries are the reader's (one tenant-wide pause for every Retry-After; a write never repeated blindly).
    sim.add_fault_rule(FaultRule(route="organization.list", status=503, retry_after=0))
    async with open_session(settings_for(sim, "contoso")) as session:
        assert session.base_url == sim.graph_url + "/v1.0"
        with pytest.raises(ODataError) as info:
            await get(session, "/organization")
    assert info.value.response_status_code == 503
    assert sim.count(route="organization.list") == 1
    sim.add_fault_rule(FaultRule(route="organization.list", status=503, retry_after=0))
    async with open_session(settings_for(sim, "contoso", sdk_retries=1)) as session:
        body = json.loads(await get(session, "/organization"))
    assert body["value"][0]["id"] == DEMO_TENANTS["contoso"]
    assert sim.count(route="organization.list") == 3, "once more, by the SDK's own retry"
    sim.add_fault_rule(FaultRule(route="organization.list", status=503, retry_after=0, times=5))
    async with open_session(settings_for(sim, "contoso", sdk_retries=1)) as session:
        with pytest.raises(ODataError):
            await get(session, "/organization")
    assert sim.count(route="organization.list") == 5, "as many retries as configured, no more"


async def test_a_slow_answer_is_given_up_on_after_the_request_timeout(sim: GraphSimulator) -> None:
    sim.add_fault_rule(FaultRule(route="organization.list", status=504, delay_seconds=3.0))
    async with open_session(settings_for(sim, "contoso", timeout_seconds=0.5)) as session:
        await get(session, "/users?$top=1")  # a token and a connection first
        began = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await get(session, "/organization")
    assert time.monotonic() - began < 2.0


async def test_a_slow_batch_is_given_up_on_after_the_request_timeout(sim: GraphSimulator) -> None:
    sim.add_fault_rule(FaultRule(route="batch", status=504, delay_seconds=2.0))
    async with open_session(settings_for(sim, "contoso", timeout_seconds=0.5)) as session:
        await get(session, "/organization")  # a token and a connection first
        lean = lean_sender(session.client)
        assert lean is not None
        began = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await lean.post_json(session.base_url + "/$batch", b'{"requests": []}')
    assert time.monotonic() - began < 1.5


async def test_a_closed_session_has_closed_its_clients(sim: GraphSimulator) -> None:
    async with open_session(settings_for(sim, "contoso")) as session:
        lean = lean_sender(session.client)
        assert lean is not None
        http = session.client.request_adapter._http_client  # type: ignore[attr-defined]
        await get(session, "/organization")  # through the SDK's adapter
        await GraphReader(session, "Contoso").organization()  # through the lean sender (aiohttp)
        wire = lean._session
        assert wire is not None and not wire.closed
    assert lean_sender(session.client) is None
    assert wire.closed and lean._session is None and http.is_closed


async def test_graph_is_trusted_through_the_ca_bundle_or_ssl_cert_file(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with open_session(settings_for(sim, "contoso")) as session:
        body = json.loads(await get(session, "/organization"))
        token = await session.credential.get_token(sim.scope)
    assert body["value"][0]["id"] == DEMO_TENANTS["contoso"]
    # Graph's own TLS, apart from the sign-in's: the token is handed over as it is.
    settings = settings_for(sim, "contoso", ca_bundle=None)

    async def organization() -> Any:
        client = make_graph_client(StaticToken(token.token), settings, ThrottleGate())  # type: ignore[arg-type]
        info = RequestInformation()
        info.http_method = Method.GET
        info.url = sim.graph_url + "/v1.0/organization"
        try:
            return json.loads(await send_for_bytes(client, info) or b"{}")
        finally:
            await client.request_adapter._http_client.aclose()  # type: ignore[attr-defined]

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        await organization()
    monkeypatch.setenv("SSL_CERT_FILE", str(sim.ca_file))
    assert (await organization())["value"][0]["id"] == DEMO_TENANTS["contoso"]


class StaticToken:
    """An already issued token, as a credential (the part of AsyncTokenCredential the SDK calls)."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        return None


async def test_the_credentials_pipeline_options_see_its_token_requests(sim: GraphSimulator) -> None:
    seen: list[str] = []
    options = {"raw_request_hook": lambda request: seen.append(request.http_request.url)}
    credential = make_credential(settings_for(sim, "contoso"), pipeline_options=options)
    try:
        await credential.get_token(sim.scope)
    finally:
        await credential.close()
    assert seen == [f"{sim.authority}/{DEMO_TENANTS['contoso']}/oauth2/v2.0/token"]


async def test_a_password_protected_certificate_is_opened_with_its_password(tmp_path: Path) -> None:
    path = write_certificate(tmp_path, password=b"pfx-pass")
    credential = make_credential(
        settings("certificate", certificate_path=path, certificate_password="pfx-pass")
    )
    await credential.close()
    with pytest.raises(ValueError):  # without it (or with another) the key cannot be read
        make_credential(settings("certificate", certificate_path=path, certificate_password="wrong"))


async def test_a_slow_sign_in_endpoint_costs_the_request_timeout_per_try(sim: GraphSimulator) -> None:
    sim.add_fault_rule(FaultRule(route="identity.token", status=503, delay_seconds=5.0, times=3))
    began = time.monotonic()
    credential = make_credential(settings_for(sim, "contoso", timeout_seconds=0.5))
    try:
        with pytest.raises(ServiceResponseTimeoutError):  # no answer in time
            await credential.get_token(sim.scope)
    finally:
        await credential.close()
    # three tries of 0.5 s each and a back-off of 1 s between the second and the third
    assert time.monotonic() - began < 4.5
    assert sim.count(route="identity.token") == 3


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://graph.example:notaport/v1.0", ("https", "graph.example", -1)),
        ("https:///v1.0", ("https", "", 443)),
        ("HTTP://Graph.Example:8080/", ("http", "graph.example", 8080)),
    ],
)
def test_graph_origin_of_odd_urls(url: str, origin: tuple[str, str, int]) -> None:
    assert graph_origin(url) == origin


async def test_a_trailing_slash_on_the_endpoint_is_not_doubled(sim: GraphSimulator) -> None:
    async with open_session(settings_for(sim, "contoso", graph_endpoint=sim.graph_url + "/")) as session:
        assert session.base_url == sim.graph_url + "/v1.0"
        body = json.loads(await get(session, "/organization"))
    assert body["value"][0]["id"] == DEMO_TENANTS["contoso"]


async def test_a_batch_refused_with_400_is_raised_like_the_sdks_adapter_does(sim: GraphSimulator) -> None:
    sim.add_fault_rule(
        FaultRule(route="batch", status=400, code="BadRequest", message="Invalid batch payload.")
    )
    async with open_session(settings_for(sim, "contoso")) as session:
        lean = lean_sender(session.client)
        assert lean is not None
        with pytest.raises(ODataError) as info:
            await lean.post_json(session.base_url + "/$batch", b'{"requests": []}')
        answer = await lean.post_json(
            session.base_url + "/$batch",
            b'{"requests": [{"id": "1", "method": "GET", "url": "/organization"}]}',
        )
    assert info.value.response_status_code == 400
    headers = info.value.response_headers  # Graph's headers come with it (Retry-After, request-id...)
    assert headers is not None and str(headers.get("content-type")).startswith("application/json")
    assert info.value.error is not None and info.value.error.code == "BadRequest"
    assert info.value.error.message == "Invalid batch payload."
    assert json.loads(answer)["responses"][0]["status"] == 200


async def test_response_hooks_see_every_answer(sim: GraphSimulator) -> None:
    statuses: list[int] = []

    async def on_response(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    sim.add_fault_rule(FaultRule(route="organization.list", status=429, retry_after=0))
    async with open_session(settings_for(sim, "contoso"), event_hooks={"response": [on_response]}) as session:
        with pytest.raises(ODataError):
            await get(session, "/organization")
        await get(session, "/organization")
    assert statuses == [429, 200]


async def test_a_lean_batch_is_sent_as_json_with_the_sessions_token(sim: GraphSimulator) -> None:
    sent: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        sent.append(request)

    payload = b'{"requests": [{"id": "1", "method": "GET", "url": "/organization"}]}'
    async with open_session(settings_for(sim, "contoso"), event_hooks={"request": [on_request]}) as session:
        lean = lean_sender(session.client)
        assert lean is not None
        await lean.post_json(session.base_url + "/$batch", payload)
    [request] = sent
    assert (request.method, str(request.url), request.content) == (
        "POST",
        sim.graph_url + "/v1.0/$batch",
        payload,
    )
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Bearer" and jwt_claims(token)["tid"] == DEMO_TENANTS["contoso"]


@pytest.mark.parametrize("method", ["secret", "certificate", "workload_identity"])
async def test_each_method_signs_in_as_the_configured_app_to_the_configured_tenant(
    sim: GraphSimulator, tmp_path: Path, method: str
) -> None:
    extra: dict[str, Any] = {}
    if method == "workload_identity":
        extra["token_file"] = tmp_path / "token"
        extra["token_file"].write_text(
            sim.identity.federated_token("system:serviceaccount:uss-auditor:auditor")
        )
    settings = settings_for(sim, "contoso", method=method, **extra)
    credential = make_credential(settings)
    try:
        claims = jwt_claims((await credential.get_token(sim.scope)).token)
    finally:
        await credential.close()
    assert claims["tid"] == DEMO_TENANTS["contoso"] and claims["appid"] == settings.client_id
