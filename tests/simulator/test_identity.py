"""The simulator's identity endpoint, driven by real azure-identity async credentials over HTTPS."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError

from auditor.graph.client import make_credential
from auditor.simulator import GraphSimulator
from auditor.simulator.world import AUDIT_PERMISSIONS, REMEDIATION_PERMISSIONS
from tests.conftest import DEMO_TENANTS, graph_session, settings_for


def _claims(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


@pytest.mark.parametrize("method", ["secret", "certificate"])
async def test_client_credentials_token_carries_tenant_app_and_consented_permissions(
    sim: GraphSimulator, method: str
) -> None:
    settings = settings_for(sim, "contoso", method=method)
    credential = make_credential(settings)
    try:
        token = await credential.get_token(sim.scope)
    finally:
        await credential.close()
    claims = _claims(token.token)
    assert claims["tid"] == DEMO_TENANTS["contoso"]
    assert claims["appid"] == settings.client_id
    assert claims["aud"] == sim.graph_url
    assert sorted(claims["roles"]) == sorted(REMEDIATION_PERMISSIONS)  # type: ignore[arg-type]
    assert token.expires_on > 0


async def test_permissions_in_token_follow_each_tenants_consent(sim: GraphSimulator) -> None:
    credential = make_credential(settings_for(sim, "fourthcoffee"))
    try:
        claims = _claims((await credential.get_token(sim.scope)).token)
    finally:
        await credential.close()
    assert "RoleManagement.Read.Directory" not in claims["roles"]  # type: ignore[operator]
    assert set(claims["roles"]) < set(AUDIT_PERMISSIONS)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tenant", "overrides", "error", "aadsts"),
    [
        # the customer's app whose secret was rotated: the MSP still holds the previous one
        ("relecloud", {"app": "relecloud-local", "previous": True}, "invalid_client", "AADSTS7000215"),
        ("00000000-0000-0000-0000-00000000dead", {}, "invalid_tenant", "AADSTS90002"),
        (
            "contoso",
            {"client_id": "11111111-2222-3333-4444-555555555555"},
            "unauthorized_client",
            "AADSTS700016",
        ),
        # the MSP's app was never consented in this customer's tenant
        ("relecloud", {}, "unauthorized_client", "AADSTS700016"),
    ],
)
async def test_sign_in_failures_answer_like_entra(
    sim: GraphSimulator, tenant: str, overrides: dict[str, object], error: str, aadsts: str
) -> None:
    overrides = dict(overrides)  # the parameters are shared by every run of this test in the process
    app = str(overrides.pop("app", "auditor"))
    previous = overrides.pop("previous", False)
    settings = settings_for(sim, tenant, app=app, **overrides)
    if previous:
        settings = settings_for(
            sim, tenant, app=app, client_secret=sim.credentials["USS_DEMO_RELECLOUD_PREVIOUS_SECRET"]
        )
    credential = make_credential(settings)
    try:
        with pytest.raises(ClientAuthenticationError) as caught:
            await credential.get_token(sim.scope)
    finally:
        await credential.close()
    assert f"({error})" in caught.value.message
    assert aadsts in caught.value.message
    # a rejected secret is never echoed back
    assert settings.client_secret is None or settings.client_secret not in caught.value.message


async def test_certificate_not_registered_on_the_app_is_refused(sim: GraphSimulator, tmp_path: Path) -> None:
    from auditor.simulator.tls import make_client_certificate

    rogue = make_client_certificate(tmp_path / "rogue.pem", "rogue")
    credential = make_credential(
        settings_for(sim, "contoso", method="certificate", certificate_path=rogue.pem_file)
    )
    try:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
            await credential.get_token(sim.scope)
    finally:
        await credential.close()


async def test_workload_identity_federated_token(sim: GraphSimulator, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(sim.identity.federated_token("system:serviceaccount:uss-auditor:auditor"))
    settings = settings_for(sim, "contoso", method="workload_identity", token_file=token_file)
    async with graph_session(sim, "contoso", method="workload_identity", token_file=token_file) as session:
        org = await session.client.organization.get()
    assert org is not None and org.value and org.value[0].display_name == "Contoso Healthcare"
    token_file.write_text(sim.identity.federated_token("system:serviceaccount:other:intruder"))
    credential = make_credential(settings)
    try:
        with pytest.raises(ClientAuthenticationError, match="AADSTS70021"):
            await credential.get_token(sim.scope)
    finally:
        await credential.close()


async def test_openid_configuration_and_token_endpoint_agree(sim: GraphSimulator) -> None:
    tenant = DEMO_TENANTS["contoso"]
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=sim.ca_file)) as http:
        doc = (await http.get(f"{sim.authority}/{tenant}/v2.0/.well-known/openid-configuration")).json()
        missing = await http.get(f"{sim.authority}/not-a-tenant/v2.0/.well-known/openid-configuration")
    assert doc["token_endpoint"] == f"{sim.authority}/{tenant}/oauth2/v2.0/token"
    assert doc["issuer"] == f"{sim.authority}/{tenant}/v2.0"
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_tenant"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [(None, "Access token is empty."), ("Bearer not.a.token", "Access token validation failure")],
)
async def test_graph_requires_a_valid_bearer_token(
    sim: GraphSimulator, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=sim.ca_file)) as http:
        response = await http.get(f"{sim.graph_url}/v1.0/organization", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert message in error["message"]
    assert error["innerError"]["request-id"] == response.headers["request-id"]


async def test_token_for_another_audience_is_refused(sim: GraphSimulator) -> None:
    credential = make_credential(settings_for(sim, "contoso"))
    try:
        token = await credential.get_token("https://management.example/.default")
    finally:
        await credential.close()
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=sim.ca_file)) as http:
        response = await http.get(
            f"{sim.graph_url}/v1.0/organization", headers={"Authorization": f"Bearer {token.token}"}
        )
    assert response.status_code == 401
    assert "audience" in response.json()["error"]["message"]


def test_secrets_are_fresh_per_start_and_never_logged(sim: GraphSimulator) -> None:
    secret = sim.credentials["USS_DEMO_AUDITOR_SECRET"]
    assert len(secret) >= 30
    assert all(secret not in repr(record) for record in sim.requests())
    assert "USS_DEMO_AUDITOR_CERTIFICATE" in sim.credentials
    cert = Path(sim.credentials["USS_DEMO_AUDITOR_CERTIFICATE"])
    assert cert.stat().st_mode & 0o077 == 0, "private key must be readable by its owner only"
