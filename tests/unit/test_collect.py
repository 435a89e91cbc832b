"""The collector's pure parts: the mailbox census from Graph's answers, and a tenant's connection settings.

All users here are cloud-only: a 404 means "no Exchange Online mailbox", a 403 "this app may not read it".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor import errors
from auditor.collect import SettingsError, census_from, connection_settings
from auditor.config import AuthMethod, EffectiveAuth, TenantConfig
from auditor.errors import ErrorCode, GraphError, redact
from auditor.graph.reader import MailboxAnswer

TENANT = "Contoso (aaaaaaaa-0000-0000-0000-000000000001)"
APP = "the auditor app (client id 11111111-0000-0000-0000-000000000000)"


def user(
    n: int, *, mail: bool = True, enabled: bool = True, licensed: bool = False, **extra: Any
) -> dict[str, Any]:
    return {
        "id": f"u{n}",
        "displayName": f"User {n}",
        "userPrincipalName": f"u{n}@contoso.example",
        "mail": f"u{n}@contoso.example" if mail else None,
        "accountEnabled": enabled,
        "assignedLicenses": [{"skuId": "x"}] if licensed else [],
        **extra,
    }


OK = {
    "user": MailboxAnswer("user"),
    "linked": MailboxAnswer("linked"),
    "shared": MailboxAnswer("shared"),
    "room": MailboxAnswer("room"),
    "equipment": MailboxAnswer("equipment"),
    "others": MailboxAnswer("others"),
    "unknown": MailboxAnswer("unknown"),
    "none": MailboxAnswer(None, no_mailbox=True, status=404),
    "denied": MailboxAnswer(None, failure="403 ErrorAccessDenied", status=403),
    "throttled": MailboxAnswer(None, failure="429 TooManyRequests after 6 attempts", status=429),
}


def census(kinds: list[str | None]) -> Any:
    """A census of one user per entry: a kind from OK, or None for a user Graph was never asked about."""
    users = [user(i, mail=kind is not None) for i, kind in enumerate(kinds)]
    answers = {f"u{i}": OK[kind] for i, kind in enumerate(kinds) if kind is not None}
    return census_from(users, answers, TENANT, APP)


def test_every_purpose_lands_in_its_bucket() -> None:
    result = census(
        ["user", "linked", "shared", "room", "equipment", "equipment", "others", "unknown", "none", None]
    )
    assert (result.user, result.shared, result.room, result.equipment, result.other) == (2, 1, 1, 2, 2)
    assert (result.no_mailbox, result.unclassified, result.unclassified_reason) == (2, 0, "")
    assert result.total_users == 10


def test_shared_mailboxes_carry_what_the_findings_need() -> None:
    users = [user(1, enabled=True, licensed=True), user(2, enabled=False)]
    answers = {"u1": MailboxAnswer("shared"), "u2": MailboxAnswer("shared")}
    result = census_from(users, answers, TENANT, APP)
    first, second = result.shared_mailboxes
    assert (first.id, first.display_name, first.user_principal_name, first.mail) == (
        "u1",
        "User 1",
        "u1@contoso.example",
        "u1@contoso.example",
    )
    assert (first.account_enabled, first.licensed) == (True, True)
    assert (second.account_enabled, second.licensed) == (False, False)


def test_a_shared_mailbox_with_missing_names_gets_empty_strings() -> None:
    users = [{"id": "u1", "mail": "x@contoso.example"}]
    result = census_from(users, {"u1": MailboxAnswer("shared")}, TENANT, APP)
    [mailbox] = result.shared_mailboxes
    assert (mailbox.display_name, mailbox.user_principal_name, mailbox.account_enabled) == ("", "", False)


def test_failures_are_unclassified_with_a_reason_per_kind() -> None:
    result = census(["user", "throttled", "throttled", "shared"])
    assert result.unclassified == 2
    assert result.unclassified_reason == "2 x 429 TooManyRequests after 6 attempts"
    assert (result.user, result.shared) == (1, 1)


def test_some_mailboxes_denied_is_a_partial_scan_that_names_the_likely_cause() -> None:
    result = census(["user", "denied", "denied", "throttled"])
    assert result.unclassified == 3
    assert result.unclassified_reason == (
        "2 x 403 ErrorAccessDenied; 1 x 429 TooManyRequests after 6 attempts"
        " (403 ErrorAccessDenied: an Exchange application access policy may exclude these mailboxes)"
    )


def test_no_denial_means_no_access_policy_note() -> None:
    assert "access policy" not in census(["user", "throttled"]).unclassified_reason


@pytest.mark.parametrize("kinds", [["denied"], ["denied", "denied", None]])
def test_every_asked_mailbox_denied_is_a_missing_permission(kinds: list[str | None]) -> None:
    with pytest.raises(GraphError) as raised:
        census(kinds)
    error = raised.value
    assert error.code is ErrorCode.PERMISSION_DENIED and error.status == 403
    assert "MailboxSettings.Read" in error.message and TENANT in error.message
    assert error.hint == (
        f"Grant the Microsoft Graph application permission MailboxSettings.Read to {APP} and have an "
        f"administrator of tenant {TENANT} grant admin consent, then re-run."
    )


def test_a_404_beside_the_403s_is_an_answer_so_the_scan_is_partial() -> None:
    result = census(["denied", "none", None])
    assert (result.unclassified, result.no_mailbox) == (1, 2)


def test_mailboxes_hosted_on_premises_are_counted_apart() -> None:
    hybrid = MailboxAnswer(
        None, no_mailbox=True, status=404, code="MailboxNotEnabledForRESTAPI", hybrid_kind=True
    )
    users = [user(i, onPremisesSyncEnabled=True) for i in range(3)] + [
        user(3),
        user(4, onPremisesSyncEnabled=True),
    ]
    answers = {"u0": hybrid, "u1": hybrid, "u2": hybrid, "u3": hybrid, "u4": OK["shared"]}
    result = census_from(users, answers, TENANT, APP)
    # Synced users answering the on-premises way; a cloud-only user answering so has no mailbox.
    assert (result.on_premises, result.no_mailbox, result.shared) == (3, 1, 1)
    one = census_from(users[:1], {"u0": hybrid}, TENANT, APP)
    assert (one.on_premises, one.no_mailbox) == (1, 0)


def test_a_tenant_where_nobody_has_mail_is_not_denied() -> None:
    result = census([None, None])
    assert (result.no_mailbox, result.unclassified) == (2, 0)


# --- connection settings -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no secret registered, as a fresh process does: the registry is process-wide,
    so a value registered by another test would otherwise be masked here whatever the code under test did."""
    monkeypatch.setattr(errors, "_known_secrets", ())


