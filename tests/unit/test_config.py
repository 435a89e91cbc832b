"""Tests of the config loader (auditor.config): valid files, every validation error, auth resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.config import (
    AuditConfig,
    AuthMethod,
    BillingSettings,
    RunSettings,
    VendorSettings,
    load_config,
    select_tenants,
)
from auditor.constants import CLOUDS
from auditor.errors import ConfigError
from auditor.evaluate import EvaluationSettings

REPO = Path(__file__).resolve().parents[2]
T1 = "11111111-1111-1111-1111-111111111111"
T2 = "22222222-2222-2222-2222-222222222222"
T3 = "33333333-3333-3333-3333-333333333333"
CLIENT = "00000000-0000-0000-0000-0000000000c1"

AUTH = f"""
[auth]
client_id = "{CLIENT}"
certificate_path = "certs/auditor.pem"
"""
# [auth] for tests of endpoint overrides that are not Microsoft hosts (a simulator or test double).
CUSTOM = AUTH + "allow_custom_endpoints = true\n"
TENANT = f"""
[[tenants]]
name = "Contoso"
tenant_id = "{T1}"
"""


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> AuditConfig:
    return load_config(write(tmp_path, text))


def config_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# --- valid configs ----------------------------------------------------------------------------------------


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config" / "example.toml")
    assert [t.name for t in config.tenants] == ["Contoso", "Fabrikam", "Tailspin US Gov"]
    assert config.billing == BillingSettings(2.5, "GBP")
    fabrikam = config.tenants[1]
    assert (
        fabrikam.auth.method is AuthMethod.SECRET
        and fabrikam.auth.client_secret_env == "FABRIKAM_AUDITOR_SECRET"
    )
    assert fabrikam.price_per_mailbox == 3.0 and fabrikam.remediate is False
    assert config.tenants[2].auth.graph_endpoint == "https://graph.microsoft.us"


def test_minimal_config_gets_the_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, AUTH + TENANT)
    assert config.path == (tmp_path / "fleet.toml").resolve()
    assert config.vendor == VendorSettings("USS AzureAD", "", "", "Exchange.ManageAsApp")
    assert config.vendor.checks_exchange
    assert config.billing == BillingSettings(0.0, "GBP")
    assert config.run == RunSettings(8, 600.0)
    (tenant,) = config.tenants
    assert (tenant.name, tenant.tenant_id, tenant.tags, tenant.remediate, tenant.price_per_mailbox) == (
        "Contoso",
        T1,
        (),
        True,
        0.0,
    )
    auth = tenant.auth
    assert auth.method is AuthMethod.CERTIFICATE
    assert auth.client_id == CLIENT
    assert auth.certificate_path == (tmp_path / "certs" / "auditor.pem").resolve()
    assert (auth.cloud, auth.authority, auth.graph_endpoint, auth.scope) == (
        "global",
        "https://login.microsoftonline.com",
        "https://graph.microsoft.com",
        "https://graph.microsoft.com/.default",
    )
    assert auth.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert auth.client_secret_env is None and auth.token_file_path is None and auth.ca_bundle is None


def test_full_config(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        f"""
        [vendor]
        app_display_name = "USS AzureAD"
        app_id = "{T3.upper()}"
        publisher_tenant_id = "{T2}"
        exchange_app_role = ""

        [billing]
        price_per_mailbox = 2
        currency = "eur"

        [run]
        concurrency = 32
        tenant_timeout_seconds = 90

        {AUTH}

        [[tenants]]
        name = "  Contoso  "
        tenant_id = "{T1.upper()}"
        tags = ["gold", "uk", "gold"]
        remediate = false
        price_per_mailbox = 3.25
        """,
    )
    assert config.vendor == VendorSettings("USS AzureAD", T3, T2, "")
    assert not config.vendor.checks_exchange
    assert config.billing == BillingSettings(2.0, "EUR")
    assert config.run == RunSettings(32, 90.0)
    tenant = config.tenants[0]
    assert tenant.name == "Contoso" and tenant.tenant_id == T1  # trimmed / lower-cased
    assert tenant.tags == ("gold", "uk")
    assert tenant.remediate is False and tenant.price_per_mailbox == 3.25
    settings = EvaluationSettings.for_tenant(config, tenant)
    assert (settings.price_per_mailbox, settings.currency, settings.tags) == (3.25, "EUR", ("gold", "uk"))
    assert settings.vendor is config.vendor


@pytest.mark.parametrize("cloud", list(CLOUDS))
def test_cloud_table(tmp_path: Path, cloud: str) -> None:
    auth = load(tmp_path, AUTH + f'cloud = "{cloud}"\n' + TENANT).tenants[0].auth
    expected = {
        "global": ("https://login.microsoftonline.com", "https://graph.microsoft.com"),
        "usgov": ("https://login.microsoftonline.us", "https://graph.microsoft.us"),
        "usgov-dod": ("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
        "china": ("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
    }[cloud]
    assert (auth.cloud, auth.authority, auth.graph_endpoint) == (cloud, *expected)
    assert auth.scope == f"{expected[1]}/.default"


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("https://graph.example.com", "https://graph.example.com"),
        ("https://graph.example.com/", "https://graph.example.com"),
        ("https://graph.example.com/v1.0/", "https://graph.example.com"),
        ("https://127.0.0.1:8443/sim", "https://127.0.0.1:8443/sim"),
        ("http://localhost:8080", "http://localhost:8080"),
    ],
)
def test_endpoint_overrides_win_and_scope_follows(tmp_path: Path, written: str, stored: str) -> None:
    text = (
        CUSTOM + f'cloud = "china"\nauthority = "https://login.example.com/"\ngraph_endpoint = "{written}"\n'
    )
    auth = load(tmp_path, text + TENANT).tenants[0].auth
    assert auth.authority == "https://login.example.com"
    assert auth.graph_endpoint == stored
    assert auth.scope == f"{stored}/.default"
    assert auth.graph_base_url == f"{stored}/v1.0"


def test_tenant_cloud_resets_inherited_endpoint_overrides(tmp_path: Path) -> None:
    text = CUSTOM + 'graph_endpoint = "https://graph.example.com"\n' + TENANT + 'cloud = "usgov"\n'
    text += f'[[tenants]]\nname = "Sim"\ntenant_id = "{T2}"\n'
    gov, sim = load(tmp_path, text).tenants
    assert gov.auth.graph_endpoint == "https://graph.microsoft.us"
    assert sim.auth.graph_endpoint == "https://graph.example.com"


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real CA certificate: ca_bundle files are checked (exist, parse) when the config is loaded."""
    from auditor.simulator.tls import make_server_tls

    return make_server_tls(tmp_path_factory.mktemp("tls")).ca_file.read_bytes()


