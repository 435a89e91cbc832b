"""The doctor's judgement with small fakes instead of Graph: permissions, certificate files, secret expiry
from the app registration, the vendor app, and the JWT decoding; plus `auditor permissions`."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from auditor.config import parse_config
from auditor.constants import AUDIT_PERMISSIONS, REMEDIATION_PERMISSIONS
from auditor.doctor import (
    PERMISSION_PURPOSES,
    CheckStatus,
    DoctorReport,
    TenantProbe,
    certificate_validity,
    check_tenants,
    missing_permissions,
    print_report,
)
from auditor.errors import ErrorCode, GraphError
from auditor.graph.client import ConnectionSettings
from auditor.graph.preflight import TokenGrant, jwt_claims
from auditor.simulator.tls import make_client_certificate
from tests.doctor.test_doctor import cli_app

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TENANT = "11111111-1111-1111-1111-111111111111"
CLIENT = "00000000-0000-0000-0000-0000000000c1"
PUBLISHER = "c0ffee00-5ca1-4ab1-9e55-00000000c0de"
VENDOR_SP = {
    "id": "sp-1",
    "appId": "7e1b3f0c-2d54-4c8e-9a61-5f0c3b2a9d17",
    "displayName": "USS AzureAD",
    "accountEnabled": True,
    "appOwnerOrganizationId": PUBLISHER,
    "servicePrincipalType": "Application",
}


@dataclass
class FakeProbe:
    """A TenantProbe with canned answers."""

    roles: tuple[str, ...] = (*AUDIT_PERMISSIONS, *REMEDIATION_PERMISSIONS)
    service_principals_found: list[dict[str, Any]] = field(default_factory=lambda: [VENDOR_SP])
    passwords: list[dict[str, Any]] | None = None
    sp_error: GraphError | None = None
    opened: list[str] = field(default_factory=list)

    async def token(self) -> TokenGrant:
        return TokenGrant(frozenset(self.roles), CLIENT, TENANT, NOW + dt.timedelta(hours=1))

    async def service_principals(self, odata_filter: str, select: list[str]) -> list[dict[str, Any]]:
        if self.sp_error is not None:
            raise self.sp_error
        return self.service_principals_found

    async def application_passwords(self, app_id: str) -> list[dict[str, Any]] | None:
        return self.passwords


def factory(probe: FakeProbe) -> Any:
    def make(settings: ConnectionSettings, label: str) -> AbstractAsyncContextManager[TenantProbe]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[TenantProbe]:
            probe.opened.append(settings.client_id)
            yield probe

        return opened()

    return make


def config(tmp_path: Path, **tenant: Any) -> Any:
    data = {
        "vendor": {"publisher_tenant_id": PUBLISHER},
        "auth": {"client_id": CLIENT, "client_secret_env": "AUDITOR_SECRET"},
        "tenants": [{"name": "Contoso", "tenant_id": TENANT, **tenant}],
    }
    return parse_config(data, path=tmp_path / "fleet.toml")


async def doctor(tmp_path: Path, probe: FakeProbe, **tenant: Any) -> dict[str, Any]:
    cfg = config(tmp_path, **tenant)
    report = await check_tenants(
        cfg, cfg.tenants, probe_factory=factory(probe), environ={"AUDITOR_SECRET": "s3cr3t-value-x"}, now=NOW
    )
    return {c.check: c for c in report.checks}


# --- permissions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "missing", "broader"),
    [
        (AUDIT_PERMISSIONS, [], {}),
        (
            # Directory.Read.All does not cover the PIM reads (issue 10, case 2)
            ("Directory.Read.All", "MailboxSettings.Read"),
            ["RoleManagement.Read.Directory"],
            {
                p: "Directory.Read.All"
                for p in AUDIT_PERMISSIONS
                if p not in ("MailboxSettings.Read", "RoleManagement.Read.Directory")
            },
        ),
        (
            (
                "Directory.Read.All",
                "MailboxSettings.Read",
                "RoleAssignmentSchedule.Read.Directory",
                "RoleEligibilitySchedule.Read.Directory",
            ),
            [],
            {
                **{p: "Directory.Read.All" for p in AUDIT_PERMISSIONS if p != "MailboxSettings.Read"},
                "RoleManagement.Read.Directory": "Directory.Read.All + RoleAssignmentSchedule.Read.Directory "
                "+ RoleEligibilitySchedule.Read.Directory",
            },
        ),
        (
            ("Directory.Read.All", "MailboxSettings.Read", "RoleAssignmentSchedule.Read.Directory"),
            ["RoleManagement.Read.Directory"],
            {
                p: "Directory.Read.All"
                for p in AUDIT_PERMISSIONS
                if p not in ("MailboxSettings.Read", "RoleManagement.Read.Directory")
            },
        ),
        (
            ("Application.Read.All", "RoleManagement.Read.All", "User.Read.All", "MailboxSettings.Read"),
            ["Organization.Read.All"],
            {"RoleManagement.Read.Directory": "RoleManagement.Read.All"},
        ),
        (
            ("Application.Read.All", "User.Read.All", "MailboxSettings.ReadWrite", "Organization.Read.All"),
            ["RoleManagement.Read.Directory"],
            {"MailboxSettings.Read": "MailboxSettings.ReadWrite"},
        ),
        (
            ("application.read.all",),
            [
                "RoleManagement.Read.Directory",
                "User.Read.All",
                "MailboxSettings.Read",
                "Organization.Read.All",
            ],
            {},
        ),
        ((), list(AUDIT_PERMISSIONS), {}),
    ],
)
def test_missing_permissions(roles: tuple[str, ...], missing: list[str], broader: dict[str, str]) -> None:
    assert missing_permissions(AUDIT_PERMISSIONS, frozenset(roles)) == (missing, broader)


def test_the_write_permission_has_no_substitute() -> None:
    assert missing_permissions(REMEDIATION_PERMISSIONS, frozenset({"Directory.ReadWrite.All"}))[0] == [
        "RoleManagement.ReadWrite.Directory"
    ]


def test_every_permission_has_a_purpose() -> None:
    assert set(PERMISSION_PURPOSES) == {*AUDIT_PERMISSIONS, *REMEDIATION_PERMISSIONS}


# --- certificates ---------------------------------------------------------------------------------------


def test_certificate_validity_from_a_pem_with_key(tmp_path: Path) -> None:
    made = make_client_certificate(tmp_path / "app.pem", "Auditor", valid_days=42)
    validity = certificate_validity(made.pem_file)
    assert validity.not_after == made.not_after.replace(microsecond=0)
    assert validity.subject == "CN=Auditor"
    assert len(validity.thumbprint) == 40


def test_certificate_validity_from_a_password_protected_pfx(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pfx")])
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "app.pfx"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"a", key, cert, None, serialization.BestAvailableEncryption(b"pw-123")
        )
    )
    assert certificate_validity(path, "pw-123").not_after == start + dt.timedelta(days=90)
    with pytest.raises(ValueError):
        certificate_validity(path, "wrong")


async def test_a_file_without_a_certificate_is_a_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n")
    data = {
        "auth": {"client_id": CLIENT, "certificate_path": str(bad)},
        "tenants": [{"name": "Contoso", "tenant_id": TENANT}],
    }
    cfg = parse_config(data, path=tmp_path / "fleet.toml")
    report = await check_tenants(cfg, cfg.tenants, probe_factory=factory(FakeProbe()), environ={}, now=NOW)
    certificate = next(c for c in report.checks if c.check == "certificate")
    assert certificate.status is CheckStatus.PROBLEM
    assert "cannot read a certificate from" in certificate.detail


# --- client secret expiry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ends", "status", "words"),
    [
        (None, CheckStatus.UNKNOWN, "not visible from this tenant"),
        (["2025-12-31T00:00:00Z"], CheckStatus.OK, "1 secret(s); the last one ends 2025-12-31"),
        (
            ["2025-06-10T00:00:00Z", "2025-06-20T00:00:00Z"],
            CheckStatus.WARNING,
            "the last one ends 2025-06-20 (in 19 day(s))",
        ),
        (["2025-01-01T00:00:00Z"], CheckStatus.PROBLEM, "(in 0 day(s))"),
        (
            ["2025-06-10T00:00:00Z", "2026-06-10T00:00:00Z"],
            CheckStatus.OK,
            "2 secret(s)",
        ),  # the old one may be unused
    ],
)
async def test_secret_expiry_from_the_app_registration(
    tmp_path: Path, ends: list[str] | None, status: CheckStatus, words: str
) -> None:
    passwords = (
        None if ends is None else [{"keyId": str(i), "endDateTime": end} for i, end in enumerate(ends)]
    )
    checks = await doctor(tmp_path, FakeProbe(passwords=passwords))
    assert checks["client secret"].status is status
    assert words in checks["client secret"].detail


async def test_secret_expiry_is_unknown_without_application_read(tmp_path: Path) -> None:
    probe = FakeProbe(roles=("Directory.Read.All",), passwords=[{"endDateTime": "2030-01-01T00:00:00Z"}])
    checks = await doctor(tmp_path, probe)
    assert checks["client secret"].status is CheckStatus.OK  # Directory.Read.All can read app registrations
    probe = FakeProbe(roles=("User.Read.All",), passwords=[{"endDateTime": "2030-01-01T00:00:00Z"}])
    checks = await doctor(tmp_path, probe)
    assert checks["client secret"].status is CheckStatus.UNKNOWN
    assert "cannot read app registrations" in checks["client secret"].detail


# --- vendor app -----------------------------------------------------------------------------------------


async def test_a_disabled_vendor_app_is_a_warning(tmp_path: Path) -> None:
    checks = await doctor(
        tmp_path, FakeProbe(service_principals_found=[{**VENDOR_SP, "accountEnabled": False}])
    )
    assert checks["vendor app"].status is CheckStatus.WARNING
    assert "disabled" in checks["vendor app"].detail


async def test_two_vendor_apps_are_ambiguous(tmp_path: Path) -> None:
    second = {**VENDOR_SP, "id": "sp-2", "appId": "0b7d4c8e-1f3a-4e6b-9d2c-5a8f7e6d4c31"}
    checks = await doctor(tmp_path, FakeProbe(service_principals_found=[VENDOR_SP, second]))
    assert checks["vendor app"].status is CheckStatus.PROBLEM
    assert "vendor.app_id" in checks["vendor app"].fix


async def test_a_vendor_lookup_without_permission_is_unknown(tmp_path: Path) -> None:
    denied = GraphError("Graph answered 403", code=ErrorCode.PERMISSION_DENIED, status=403, hint="grant it")
    checks = await doctor(tmp_path, FakeProbe(sp_error=denied))
    assert checks["vendor app"].status is CheckStatus.UNKNOWN
    assert checks["vendor app"].fix == "grant it"


async def test_one_credential_opens_one_session(tmp_path: Path) -> None:
    probe = FakeProbe()
    await doctor(tmp_path, probe)
    assert probe.opened == [CLIENT]


# --- tokens and output ----------------------------------------------------------------------------------


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


def test_jwt_claims_are_decoded_without_verification() -> None:
    claims = jwt_claims(_jwt({"roles": ["User.Read.All"], "tid": TENANT, "appid": CLIENT}))
    assert claims["roles"] == ["User.Read.All"]


@pytest.mark.parametrize(
    "token", ["opaque-token", "a.b", "a.!!!.c", _jwt({"x": 1}).split(".")[0] + ".WzFd.s"]
)
def test_a_token_that_is_not_a_jwt_is_a_value_error(token: str) -> None:
    with pytest.raises(ValueError):
        jwt_claims(token)


async def test_the_text_table_shows_fixes_only_for_problems_and_warnings(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    probe = FakeProbe(roles=("Application.Read.All",), passwords=None)
    report: DoctorReport = await check_tenants(
        cfg, cfg.tenants, probe_factory=factory(probe), environ={"AUDITOR_SECRET": "s3cr3t-value-x"}, now=NOW
    )
    out = io.StringIO()
    print_report(report, out)
    text = out.getvalue()
    assert "fix: Add the Microsoft Graph application permission(s) RoleManagement.Read.Directory" in text
    assert "Notes:\n  Check Certificates & secrets of app" in text  # the unknown secret's advice, once
    assert text.rstrip().endswith("1 tenant(s) checked: 1 problem(s), 1 warning(s).")
    assert "s3cr3t-value-x" not in text


# --- auditor permissions --------------------------------------------------------------------------------


def test_permissions_lists_audit_and_remediation_sets() -> None:
    result = CliRunner().invoke(cli_app(), ["permissions"])
    assert result.exit_code == 0
    text = result.stdout
    audit_part, remediation_part = text.split("Remediation (`auditor audit --remediate`) adds:")
    for permission in AUDIT_PERMISSIONS:
        assert permission in audit_part
    assert "RoleManagement.ReadWrite.Directory" in remediation_part
    assert "RoleManagement.ReadWrite.Directory" not in audit_part


def test_permissions_json() -> None:
    result = CliRunner().invoke(cli_app(), ["permissions", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["resource_app_id"] == "00000003-0000-0000-c000-000000000000"
    assert [p["permission"] for p in data["audit"]] == list(AUDIT_PERMISSIONS)
    assert [p["permission"] for p in data["remediation"]] == list(REMEDIATION_PERMISSIONS)
    assert all(p["type"] == "Application" and p["purpose"] for p in data["audit"] + data["remediation"])
    assert data["remediation_with_separate_app"] == ["RoleManagement.ReadWrite.Directory"]