def auth(method: AuthMethod, **values: Any) -> EffectiveAuth:
    base: dict[str, Any] = {
        "method": method,
        "client_id": "11111111-0000-0000-0000-000000000000",
        "cloud": "global",
        "authority": "https://login.example",
        "graph_endpoint": "https://graph.example",
        "scope": "https://graph.example/.default",
        "ca_bundle": Path("/etc/ca.pem"),
    }
    return EffectiveAuth(**{**base, **values})


def tenant(read: EffectiveAuth, write: EffectiveAuth | None = None) -> TenantConfig:
    return TenantConfig("Contoso", "aaaaaaaa-0000-0000-0000-000000000001", read, 2.5, write_auth=write)


def test_a_secret_is_read_from_the_environment_only_now() -> None:
    settings = connection_settings(
        tenant(auth(AuthMethod.SECRET, client_secret_env="MY_SECRET")), {"MY_SECRET": "s3cr3t-value-1"}
    )
    assert (settings.tenant_id, settings.client_id, settings.method) == (
        "aaaaaaaa-0000-0000-0000-000000000001",
        "11111111-0000-0000-0000-000000000000",
        "secret",
    )
    assert (settings.authority, settings.graph_endpoint, settings.scope) == (
        "https://login.example",
        "https://graph.example",
        "https://graph.example/.default",
    )
    assert settings.client_secret == "s3cr3t-value-1" and settings.ca_bundle == Path("/etc/ca.pem")
    assert settings.certificate_path is None and settings.token_file is None
    assert "s3cr3t-value-1" not in redact("leaked s3cr3t-value-1"), "the secret is registered for redaction"