def put_ca(path: Path, pem: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)


def test_tenant_overrides_every_auth_key(tmp_path: Path, ca_pem: bytes) -> None:
    put_ca(tmp_path / "ca" / "corp.pem", ca_pem)
    put_ca(tmp_path / "other-ca.pem", ca_pem)
    text = (
        CUSTOM
        + 'ca_bundle = "ca/corp.pem"\n'
        + TENANT
        + f"""
        client_id = "{T3}"
        certificate_path = "/abs/other.pem"
        certificate_password_env = "OTHER_PW"
        cloud = "china"
        authority = "https://login.other.example"
        graph_endpoint = "https://graph.other.example"
        ca_bundle = "other-ca.pem"
        """
    )
    auth = load(tmp_path, text).tenants[0].auth
    assert auth.client_id == T3
    assert auth.certificate_path == Path("/abs/other.pem")
    assert auth.certificate_password_env == "OTHER_PW"
    assert auth.cloud == "china"
    assert auth.authority == "https://login.other.example"
    assert auth.graph_endpoint == "https://graph.other.example"
    assert auth.scope == "https://graph.other.example/.default"
    assert auth.ca_bundle == (tmp_path / "other-ca.pem").resolve()


def test_nested_tenant_auth_table(tmp_path: Path) -> None:
    text = AUTH + TENANT + '[tenants.auth]\nclient_secret_env = "CONTOSO_SECRET"\ncloud = "usgov"\n'
    auth = load(tmp_path, text).tenants[0].auth
    assert auth.method is AuthMethod.SECRET and auth.client_secret_env == "CONTOSO_SECRET"
    assert auth.certificate_path is None  # irrelevant keys of another method are dropped
    assert auth.cloud == "usgov"


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ca_pem: bytes
) -> None:
    conf_dir = tmp_path / "etc" / "auditor"
    conf_dir.mkdir(parents=True)
    put_ca(conf_dir / "ca.pem", ca_pem)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    text = f"""
    [auth]
    client_id = "{CLIENT}"
    method = "workload_identity"
    token_file_path = "../tokens/federated"
    ca_bundle = "ca.pem"
    certificate_path = "ignored.pem"
    [[tenants]]
    name = "A"
    tenant_id = "{T1}"
    [[tenants]]
    name = "B"
    tenant_id = "{T2}"
    method = "certificate"
    """
    a, b = load_config(write(conf_dir, text)).tenants
    assert a.auth.token_file_path == (tmp_path / "etc" / "tokens" / "federated").resolve()
    assert a.auth.ca_bundle == (conf_dir / "ca.pem").resolve()
    assert a.auth.certificate_path is None
    assert b.auth.certificate_path == (conf_dir / "ignored.pem").resolve()


