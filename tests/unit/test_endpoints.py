"""Where secrets and tokens may go (issue 12 items 1-2) and which tenant a token is for (issue 10 case 6):
the config's endpoint rule, and the checks on tokens and links, table-driven."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from auditor.config import AuditConfig, is_microsoft_endpoint, load_config
from auditor.errors import ConfigError, ErrorCode, GraphError
from auditor.graph.client import TenantGuard, graph_origin, tenant_mismatch

T1 = "11111111-1111-1111-1111-111111111111"
T2 = "22222222-2222-2222-2222-222222222222"
CLIENT = "00000000-0000-0000-0000-0000000000c1"
AUTH = f'[auth]\nclient_id = "{CLIENT}"\nclient_secret_env = "AUDITOR_SECRET"\n'
TENANT = f'\n[[tenants]]\nname = "Contoso"\ntenant_id = "{T1}"\n'


def load(tmp_path: Path, text: str) -> AuditConfig:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


# --- the config rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key", "cloud", "microsoft"),
    [
        ("https://login.microsoftonline.com", "authority", "global", True),
        ("https://LOGIN.microsoftonline.com:443", "authority", "global", True),
        ("https://login.microsoft.com", "authority", "global", True),
        ("https://graph.microsoft.com", "graph_endpoint", "global", True),
        ("https://login.microsoftonline.us", "authority", "usgov", True),
        ("https://graph.microsoft.us", "graph_endpoint", "usgov", True),
        ("https://login.microsoftonline.us", "authority", "usgov-dod", True),
        ("https://dod-graph.microsoft.us", "graph_endpoint", "usgov-dod", True),
        ("https://login.chinacloudapi.cn", "authority", "china", True),
        ("https://microsoftgraph.chinacloudapi.cn", "graph_endpoint", "china", True),
        # another cloud's host: the token or secret would go to the wrong cloud
        ("https://graph.microsoft.us", "graph_endpoint", "global", False),
        ("https://login.microsoftonline.com", "authority", "china", False),
        # a Graph host as authority, and the reverse
        ("https://graph.microsoft.com", "authority", "global", False),
        ("https://login.microsoftonline.com", "graph_endpoint", "global", False),
        # look-alikes
        ("https://login.microsoftonline.com.evil.example", "authority", "global", False),
        ("https://login.microsoftonline.com@evil.example", "authority", "global", False),
        ("https://evil@login.microsoftonline.com", "authority", "global", False),
        ("https://login.microsoftonline.com:8443", "authority", "global", False),
        ("http://graph.microsoft.com", "graph_endpoint", "global", False),
        ("https://127.0.0.1:8443", "authority", "global", False),
        ("https://graph.microsoft.com:notaport", "graph_endpoint", "global", False),
    ],
)
def test_microsoft_hosts_per_cloud(url: str, key: str, cloud: str, microsoft: bool) -> None:
    assert is_microsoft_endpoint(url, key, cloud) is microsoft


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (AUTH + 'authority = "https://login.evil.example"\n' + TENANT, "auth.authority"),
        (AUTH + 'graph_endpoint = "https://graph.evil.example"\n' + TENANT, "auth.graph_endpoint"),
        (AUTH + TENANT + 'authority = "https://login.evil.example"\n', "tenants[0].authority"),
        (
            AUTH + TENANT + '[tenants.auth]\ngraph_endpoint = "https://x.example"\n',
            "tenants[0].auth.graph_endpoint",
        ),
        (
            AUTH + '\n[remediation_auth]\nauthority = "https://login.evil.example"\n' + TENANT,
            "remediation_auth.authority",
        ),
        (
            AUTH + TENANT + '[tenants.remediation_auth]\nauthority = "https://login.evil.example"\n',
            "tenants[0].remediation_auth.authority",
        ),
        # a Microsoft host of another cloud than the tenant's
        (
            AUTH + 'cloud = "usgov"\nauthority = "https://login.microsoftonline.com"\n' + TENANT,
            "auth.authority",
        ),
        (
            AUTH + TENANT + 'cloud = "china"\ngraph_endpoint = "https://graph.microsoft.com"\n',
            "tenants[0].graph_endpoint",
        ),
        # the [auth] override inherited by a tenant whose own cloud is usgov-dod
        (
            AUTH + 'graph_endpoint = "https://graph.microsoft.us"\n' + TENANT + 'cloud = "usgov-dod"\n'
            'graph_endpoint = "https://graph.microsoft.us"\n',
            "tenants[0].graph_endpoint",
        ),
    ],
)
def test_an_endpoint_off_the_clouds_microsoft_hosts_is_refused(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert caught.value.key == key and caught.value.exit_code == 2
    assert "allow_custom_endpoints = true" in message and "Fix:" in message


def test_microsoft_endpoints_written_out_are_accepted_and_not_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        AUTH
        + 'authority = "https://login.microsoftonline.com/"\ngraph_endpoint = "https://graph.microsoft.com/v1.0"\n'
        + TENANT
        + f'[[tenants]]\nname = "Gov"\ntenant_id = "{T2}"\ncloud = "usgov-dod"\n'
        'authority = "https://login.microsoftonline.us"\ngraph_endpoint = "https://dod-graph.microsoft.us"\n'
    )
    with caplog.at_level(logging.WARNING):
        config = load(tmp_path, text)
    assert not config.allow_custom_endpoints and config.custom_endpoints == ()
    assert config.tenants[1].auth.scope == "https://dod-graph.microsoft.us/.default"
    assert not [r for r in caplog.records if getattr(r, "event", None) == "custom_endpoints"]


def test_allow_custom_endpoints_accepts_them_and_every_load_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = (
        AUTH
        + 'allow_custom_endpoints = true\nauthority = "https://127.0.0.1:8443"\n'
        + 'graph_endpoint = "https://127.0.0.1:8443"\n'
        + TENANT
        + 'graph_endpoint = "https://graph.test.example"\n'
    )
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            config = load(tmp_path, text)
        (record,) = [r for r in caplog.records if getattr(r, "event", None) == "custom_endpoints"]
        message = record.getMessage()
        assert "https://127.0.0.1:8443 (auth.authority)" in message
        assert "https://graph.test.example (tenants[0].graph_endpoint)" in message
    assert config.allow_custom_endpoints
    assert config.custom_endpoints == (
        ("auth.authority", "https://127.0.0.1:8443"),
        ("tenants[0].graph_endpoint", "https://graph.test.example"),
    )


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (AUTH + TENANT + "allow_custom_endpoints = true\n", "tenants[0].allow_custom_endpoints", "[auth]"),
        (
            AUTH + TENANT + "[tenants.auth]\nallow_custom_endpoints = true\n",
            "tenants[0].auth.allow_custom_endpoints",
            "[auth]",
        ),
        (
            AUTH + "\n[remediation_auth]\nallow_custom_endpoints = true\n" + TENANT,
            "remediation_auth.allow_custom_endpoints",
            "[auth]",
        ),
        (AUTH + 'allow_custom_endpoints = "yes"\n' + TENANT, "auth.allow_custom_endpoints", "true or false"),
    ],
)
def test_allow_custom_endpoints_is_a_fleet_wide_boolean(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.key == key and words in str(caught.value)


# --- which tenant a token is for --------------------------------------------------------------------------


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


@pytest.mark.parametrize(
    ("header", "refused", "tid", "opaque"),
    [
        (f"Bearer {jwt({'tid': T1})}", False, T1, False),
        (f"bearer {jwt({'tid': T1.upper()})}", False, T1, False),
        (f"Bearer {jwt({'tid': T2})}", True, T2, False),
        (f"Bearer {jwt({'appid': CLIENT})}", False, None, True),  # a JWT without tid: cannot tell
        ("Bearer EwBwA8l6BAAUopaque-token-from-another-issuer", False, None, True),
        (f"Bearer {jwt({'tid': 7})}", False, None, True),
        (None, False, None, False),
        ("Basic dXNlcjpwYXNz", False, None, False),
    ],
)
def test_the_guard_reads_the_tenant_of_each_token(
    header: str | None, refused: bool, tid: str | None, opaque: bool
) -> None:
    guard = TenantGuard(T1.upper(), "https://graph.microsoft.com")
    if refused:
        with pytest.raises(GraphError) as caught:
            guard.check_authorization(header)
        assert caught.value.code is ErrorCode.WRONG_TENANT
        assert T1 in caught.value.hint and T2 in caught.value.hint
    else:
        guard.check_authorization(header)
    assert guard.token_tenant_id == tid and guard.opaque is opaque


def test_the_guard_checks_a_new_token_even_after_a_good_one() -> None:
    guard = TenantGuard(T1)
    guard.check_authorization(f"Bearer {jwt({'tid': T1})}")
    guard.check_authorization(f"Bearer {jwt({'tid': T1})}")  # the same header again: remembered
    with pytest.raises(GraphError):
        guard.check_authorization(f"Bearer {jwt({'tid': T2, 'exp': 1})}")


@pytest.mark.parametrize(
    ("organization", "token", "wrong"),
    [
        (T1, T1, None),
        (None, T1, None),  # /organization not readable: the token decides
        (T1, None, None),  # opaque token: /organization decides
        (None, None, None),  # neither: cannot be confirmed (logged by the session), not an error
        (T2, T1, T2),
        (T1, T2, T2),
        (T2, None, T2),
        (None, T2.upper(), T2),
    ],
)
def test_tenant_mismatch(organization: str | None, token: str | None, wrong: str | None) -> None:
    error = tenant_mismatch(T1.upper(), organization, token)
    if wrong is None:
        assert error is None
    else:
        assert error is not None and error.code is ErrorCode.WRONG_TENANT
        assert wrong in error.message and T1 in error.message


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://graph.microsoft.com/v1.0/users?$skiptoken=x", ("https", "graph.microsoft.com", 443)),
        ("https://GRAPH.microsoft.com:443/v1.0", ("https", "graph.microsoft.com", 443)),
        ("https://127.0.0.1:8443/v1.0", ("https", "127.0.0.1", 8443)),
        ("http://localhost/v1.0", ("http", "localhost", 80)),
        ("https://graph.microsoft.com@evil.example/v1.0", ("https", "evil.example", 443)),
    ],
)
def test_graph_origin(url: str, origin: tuple[str, str, int]) -> None:
    assert graph_origin(url) == origin
