"""``auditor doctor``: before the nightly run, check that every tenant can actually be audited.

Per tenant, with the credential the config gives it (and its ``remediation_auth`` credential, if any):

* **credential**: the environment variable or file the config names is there;
* **sign-in**: a token can be had (a failure carries the AADSTS code's fix);
* **permissions**: the token's ``roles`` claim (the application permissions consented in that tenant)
  against :data:`~auditor.constants.AUDIT_PERMISSIONS`, and against
  :data:`~auditor.constants.REMEDIATION_PERMISSIONS` where ``remediate = true``;
* **certificate**: when the certificate expires (warning under 30 days), read from the PEM/PFX file;
* **client secret**: its expiry is not part of the secret; it is looked up on the app registration
  when that is visible from the tenant with the app's own permissions, otherwise "unknown";
* **vendor app**: the USS AzureAD service principal exists and is identified as the audit would.

Each check is a :class:`Check` with a status and, for anything not ok, a fix. The exit code is 0 when
nothing needs doing, 1 when a problem or warning was found, 2 for a config error (raised as
:class:`~auditor.errors.ConfigError` before anything is checked).

This module never imports the Graph SDK: the sign-in and the reads are behind :class:`TenantProbe`,
implemented by :mod:`auditor.graph.preflight` (loaded only when doctor runs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, TextIO, TypeAlias

from auditor.config import AuditConfig, AuthMethod, EffectiveAuth, TenantConfig, load_config, select_tenants
from auditor.constants import AUDIT_PERMISSIONS, REMEDIATION_PERMISSIONS, ExitCode
from auditor.errors import GraphError, redact, register_secret
from auditor.evaluate import (
    MatchOutcome,
    admin_consent_url,
    describe_vendor_search,
    identify_service_principal,
)

if TYPE_CHECKING:
    from auditor.graph.client import ConnectionSettings
    from auditor.graph.preflight import TokenGrant

__all__ = [
    "CREDENTIAL_EXPIRY_WARNING_DAYS",
    "PERMISSION_ALTERNATIVES",
    "PERMISSION_PURPOSES",
    "Check",
    "CheckStatus",
    "DoctorOptions",
    "DoctorReport",
    "TenantProbe",
    "certificate_validity",
    "missing_permissions",
    "print_report",
    "run_doctor",
]

log = logging.getLogger(__name__)

# A certificate or secret that ends within this many days is a warning: renew before the nightly run fails.
CREDENTIAL_EXPIRY_WARNING_DAYS: Final = 30
# How long doctor waits for one tenant's checks at most (the config's tenant timeout if shorter).
_TENANT_CHECK_SECONDS: Final = 120.0

# What each permission is for (`auditor permissions`, and the fixes doctor prints).
PERMISSION_PURPOSES: Final = MappingProxyType(
    {
        "Application.Read.All": "find the USS AzureAD service principal and read its Exchange Online app "
        "role assignments (Exchange.ManageAsApp) and the groups it is in (as ids: enough to find a role "
        "held through a group, no group read permission needed)",
        "RoleManagement.Read.Directory": "read directory role assignments and PIM schedule instances: does "
        "the vendor app hold Security Reader, active, at '/', permanently (Directory.Read.All does not cover "
        "the PIM reads; RoleAssignmentSchedule.Read.Directory with RoleEligibilitySchedule.Read.Directory "
        "do)",
        "User.Read.All": "list the users, to find every mailbox",
        "MailboxSettings.Read": "read mailboxSettings.userPurpose, to tell shared mailboxes from people",
        "Organization.Read.All": "read the tenant's organization: the first call, proving sign-in and consent",
        "RoleManagement.ReadWrite.Directory": "create the one active Security Reader assignment at '/' for "
        "the vendor app and read it back; used by --remediate only",
    }
)

# Broader permissions that also cover a needed one (Microsoft Graph permission reference; graph-api-notes
# §1). Holding one of these is enough to audit, though broader than necessary. "A + B" needs both.
# RoleManagement.Read.Directory covers role assignments *and* the PIM schedule instances; Directory.Read.All
# covers only the former: the PIM lists take RoleAssignmentSchedule.Read.Directory /
# RoleEligibilitySchedule.Read.Directory or a RoleManagement permission, never Directory.Read.All
# (rbacapplication-list-roleassignmentscheduleinstances, -roleeligibilityscheduleinstances).
_PIM_READS: Final = "RoleAssignmentSchedule.Read.Directory + RoleEligibilitySchedule.Read.Directory"
PERMISSION_ALTERNATIVES: Final = MappingProxyType(
    {
        "Application.Read.All": (
            "Application.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ),
        "RoleManagement.Read.Directory": (
            "RoleManagement.Read.All",
            "RoleManagement.ReadWrite.Directory",
            f"Directory.Read.All + {_PIM_READS}",
            f"Directory.ReadWrite.All + {_PIM_READS}",
        ),
        "User.Read.All": ("User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
        "MailboxSettings.Read": ("MailboxSettings.ReadWrite",),
        "Organization.Read.All": (
            "Organization.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ),
        "RoleManagement.ReadWrite.Directory": (),
    }
)


class CheckStatus(StrEnum):
    """How one check came out; problems and warnings make the exit code 1."""

    OK = "ok"
    WARNING = "warning"  # works today, needs action soon (expiring credential, remediation not possible)
    PROBLEM = "problem"  # the audit (or remediation) of this tenant will fail or be wrong
    UNKNOWN = "unknown"  # cannot be known from here (a client secret's expiry), or not checked
    SKIPPED = "skipped"  # not applicable because an earlier check failed

    @property
    def needs_action(self) -> bool:
        """True for problems and warnings."""
        return self in (CheckStatus.PROBLEM, CheckStatus.WARNING)


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    tenant: str
    tenant_id: str
    check: str  # "sign-in", "audit permissions", ...
    status: CheckStatus
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON form for ``--json``."""
        return {
            "tenant": self.tenant,
            "tenant_id": self.tenant_id,
            "check": self.check,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class DoctorReport:
    """Every check of every selected tenant, in config order."""

    checks: tuple[Check, ...]
    tenants: int

    def count(self, status: CheckStatus) -> int:
        """Number of checks with ``status``."""
        return sum(1 for c in self.checks if c.status is status)

    @property
    def exit_code(self) -> int:
        """0 when nothing needs doing, 1 when a problem or warning was found."""
        return ExitCode.GAPS if any(c.status.needs_action for c in self.checks) else ExitCode.OK

    def to_dict(self) -> dict[str, Any]:
        """JSON form for ``--json``."""
        return {
            "tenants": self.tenants,
            "problems": self.count(CheckStatus.PROBLEM),
            "warnings": self.count(CheckStatus.WARNING),
            "exit_code": int(self.exit_code),
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass(frozen=True)
class DoctorOptions:
    """What ``auditor doctor`` was asked to do."""

    config: Path
    tenants: tuple[str, ...] = ()  # --tenant NAME_OR_ID
    tags: tuple[str, ...] = ()  # --tag TAG
    audit_only: bool = False  # --audit-only: do not check what remediation needs
    as_json: bool = False  # --json


class TenantProbe(Protocol):
    """Sign-in and reads for one tenant as one app (implemented by auditor.graph.preflight.Preflight)."""

    async def token(self) -> TokenGrant:
        """Get a token and return its claims; raises GraphError."""
        ...

    async def service_principals(self, odata_filter: str, select: list[str]) -> list[dict[str, Any]]:
        """Service principals matching an OData filter; raises GraphError."""
        ...

    async def application_passwords(self, app_id: str) -> list[dict[str, Any]] | None:
        """The app registration's passwordCredentials, or None when not visible from this tenant."""
        ...


ProbeFactory: TypeAlias = Callable[["ConnectionSettings", str], AbstractAsyncContextManager[TenantProbe]]


# --- pure helpers -------------------------------------------------------------------------------------


def missing_permissions(needed: Sequence[str], roles: frozenset[str]) -> tuple[list[str], dict[str, str]]:
    """The needed permissions the token lacks, and those covered only by a broader one (needed -> held)."""
    held = {r.casefold(): r for r in roles}
    missing: list[str] = []
    broader: dict[str, str] = {}

    def holds(alternative: str) -> bool:
        return all(part.strip().casefold() in held for part in alternative.split("+"))

    for permission in needed:
        if permission.casefold() in held:
            continue
        covering = next(
            (
                " + ".join(held[p.strip().casefold()] for p in a.split("+"))
                for a in PERMISSION_ALTERNATIVES.get(permission, ())
                if holds(a)
            ),
            None,
        )
        if covering is None:
            missing.append(permission)
        else:
            broader[permission] = covering
    return missing, broader


@dataclass(frozen=True)
class CertificateValidity:
    """The validity of the certificate a tenant signs in with (public facts only)."""

    not_before: datetime
    not_after: datetime
    subject: str
    thumbprint: str  # SHA-1, upper-case hex: what the Entra admin center shows


def certificate_validity(path: Path, password: str | None = None) -> CertificateValidity:
    """Read the (first) certificate from a PEM file (key + certificate, as azure-identity takes it) or a
    PKCS#12 file. Raises ``ValueError`` (or ``OSError``) when there is none or it cannot be read."""
    # Imported here: `auditor permissions` shares this module and needs none of it.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import pkcs12

    data = path.read_bytes()
    cert: x509.Certificate | None
    if b"-----BEGIN CERTIFICATE-----" in data:
        cert = x509.load_pem_x509_certificates(data)[0]
    else:
        _, cert, _ = pkcs12.load_key_and_certificates(data, password.encode() if password else None)
        if cert is None:
            raise ValueError("the PKCS#12 file holds no certificate")
    return CertificateValidity(
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        subject=cert.subject.rfc4514_string(),
        thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - an identifier, not security
    )


def _date(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d")


def _parse_time(value: object) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- the checks -----------------------------------------------------------------------------------------


@dataclass
class _TenantDoctor:
    """Runs the checks of one tenant and collects them."""

    tenant: TenantConfig
    config: AuditConfig
    environ: Mapping[str, str]
    probe_factory: ProbeFactory
    now: datetime
    audit_only: bool
    checks: list[Check] = field(default_factory=list)
    # Whether the vendor search found the vendor app (identified or ambiguous); None: not checked.
    vendor_found: bool | None = None

    @property
    def label(self) -> str:
        return self.tenant.label

    def add(self, check: str, status: CheckStatus, detail: str, fix: str = "") -> None:
        self.checks.append(
            Check(self.tenant.name, self.tenant.tenant_id, check, status, redact(detail), redact(fix))
        )

    async def run(self) -> list[Check]:
        tenant = self.tenant
        wants_remediation = tenant.remediate and not self.audit_only
        separate_writer = wants_remediation and tenant.write_auth is not None
        await self.credential(
            tenant.auth, remediation=wants_remediation and not separate_writer, separate=False
        )
        if separate_writer and tenant.write_auth is not None:
            await self.credential(tenant.write_auth, remediation=True, separate=True)
        if not tenant.remediate:
            self.add(
                "remediation permissions",
                CheckStatus.SKIPPED,
                "remediate = false for this tenant: --remediate never writes here",
            )
        elif self.audit_only:
            self.add("remediation permissions", CheckStatus.SKIPPED, "not checked (--audit-only)")
        return self.checks

    async def credential(self, auth: EffectiveAuth, *, remediation: bool, separate: bool) -> None:
        """Every check of one credential: its material, sign-in, permissions, expiry and, for the audit
        credential, the vendor app. ``separate``: this is the tenant's own remediation credential."""
        from auditor.collect import SettingsError, connection_settings

        prefix = "remediation " if separate else ""

        client = auth.client_id or "(managed identity)"
        if auth.method is AuthMethod.CERTIFICATE:
            self.certificate(auth, prefix, client)
        try:
            settings = connection_settings(self.tenant, self.environ, auth=auth)
        except SettingsError as exc:
            self.add(f"{prefix}credential", CheckStatus.PROBLEM, exc.error.message, exc.error.hint)
            self.add(f"{prefix}sign-in", CheckStatus.SKIPPED, "no usable credential")
            return
        try:
            async with self.probe_factory(settings, self.label) as probe:
                try:
                    grant = await probe.token()
                except GraphError as exc:
                    self.add(f"{prefix}sign-in", CheckStatus.PROBLEM, exc.message, exc.hint)
                    return
                self.add(
                    f"{prefix}sign-in",
                    CheckStatus.OK,
                    f"token issued to app {grant.app_id or client} ({auth.method.value}), "
                    f"{len(grant.roles)} application permission(s)",
                )
                if not separate:
                    self.permissions("audit permissions", AUDIT_PERMISSIONS, grant, auth, CheckStatus.PROBLEM)
                if remediation:
                    # A separate remediation credential exists only to write: without the permission it is
                    # useless (a problem). On the audit credential it only means --remediate cannot fix
                    # this tenant (a warning, with the alternative of remediate = false).
                    severity = CheckStatus.PROBLEM if separate else CheckStatus.WARNING
                    self.permissions(
                        "remediation permissions", REMEDIATION_PERMISSIONS, grant, auth, severity
                    )
                if auth.method is AuthMethod.SECRET:
                    await self.secret(probe, grant, prefix, client)
                if not separate:
                    await self.vendor_app(probe)
        except GraphError as exc:
            # A credential that could not be built (e.g. an unreadable certificate).
            self.add(f"{prefix}sign-in", CheckStatus.PROBLEM, exc.message, exc.hint)

    def permissions(
        self, name: str, needed: Sequence[str], grant: TokenGrant, auth: EffectiveAuth, severity: CheckStatus
    ) -> None:
        missing, broader = missing_permissions(needed, grant.roles)
        client = auth.client_id or "the managed identity"
        if missing:
            what = "; ".join(
                f"{p} ({PERMISSION_PURPOSES[p]})" if p in PERMISSION_PURPOSES else p for p in missing
            )
            consent = (
                f" Consent link: {admin_consent_url(auth.authority, self.tenant.tenant_id, auth.client_id)}."
                if auth.client_id
                else ""
            )
            fix = (
                f"Add the Microsoft Graph application permission(s) {', '.join(missing)} to app {client} "
                f"(API permissions of its app registration), then have an administrator of tenant {self.label} "
                f"grant admin consent.{consent} Re-run doctor afterwards: a token lists the permissions consented "
                "when it was issued."
            )
            if severity is CheckStatus.WARNING:
                fix += " Or set remediate = false for this tenant if it is never remediated."
            self.add(name, severity, f"missing {what}", fix)
            return
        detail = f"all present: {', '.join(needed)}"
        if broader:
            detail += (
                " (covered by broader " + ", ".join(f"{held} for {p}" for p, held in broader.items()) + ")"
            )
        self.add(name, CheckStatus.OK, detail)

    def certificate(self, auth: EffectiveAuth, prefix: str, client: str) -> None:
        name = f"{prefix}certificate"
        path = auth.certificate_path
        if path is None or not path.is_file():
            return  # reported by the credential check
        password = self.environ.get(auth.certificate_password_env) if auth.certificate_password_env else None
        register_secret(password)
        try:
            validity = certificate_validity(path, password)
        except (ValueError, OSError, IndexError) as exc:
            self.add(
                name,
                CheckStatus.PROBLEM,
                f"cannot read a certificate from {path} ({type(exc).__name__})",
                "Point certificate_path at a PEM file holding the private key and the certificate (or a PFX "
                "with certificate_password_env).",
            )
            return
        renew = (
            f"Create a new certificate, upload its public part to app {client} (Certificates & secrets), point "
            "certificate_path at the new file, and remove the old certificate from the app afterwards."
        )
        days = (validity.not_after - self.now) / timedelta(days=1)
        where = f"{path.name}, thumbprint {validity.thumbprint}"
        if validity.not_before > self.now:
            self.add(
                name,
                CheckStatus.PROBLEM,
                f"not valid before {_date(validity.not_before)} ({where})",
                "Check this machine's clock, or use a certificate that is valid now.",
            )
        elif days <= 0:
            self.add(name, CheckStatus.PROBLEM, f"expired on {_date(validity.not_after)} ({where})", renew)
        elif days < CREDENTIAL_EXPIRY_WARNING_DAYS:
            self.add(
                name,
                CheckStatus.WARNING,
                f"expires on {_date(validity.not_after)}, in {int(days)} day(s) ({where})",
                renew,
            )
        else:
            self.add(
                name, CheckStatus.OK, f"valid until {_date(validity.not_after)}, {int(days)} days ({where})"
            )

    async def secret(self, probe: TenantProbe, grant: TokenGrant, prefix: str, client: str) -> None:
        name = f"{prefix}client secret"
        where = (
            f"Check Certificates & secrets of app {client} in the tenant it is registered in "
            "(Entra admin center > App registrations); create the next secret before the current one ends."
        )
        unknowable = "a client secret's expiry is not part of the secret itself"
        can_read = not missing_permissions(["Application.Read.All"], grant.roles)[0]
        if not can_read:
            self.add(
                name,
                CheckStatus.UNKNOWN,
                f"unknown: {unknowable}, and the app cannot read app registrations here",
                where,
            )
            return
        try:
            passwords = await probe.application_passwords(client)
        except GraphError as exc:
            self.add(
                name,
                CheckStatus.UNKNOWN,
                f"unknown: {unknowable}; the app registration could not be read ({exc.code.value})",
                where,
            )
            return
        ends = sorted(
            e for e in (_parse_time(p.get("endDateTime")) for p in passwords or ()) if e is not None
        )
        if not ends:
            self.add(
                name,
                CheckStatus.UNKNOWN,
                f"unknown: {unknowable}, and the registration of app {client} is not visible from this tenant",
                where,
            )
            return
        # Which of the app's secrets is the one in use cannot be told; it ends by the latest end date at most.
        latest = ends[-1]
        days = (latest - self.now) / timedelta(days=1)
        detail = f"app {client} has {len(ends)} secret(s); the last one ends {_date(latest)}"
        if days < CREDENTIAL_EXPIRY_WARNING_DAYS:
            status = CheckStatus.PROBLEM if days <= 0 else CheckStatus.WARNING
            self.add(name, status, f"{detail} (in {max(0, int(days))} day(s))", where)
        else:
            self.add(name, CheckStatus.OK, f"{detail}, {int(days)} days from now")

    async def vendor_app(self, probe: TenantProbe) -> None:
        from auditor.collect import search_vendor  # loads the Graph SDK: only when a check runs

        vendor = self.config.vendor
        try:
            search = await search_vendor(probe, vendor)
        except GraphError as exc:
            status = CheckStatus.UNKNOWN if exc.status in (401, 403) else CheckStatus.PROBLEM
            self.add("vendor app", status, f"could not be checked: {exc.message}", exc.hint)
            return
        match = identify_service_principal(
            search.candidates, vendor, self.tenant.tenant_id, tenant_name=self.tenant.name
        )
        self.vendor_found = match.outcome is not MatchOutcome.NOT_FOUND
        advice = " ".join(f.message for f in match.findings)
        if match.outcome is MatchOutcome.IDENTIFIED and match.identified is not None:
            sp = match.identified.record
            detail = f"{sp.display_name} (appId {sp.app_id}) found by {match.identified.identified_by.value}"
            if not sp.account_enabled:
                self.add(
                    "vendor app",
                    CheckStatus.WARNING,
                    detail + ", but it is disabled",
                    "Enable the USS AzureAD enterprise application (Properties > Enabled for users to sign in) "
                    "unless the vendor connection was retired on purpose.",
                )
            else:
                self.add("vendor app", CheckStatus.OK, detail + ", enabled", advice)
        elif match.outcome is MatchOutcome.AMBIGUOUS:
            self.add(
                "vendor app",
                CheckStatus.PROBLEM,
                f"{len(match.contenders)} service principals could be the vendor app",
                advice,
            )
        else:
            self.add(
                "vendor app",
                CheckStatus.PROBLEM,
                f"no {vendor.app_display_name or 'vendor'} service principal in this tenant (search: "
                f"{describe_vendor_search(vendor)})",
                advice,
            )


# --- running --------------------------------------------------------------------------------------------


def _default_probe_factory(
    settings: ConnectionSettings, tenant_label: str
) -> AbstractAsyncContextManager[TenantProbe]:
    # Imported here: loading the Graph SDK is only worth it when doctor actually signs in.
    from auditor.graph.preflight import preflight_session

    return preflight_session(settings, tenant_label)


async def check_tenants(
    config: AuditConfig,
    tenants: Sequence[TenantConfig],
    *,
    probe_factory: ProbeFactory | None = None,
    environ: Mapping[str, str] | None = None,
    now: datetime | None = None,
    audit_only: bool = False,
) -> DoctorReport:
    """Check ``tenants`` concurrently (``run.concurrency`` at a time); never raises for a tenant's failure."""
    env = os.environ if environ is None else environ
    factory = probe_factory or _default_probe_factory
    moment = now or datetime.now(UTC)
    gate = asyncio.Semaphore(config.run.concurrency)
    limit = min(_TENANT_CHECK_SECONDS, config.run.tenant_timeout_seconds)

    doctors: list[_TenantDoctor] = []

    async def one(tenant: TenantConfig) -> list[Check]:
        doctor = _TenantDoctor(tenant, config, env, factory, moment, audit_only)
        doctors.append(doctor)
        async with gate:
            try:
                return await asyncio.wait_for(doctor.run(), timeout=limit)
            except TimeoutError:
                doctor.add(
                    "doctor",
                    CheckStatus.PROBLEM,
                    f"the checks did not finish within {limit:g} s (the checks before are complete)",
                    "Check network access to the sign-in and Graph endpoints, then re-run.",
                )
            except Exception as exc:  # one tenant's surprise must not hide the others' results
                log.debug("doctor: %s", doctor.label, exc_info=True)
                doctor.add(
                    "doctor",
                    CheckStatus.PROBLEM,
                    f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}",
                    "This is a bug in the auditor; re-run with --verbose and report the log.",
                )
            return doctor.checks

    results = await asyncio.gather(*(one(t) for t in tenants))
    checks = [c for tenant_checks in results for c in tenant_checks]
    searched = [d for d in doctors if d.vendor_found is not None]
    if len(searched) >= 2 and not any(d.vendor_found for d in searched):
        # As the audit (DESIGN §3.1): found nowhere is far likelier a wrong [vendor] setting.
        checks.append(
            Check(
                "(all tenants)",
                "",
                "vendor app",
                CheckStatus.PROBLEM,
                f"the vendor app was found in none of the {len(searched)} tenants checked (search: "
                f"{describe_vendor_search(config.vendor)})",
                "A vendor setting that matches nothing is far likelier than a fleet that never connected "
                "USS: compare app_id, publisher_tenant_id and app_display_name under [vendor] in the config "
                "with the USS AzureAD enterprise app of one connected tenant.",
            )
        )
    return DoctorReport(tuple(checks), len(tenants))


def run_doctor(
    options: DoctorOptions,
    *,
    probe_factory: ProbeFactory | None = None,
    environ: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> DoctorReport:
    """Load the config, select tenants and check them. Raises ConfigError (exit 2) before any check."""
    config = load_config(options.config)
    tenants = select_tenants(config, options.tenants, options.tags)
    log.info("Checking %d of %d tenant(s) from %s", len(tenants), len(config.tenants), config.path)
    return asyncio.run(
        check_tenants(
            config,
            tenants,
            probe_factory=probe_factory,
            environ=environ,
            now=now,
            audit_only=options.audit_only,
        )
    )


# --- output ---------------------------------------------------------------------------------------------


def report_text(report: DoctorReport) -> str:
    """Plain fixed-width table (for logs): tenant, check, status, detail; the fix on the line below."""
    rows = [(c.tenant, c.check, c.status.value, c.detail) for c in report.checks]
    headers = ("Tenant", "Check", "Status", "Detail")
    widths = [max(len(r[i]) for r in (headers, *rows)) for i in range(3)]
    indent = " " * (sum(widths) + 6)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells[:3], widths, strict=True)) + "  " + cells[3]

    out = [line(headers), line(["-" * w for w in widths] + ["-" * 6])]
    previous = None
    for check, row in zip(report.checks, rows, strict=True):
        shown = row if row[0] != previous else ("", *row[1:])
        previous = row[0]
        out.append(line(shown).rstrip())
        if check.fix and check.status.needs_action:
            out.append(f"{indent}fix: {check.fix}")
    notes = _notes(report)
    if notes:
        out += ["", "Notes:", *(f"  {note}" for note in notes)]
    out += ["", summary_line(report)]
    return "\n".join(out) + "\n"


def _notes(report: DoctorReport) -> list[str]:
    """The advice of checks that could not tell (e.g. a secret's expiry), each distinct text once."""
    return list(dict.fromkeys(c.fix for c in report.checks if c.status is CheckStatus.UNKNOWN and c.fix))


def summary_line(report: DoctorReport) -> str:
    """``15 tenant(s) checked: 2 problem(s), 1 warning(s).``"""
    problems, warnings = report.count(CheckStatus.PROBLEM), report.count(CheckStatus.WARNING)
    verdict = (
        "nothing to fix" if not problems and not warnings else f"{problems} problem(s), {warnings} warning(s)"
    )
    return f"{report.tenants} tenant(s) checked: {verdict}."


_STATUS_STYLE: Final = {
    CheckStatus.OK: "green",
    CheckStatus.WARNING: "yellow",
    CheckStatus.PROBLEM: "bold red",
    CheckStatus.UNKNOWN: "dim",
    CheckStatus.SKIPPED: "dim",
}


def print_report(report: DoctorReport, stream: TextIO | None = None, *, as_json: bool = False) -> None:
    """Print the report: JSON with ``as_json``, a rich table on a terminal, plain text otherwise."""
    stream = stream if stream is not None else sys.stdout
    if as_json:
        stream.write(json.dumps(report.to_dict(), indent=2) + "\n")
    elif stream.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title="auditor doctor", show_lines=True)
        for name in ("Tenant", "Check", "Status", "Detail", "Fix"):
            table.add_column(name, overflow="fold")
        for check in report.checks:
            # Tenant data and messages are plain Text, never rich markup.
            table.add_row(
                Text(check.tenant),
                Text(check.check),
                Text(check.status.value, style=_STATUS_STYLE[check.status]),
                Text(check.detail),
                Text(check.fix if check.status.needs_action else ""),
            )
        console = Console(file=stream, highlight=False)
        console.print(table)
        for note in _notes(report):
            console.print(Text(f"Note: {note}"))
        console.print(Text(summary_line(report)))
    else:
        stream.write(report_text(report))
    stream.flush()