AUTH_METHOD_CASES = [
    # (auth section, tenant extras, expected method, expected env/path attribute)
    ('certificate_path = "c.pem"', "", AuthMethod.CERTIFICATE),
    ('client_secret_env = "S"', "", AuthMethod.SECRET),
    ('token_file_path = "/t"', "", AuthMethod.WORKLOAD_IDENTITY),
    ('method = "workload_identity"', "", AuthMethod.WORKLOAD_IDENTITY),
    ('method = "MANAGED_IDENTITY"', "", AuthMethod.MANAGED_IDENTITY),
    ('certificate_path = "c.pem"', 'client_secret_env = "S"', AuthMethod.SECRET),  # tenant level decides
    ('client_secret_env = "S"', 'certificate_path = "c.pem"', AuthMethod.CERTIFICATE),
    ('certificate_path = "c.pem"\nclient_secret_env = "S"\nmethod = "secret"', "", AuthMethod.SECRET),
    ('certificate_path = "c.pem"', 'method = "managed_identity"', AuthMethod.MANAGED_IDENTITY),
    ('certificate_path = "c.pem"\nclient_secret_env = "S"', 'method = "certificate"', AuthMethod.CERTIFICATE),
]


@pytest.mark.parametrize(("auth", "tenant", "method"), AUTH_METHOD_CASES)
def test_auth_method_resolution(tmp_path: Path, auth: str, tenant: str, method: AuthMethod) -> None:
    text = f'[auth]\nclient_id = "{CLIENT}"\n{auth}\n{TENANT}{tenant}\n'
    resolved = load(tmp_path, text).tenants[0].auth
    assert resolved.method is method
    assert (resolved.client_secret_env is not None) == (method is AuthMethod.SECRET)
    assert (resolved.certificate_path is not None) == (method is AuthMethod.CERTIFICATE)


def test_managed_identity_needs_no_client_id(tmp_path: Path) -> None:
    auth = load(tmp_path, '[auth]\nmethod = "managed_identity"\n' + TENANT).tenants[0].auth
    assert auth.method is AuthMethod.MANAGED_IDENTITY and auth.client_id is None


def test_secrets_are_referenced_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    text = f'[auth]\nclient_id = "{CLIENT}"\nclient_secret_env = "NOT_SET_ANYWHERE"\n' + TENANT
    # an unset variable is the credential layer's business (a per-tenant AUTH error), not a config error
    assert load(tmp_path, text).tenants[0].auth.client_secret_env == "NOT_SET_ANYWHERE"


