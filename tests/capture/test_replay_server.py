"""The replay server over HTTPS, on a small hand-made capture: tokens issued with the captured claims,
paging links pointed at the replay, `$skiptoken` values ignored, `$batch` items answered by their own
request whatever the grouping, order and ids, a whole-batch failure served once, misses counted."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor.simulator.replay import ReplayServer

TENANT = "11111111-2222-3333-4444-555555555555"
CAPTURED = "https://graph.microsoft.com"


def _graph(
    seq: int, method: str, url: str, status: int, body: Any, request_body: Any = None
) -> dict[str, Any]:
    return {
        "seq": seq,
        "kind": "graph",
        "request": {"method": method, "url": f"{CAPTURED}/v1.0{url}", "headers": {}, "body": request_body},
        "response": {
            "status": status,
            "headers": {"content-type": "application/json", "retry-after": "0"},
            "body": body,
        },
    }


def _items(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    return {"requests": [{"id": i, "method": "GET", "url": u} for i, u in pairs]}


RECORDS = [
    {
        "seq": 1,
        "kind": "token",
        "request": {"method": "POST", "url": f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"},
        "response": {
            "status": 200,
            "headers": {},
            "body": {
                "token_type": "Bearer",
                "expires_in": 3599,
                "token_claims": {"tid": TENANT, "roles": ["User.Read.All"]},
            },
        },
    },
    _graph(
        2,
        "GET",
        "/users?$top=999",
        200,
        {"value": [{"id": "u1"}], "@odata.nextLink": f"{CAPTURED}/v1.0/users?$top=999&$skiptoken=CAPTURED1"},
    ),
    _graph(3, "GET", "/users?$top=999&$skiptoken=CAPTURED1", 200, {"value": [{"id": "u2"}]}),
    _graph(
        4,
        "POST",
        "/$batch",
        429,
        {"error": {"code": "TooManyRequests"}},
        _items([("a", "/users/u1/p"), ("b", "/users/u2/p")]),
    ),
    _graph(
        5,
        "POST",
        "/$batch",
        200,
        {
            "responses": [
                {"id": "y", "status": 200, "headers": {}, "body": {"who": "u2"}},
                {
                    "id": "x",
                    "status": 404,
                    "headers": {},
                    "body": {"error": {"code": "MailboxNotEnabledForRESTAPI"}},
                },
            ]
        },
        _items([("x", "/users/u1/p"), ("y", "/users/u2/p")]),
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayServer]:
    directory = tmp_path_factory.mktemp("capture")
    (directory / f"{TENANT}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    manifest = {
        "format": "uss-auditor-capture",
        "version": 1,
        "vendor": {"app_display_name": "USS AzureAD"},
        "tenants": [{"tenant_id": TENANT, "name": "T", "file": f"{TENANT}.jsonl", "client_id": "c"}],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with ReplayServer(Path(directory)) as replay:
        yield replay


def _client(server: ReplayServer) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(server.ca_file)), timeout=10)


def _token(server: ReplayServer, client: httpx.Client) -> str:
    answer = client.post(
        f"{server.authority}/{TENANT}/oauth2/v2.0/token",
        data={
            "client_id": "c",
            "client_secret": "anything",
            "grant_type": "client_credentials",
            "scope": "x",
        },
    )
    assert answer.status_code == 200
    token = str(answer.json()["access_token"])
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["tid"] == TENANT and claims["roles"] == ["User.Read.All"] and claims["exp"] > claims["iat"]
    return token


def test_replay_serves_pages_and_regrouped_batches(server: ReplayServer) -> None:
    with _client(server) as client:
        auth = {"Authorization": f"Bearer {_token(server, client)}"}
        page = client.get(f"{server.graph_url}/v1.0/users?%24top=999", headers=auth).json()
        assert page["value"] == [{"id": "u1"}]
        link = page["@odata.nextLink"]
        assert link.startswith(server.origin + "/v1.0/users?")
        other_token = link.replace("CAPTURED1", "SOMETHING-ELSE")  # skip tokens differ per run
        assert client.get(other_token, headers=auth).json()["value"] == [{"id": "u2"}]

        # The first batch carrying a captured whole-batch failure's item fails as a whole, once.
        first = client.post(
            f"{server.graph_url}/v1.0/$batch",
            headers=auth,
            json=_items([("1", "/users/u2/p"), ("2", "/users/u1/p")]),
        )
        assert first.status_code == 429
        # Then each item gets its own answer, whatever batch, position or id it comes with.
        alone = client.post(
            f"{server.graph_url}/v1.0/$batch", headers=auth, json=_items([("7", "/users/u2/p")])
        )
        assert alone.json()["responses"] == [{"id": "7", "status": 200, "headers": {}, "body": {"who": "u2"}}]
        again = client.post(
            f"{server.graph_url}/v1.0/$batch",
            headers=auth,
            json=_items([("9", "https://whatever.example/v1.0/users/u1/p")]),
        )
        assert [(r["id"], r["status"]) for r in again.json()["responses"]] == [("9", 404)]
        assert server.misses == []

        missing = client.get(f"{server.graph_url}/v1.0/groups", headers=auth)
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "ReplayNoCapturedAnswer"
        assert server.misses == [f"{TENANT} GET /v1.0/groups"]
        assert client.get(f"{server.graph_url}/v1.0/users?$top=999").status_code == 401  # no token of ours


def test_replay_refuses_a_token_for_a_tenant_not_in_the_capture(server: ReplayServer) -> None:
    with _client(server) as client:
        answer = client.post(f"{server.authority}/common-other/oauth2/v2.0/token", data={"client_id": "c"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_tenant"


def test_replay_config_audits_the_captured_tenants(server: ReplayServer) -> None:
    import tomllib

    config = tomllib.loads(server.config_text())
    assert config["auth"]["authority"] == server.authority
    assert [t["tenant_id"] for t in config["tenants"]] == [TENANT]
    assert config["vendor"] == {"app_display_name": "USS AzureAD"}
