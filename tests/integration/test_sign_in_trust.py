"""The sign-in trusts what Graph trusts: the public roots, SSL_CERT_FILE and the configured ca_bundle.

DESIGN: `ca_bundle` is *extra* trust ("corp-ca.pem", for an inspecting proxy). azure-core's own
`connection_verify=<file>` trusts that file instead of the public roots, so an MSP whose ca_bundle is
meant for a proxy in front of Graph, while the sign-in goes out directly, could not sign in at all.
Here the simulator's CA stands for the public roots (through SSL_CERT_FILE, which the system store
reads) and the configured bundle is some other CA.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation

from auditor.graph.client import jwt_claims, make_credential, open_session, send_for_bytes
from auditor.simulator import GraphSimulator
from auditor.simulator.tls import make_server_tls
from tests.conftest import DEMO_TENANTS, settings_for
from tests.integration.test_lean_wire import connect_proxy


async def test_a_ca_bundle_adds_trust_to_the_sign_in_and_takes_none_away(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other_ca = make_server_tls(tmp_path / "proxy-ca").ca_file
    monkeypatch.setenv("SSL_CERT_FILE", str(sim.ca_file))
    settings = settings_for(sim, "contoso", ca_bundle=other_ca)
    credential = make_credential(settings)
    try:
        token = await credential.get_token(sim.scope)
    finally:
        await credential.close()
    assert jwt_claims(token.token)["tid"] == DEMO_TENANTS["contoso"]
    # The same settings for a whole session: sign-in and a Graph read.
    info = RequestInformation()
    info.http_method = Method.GET
    info.headers.try_add("Accept", "application/json")
    async with open_session(settings) as session:
        info.url = session.base_url + "/organization"
        raw = await send_for_bytes(session.client, info)
    assert json.loads(raw or b"{}")["value"][0]["id"] == DEMO_TENANTS["contoso"]
    assert sim.count(route="identity.token") >= 2


async def test_without_any_trust_for_the_endpoint_the_sign_in_is_refused(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A positive control for the test above: the other CA alone does not make the simulator trusted.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    credential = make_credential(
        settings_for(sim, "contoso", ca_bundle=make_server_tls(tmp_path / "proxy-ca").ca_file)
    )
    try:
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await credential.get_token(sim.scope)
    finally:
        await credential.close()


async def test_the_sign_in_goes_through_the_proxy_the_environment_names(
    sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An MSP's scheduler behind an outbound proxy sets HTTPS_PROXY; the sign-in must use it like Graph does.
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with connect_proxy() as (port, lines):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        credential = make_credential(settings_for(sim, "contoso"))
        try:
            token = await credential.get_token(sim.scope)
        finally:
            await credential.close()
    assert jwt_claims(token.token)["tid"] == DEMO_TENANTS["contoso"]
    authority = urlsplit(sim.authority)
    assert f"CONNECT {authority.hostname}:{authority.port} HTTP/1.1".encode() in lines