@pytest.mark.parametrize("environ", [{}, {"MY_SECRET": ""}])
def test_an_unset_secret_variable_is_a_config_error_naming_it(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as raised:
        connection_settings(tenant(auth(AuthMethod.SECRET, client_secret_env="MY_SECRET")), environ)
    error = raised.value.error
    assert error.code is ErrorCode.CONFIG_ERROR
    assert error.message.startswith(
        "Contoso (aaaaaaaa-0000-0000-0000-000000000001): environment variable MY_SECRET"
    )
    assert "Set MY_SECRET" in error.hint


def test_the_write_credential_is_used_when_asked_for() -> None:
    read = auth(AuthMethod.SECRET, client_secret_env="READ")
    write = auth(
        AuthMethod.SECRET, client_secret_env="WRITE", client_id="22222222-0000-0000-0000-000000000000"
    )
    settings = connection_settings(
        tenant(read, write), {"READ": "r-secret-1", "WRITE": "w-secret-1"}, auth=write
    )
    assert (settings.client_id, settings.client_secret) == (
        "22222222-0000-0000-0000-000000000000",
        "w-secret-1",
    )


def test_a_certificate_needs_its_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(SettingsError) as raised:
        connection_settings(tenant(auth(AuthMethod.CERTIFICATE, certificate_path=missing)), {})
    assert f"certificate file {missing} (certificate_path) does not exist" in raised.value.error.message
    assert raised.value.error.code is ErrorCode.CONFIG_ERROR
    assert raised.value.error.hint == (
        "Point certificate_path at the PEM file holding the app's private key and certificate."
    )


def test_a_certificate_password_comes_from_its_variable(tmp_path: Path) -> None:
    pem = tmp_path / "app.pem"
    pem.write_text("not read here")
    cert = auth(AuthMethod.CERTIFICATE, certificate_path=pem, certificate_password_env="PEM_PASSWORD")
    settings = connection_settings(tenant(cert), {"PEM_PASSWORD": "pem-pass-1"})
    assert (settings.method, settings.certificate_path, settings.certificate_password) == (
        "certificate",
        pem,
        "pem-pass-1",
    )
    assert settings.client_secret is None
    assert "pem-pass-1" not in redact("leaked pem-pass-1"), "the password is registered for redaction"
    with pytest.raises(SettingsError) as raised:
        connection_settings(tenant(cert), {})
    assert "PEM_PASSWORD (certificate_password_env) is not set" in raised.value.error.message
    assert raised.value.error.hint == "Set PEM_PASSWORD to the certificate key's password."
    # an empty password is a password (a key protected by ""), not a missing setting
    assert connection_settings(tenant(cert), {"PEM_PASSWORD": ""}).certificate_password == ""
    no_password = auth(AuthMethod.CERTIFICATE, certificate_path=pem)
    assert connection_settings(tenant(no_password), {}).certificate_password is None


def test_workload_identity_takes_the_configured_or_projected_token_file(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("jwt")
    configured = connection_settings(tenant(auth(AuthMethod.WORKLOAD_IDENTITY, token_file_path=token)), {})
    assert configured.token_file == token and configured.method == "workload_identity"
    projected = connection_settings(
        tenant(auth(AuthMethod.WORKLOAD_IDENTITY)), {"AZURE_FEDERATED_TOKEN_FILE": str(token)}
    )
    assert projected.token_file == token
    with pytest.raises(SettingsError) as raised:
        connection_settings(tenant(auth(AuthMethod.WORKLOAD_IDENTITY)), {})
    assert "federated token file None does not exist" in raised.value.error.message
    assert (
        raised.value.error.hint
        == "Set token_file_path (or AZURE_FEDERATED_TOKEN_FILE) to the projected token."
    )


def test_managed_identity_needs_nothing_from_the_environment() -> None:
    settings = connection_settings(tenant(auth(AuthMethod.MANAGED_IDENTITY, client_id=None)), {})
    assert (settings.method, settings.client_id, settings.token_file) == ("managed_identity", "", None)