# --- errors -----------------------------------------------------------------------------------------------

GOOD = AUTH + TENANT
ERROR_CASES = [
    # (id, config text, key path in the message, fragment of the message)
    ("unknown top-level", GOOD + "[tenant]\nx = 1\n", "tenant", "did you mean 'tenants'"),
    ("unknown vendor key", '[vendor]\nappid = ""\n' + GOOD, "vendor.appid", "did you mean 'app_id'"),
    (
        "unknown billing key",
        "[billing]\nprice = 2\n" + GOOD,
        "billing.price",
        "did you mean 'price_per_mailbox'",
    ),
    ("unknown run key", "[run]\nconcurency = 2\n" + GOOD, "run.concurency", "did you mean 'concurrency'"),
    ("unknown auth key", AUTH + 'client = "x"\n' + TENANT, "auth.client", "unknown key"),
    ("unknown tenant key", GOOD + "tenantid = 1\n", "tenants[0].tenantid", "did you mean 'tenant_id'"),
    ("unknown nested auth key", GOOD + "[tenants.auth]\ncloudd = 1\n", "tenants[0].auth.cloudd", "'cloud'"),
    ("vendor not a table", 'vendor = "x"\n' + GOOD, "vendor", "must be a table"),
    ("bad vendor app_id", '[vendor]\napp_id = "uss"\n' + GOOD, "vendor.app_id", "'uss' is not a GUID"),
    (
        "bad publisher",
        "[vendor]\npublisher_tenant_id = 5\n" + GOOD,
        "vendor.publisher_tenant_id",
        "GUID string",
    ),
    (
        "no way to find the app",
        '[vendor]\napp_display_name = ""\n' + GOOD,
        "vendor.app_display_name",
        "app_id",
    ),
    (
        "vendor name not a string",
        "[vendor]\napp_display_name = 1\n" + GOOD,
        "vendor.app_display_name",
        "string",
    ),
    ("negative price", "[billing]\nprice_per_mailbox = -1\n" + GOOD, "billing.price_per_mailbox", ">= 0"),
    ("price as text", '[billing]\nprice_per_mailbox = "2.50"\n' + GOOD, "billing.price_per_mailbox", ">= 0"),
    ("price as bool", "[billing]\nprice_per_mailbox = true\n" + GOOD, "billing.price_per_mailbox", ">= 0"),
    ("price is nan", "[billing]\nprice_per_mailbox = nan\n" + GOOD, "billing.price_per_mailbox", ">= 0"),
    ("bad currency", '[billing]\ncurrency = "pounds"\n' + GOOD, "billing.currency", "3-letter"),
    ("zero concurrency", "[run]\nconcurrency = 0\n" + GOOD, "run.concurrency", "1 to 1000"),
    ("concurrency as text", '[run]\nconcurrency = "8"\n' + GOOD, "run.concurrency", "whole number"),
    (
        "negative timeout",
        "[run]\ntenant_timeout_seconds = -5\n" + GOOD,
        "run.tenant_timeout_seconds",
        "positive",
    ),
    ("no tenants", AUTH, "tenants", "no tenants are configured"),
    ("tenants not tables", 'tenants = ["Contoso"]\n' + AUTH, "tenants", "array of tables"),
    ("missing name", AUTH + f'[[tenants]]\ntenant_id = "{T1}"\n', "tenants[0].name", "non-empty name"),
    ("blank name", AUTH + f'[[tenants]]\nname = " "\ntenant_id = "{T1}"\n', "tenants[0].name", "non-empty"),
    (
        "missing tenant id",
        AUTH + '[[tenants]]\nname = "Contoso"\n',
        "tenants[0].tenant_id",
        "has no tenant_id",
    ),
    (
        "bad tenant id",
        GOOD + '[[tenants]]\nname = "Fabrikam"\ntenant_id = "fabrikam.onmicrosoft.com"\n',
        "tenants[1].tenant_id",
        "tenant 'Fabrikam': 'fabrikam.onmicrosoft.com' is not a GUID",
    ),
    ("tags not a list", GOOD + 'tags = "gold"\n', "tenants[0].tags", "list of non-empty strings"),
    ("empty tag", GOOD + 'tags = ["gold", ""]\n', "tenants[0].tags", "list of non-empty strings"),
    ("remediate as text", GOOD + 'remediate = "yes"\n', "tenants[0].remediate", "true or false"),
    ("tenant price", GOOD + "price_per_mailbox = -2\n", "tenants[0].price_per_mailbox", "tenant 'Contoso'"),
    (
        "duplicate name",
        GOOD + f'[[tenants]]\nname = "CONTOSO"\ntenant_id = "{T2}"\n',
        "tenants[1].name",
        "duplicate tenant name 'CONTOSO' (also tenants[0]",
    ),
    (
        "duplicate tenant id",
        GOOD + f'[[tenants]]\nname = "Other"\ntenant_id = "{T1.upper()}"\n',
        "tenants[1].tenant_id",
        f"duplicate tenant_id {T1}",
    ),
    ("unknown cloud", AUTH + 'cloud = "gloabl"\n' + TENANT, "auth.cloud", "did you mean 'global'"),
    ("unknown method", AUTH + 'method = "cert"\n' + TENANT, "auth.method", "unknown method 'cert'"),
    (
        "bad client id",
        '[auth]\nclient_id = "x"\ncertificate_path = "c"\n' + TENANT,
        "auth.client_id",
        "not a GUID",
    ),
    (
        "no auth method",
        f'[auth]\nclient_id = "{CLIENT}"\n' + TENANT,
        "tenants[0]",
        "tenant 'Contoso' has no authentication method",
    ),
    (
        "two methods at one level",
        AUTH + 'client_secret_env = "S"\n' + TENANT,
        "auth.client_secret_env",
        "auth method is ambiguous",
    ),
    ("secret without env", AUTH + 'method = "secret"\n' + TENANT, "tenants[0].client_secret_env", "needs"),
    (
        "certificate without client id",
        '[auth]\ncertificate_path = "c"\n' + TENANT,
        "tenants[0].client_id",
        "needs",
    ),
    (
        "workload identity without client id",
        '[auth]\nmethod = "workload_identity"\n' + TENANT,
        "client_id",
        "needs",
    ),
    (
        "http authority",
        AUTH + 'authority = "http://localhost:8080"\n' + TENANT,
        "auth.authority",
        "must use https",
    ),
    (
        "http graph endpoint off localhost",
        AUTH + 'graph_endpoint = "http://graph.example.com"\n' + TENANT,
        "auth.graph_endpoint",
        "only accepted for localhost",
    ),
    (
        "relative url",
        AUTH + 'graph_endpoint = "graph.example.com"\n' + TENANT,
        "auth.graph_endpoint",
        "absolute",
    ),
    ("empty path", AUTH.replace('"certs/auditor.pem"', '""') + TENANT, "auth.certificate_path", "non-empty"),
    (
        "flat and nested override",
        GOOD + 'cloud = "china"\n[tenants.auth]\ncloud = "usgov"\n',
        "tenants[0].auth.cloud",
        "keep only one",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "fragment"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_validation_errors_name_file_key_problem_and_fix(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    error = config_error(tmp_path, text)
    message = str(error)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "fleet.toml") + ": ")
    assert f": {key}: " in message or message.split(": ")[1].endswith(key)
    assert fragment in message
    assert " Fix: " in message
    assert error.exit_code == 2
    assert error.path == tmp_path / "fleet.toml"


SECRET_VALUE = "Qx8~s3cr3t.VALUE_do-not-print"
SECRET_CASES = [
    (AUTH + f'client_secret = "{SECRET_VALUE}"\n' + TENANT, "auth.client_secret", "client_secret_env"),
    (GOOD + f'client_secret = "{SECRET_VALUE}"\n', "tenants[0].client_secret", "client_secret_env"),
    (GOOD + f'[tenants.auth]\nsecret = "{SECRET_VALUE}"\n', "tenants[0].auth.secret", "client_secret_env"),
    (AUTH + f'certificate_password = "{SECRET_VALUE}"\n' + TENANT, "auth.certificate_password", "_env"),
    (f'password = "{SECRET_VALUE}"\n' + GOOD, "password", "certificate_password_env"),
    (f'[vendor]\ntoken = "{SECRET_VALUE}"\n' + GOOD, "vendor.token", "token_file_path"),
    # a secret pasted where an environment variable NAME belongs
    (
        AUTH.replace("certificate_path", "client_secret_env").replace("certs/auditor.pem", SECRET_VALUE)
        + TENANT,
        "auth.client_secret_env",
        "NAME of an environment variable",
    ),
    # or where the client id belongs
    (
        f'[auth]\nclient_id = "{SECRET_VALUE}"\ncertificate_path = "c"\n' + TENANT,
        "auth.client_id",
        "not a GUID",
    ),
]


@pytest.mark.parametrize(("text", "key", "fragment"), SECRET_CASES)
def test_secrets_in_the_file_are_rejected_without_echoing_them(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    message = str(config_error(tmp_path, text))
    assert f": {key}: " in message
    assert fragment in message
    assert SECRET_VALUE not in message
    assert "s3cr3t" not in message


def test_secret_key_message_says_what_to_do(tmp_path: Path) -> None:
    message = str(config_error(tmp_path, AUTH + 'client_secret = "x"\n' + TENANT))
    assert "secrets must not be stored in the config file" in message
    assert 'set client_secret_env = "ENV_VAR_NAME" naming an environment variable' in message


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    error = config_error(tmp_path, GOOD.replace('name = "Contoso"', "name = Contoso"))
    assert (error.line, error.column) == (7, 8)
    message = str(error)
    assert message.startswith(f"{tmp_path / 'fleet.toml'}:7:8: TOML syntax error: ")
    assert "TOML syntax error" in message and "Fix:" in message and "\n" not in message


def test_toml_error_at_end_of_file_points_at_the_last_line(tmp_path: Path) -> None:
    error = config_error(tmp_path, GOOD + 'tags = ["gold"\n')
    assert error.line == 9
    assert str(error).startswith(
        f"{tmp_path / 'fleet.toml'}:9: TOML syntax error: Unclosed array at end of file"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.toml'}: config file not found")
    assert "--config" in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[vendor]\napp_display_name = "Caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


# --- tenant selection -------------------------------------------------------------------------------------

FLEET = (
    AUTH
    + f"""
[[tenants]]
name = "Contoso"
tenant_id = "{T1}"
tags = ["gold", "uk"]
[[tenants]]
name = "Fabrikam"
tenant_id = "{T2}"
tags = ["silver"]
[[tenants]]
name = "Tailspin"
tenant_id = "{T3}"
tags = ["Gold"]
"""
)


@pytest.mark.parametrize(
    ("names", "tags", "expected"),
    [
        ([], [], ["Contoso", "Fabrikam", "Tailspin"]),
        (["contoso"], [], ["Contoso"]),
        ([" FABRIKAM "], [], ["Fabrikam"]),
        ([T3.upper()], [], ["Tailspin"]),
        (["Tailspin", "Contoso", "contoso"], [], ["Contoso", "Tailspin"]),  # file order, no duplicates
        ([], ["gold"], ["Contoso", "Tailspin"]),  # tags ignore case
        ([], ["silver", "uk"], ["Contoso", "Fabrikam"]),
        (["Fabrikam"], ["uk"], ["Contoso", "Fabrikam"]),  # a union
    ],
)
def test_select_tenants(tmp_path: Path, names: list[str], tags: list[str], expected: list[str]) -> None:
    config = load(tmp_path, FLEET)
    assert [t.name for t in select_tenants(config, names, tags)] == expected


def test_unknown_tenant_lists_the_valid_names(tmp_path: Path) -> None:
    config = load(tmp_path, FLEET)
    with pytest.raises(ConfigError) as info:
        select_tenants(config, ["Contosso"], [])
    message = str(info.value)
    assert "--tenant 'Contosso'" in message
    assert "use one of: Contoso, Fabrikam, Tailspin" in message
    assert "did you mean 'Contoso'" in message
    assert info.value.exit_code == 2


def test_unknown_tag_lists_the_known_tags(tmp_path: Path) -> None:
    config = load(tmp_path, FLEET)
    with pytest.raises(ConfigError, match=r"--tag 'platinum' is not carried by any tenant.*gold, silver, uk"):
        select_tenants(config, [], ["platinum"])


WRITE_AUTH = """
[auth]
client_id = "00000000-0000-0000-0000-0000000000a1"
certificate_path = "read.pem"
{defaults}
[[tenants]]
name = "A"
tenant_id = "11111111-1111-1111-1111-111111111111"
{tenant}
"""


@pytest.mark.parametrize(
    ("defaults", "tenant", "expected"),
    [
        ("", "", None),  # no separate write credential: remediation uses the read one
        (
            '[remediation_auth]\nclient_id = "00000000-0000-0000-0000-0000000000b2"\nclient_secret_env = "WRITE"',
            "",
            (AuthMethod.SECRET, "00000000-0000-0000-0000-0000000000b2", "WRITE", None),
        ),
        (
            '[remediation_auth]\nclient_secret_env = "WRITE"',
            '[tenants.remediation_auth]\ncertificate_path = "w.pem"',
            (AuthMethod.CERTIFICATE, "00000000-0000-0000-0000-0000000000a1", None, "w.pem"),
        ),
        (
            "",
            '[tenants.remediation_auth]\nclient_id = "00000000-0000-0000-0000-0000000000c3"',
            (AuthMethod.CERTIFICATE, "00000000-0000-0000-0000-0000000000c3", None, "read.pem"),
        ),
    ],
)
def test_remediation_auth_layers(tmp_path: Path, defaults: str, tenant: str, expected: Any) -> None:
    config = load(tmp_path, WRITE_AUTH.format(defaults=defaults, tenant=tenant))
    [only] = config.tenants
    if expected is None:
        assert only.write_auth is None and only.remediation_auth == only.auth
        return
    method, client_id, secret_env, cert = expected
    write = only.remediation_auth
    assert (write.method, write.client_id, write.client_secret_env) == (method, client_id, secret_env)
    assert (write.certificate_path.name if write.certificate_path else None) == cert
    assert only.auth.method is AuthMethod.CERTIFICATE, "the read credential is untouched"


def test_remediation_auth_unknown_key_is_an_error(tmp_path: Path) -> None:
    error = config_error(
        tmp_path, WRITE_AUTH.format(defaults="[remediation_auth]\nclient_secrett_env = 'X'", tenant="")
    )
    assert "remediation_auth" in str(error) and "client_secret_env" in str(error)


def test_example_history_and_notifications_are_valid() -> None:
    from auditor.history.settings import history_settings
    from auditor.notify import Policy, WebhookFormat, notification_settings, parse_notifications_table

    config = load_config(REPO / "config" / "example.toml")
    history = history_settings(config)
    assert history.enabled and history.path == (REPO / "config" / "history.sqlite").resolve()
    assert notification_settings(config).channels == ()  # every channel ships switched off
    table = {
        **config.notifications,
        "email": {**config.notifications["email"], "enabled": True},
        "webhook": [{**w, "enabled": True} for w in config.notifications["webhook"]],
    }
    enabled = parse_notifications_table(table, config_path=config.path)
    assert [(c.kind, c.policy) for c in enabled.channels] == [
        ("email", Policy.ON_GAPS),
        ("webhook", Policy.ON_CHANGE),
        ("webhook", Policy.ALWAYS),
    ]
    assert [getattr(c, "format", None) for c in enabled.channels] == [
        None,
        WebhookFormat.TEAMS,
        WebhookFormat.SLACK,
    ]
