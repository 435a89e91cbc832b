"""Snapshot -> verdict, findings and billing impact. Pure functions: no I/O, no clock, no Graph.

The rules (DESIGN §3.4, §3.5), in the order they are applied:

1. A whole-tenant error, or a failed section the verdict needs, makes the tenant ``error``. An error is
   never turned into a gap; findings that were established from sections that *were* read are still
   reported alongside it.
2. The vendor SP is identified from the lookup candidates: a pinned ``app_id`` wins, else the
   ``publisher_tenant_id`` (plus the display name), else the display name alone. Same-named SPs that are
   excluded (registered in the tenant itself, not an application, or not matching the pin) are
   look-alikes and never the target. None left: ``not_connected``; several: ``ambiguous``.
3. With an identified SP, ``compliant`` needs: SP enabled, an active Security Reader at ``/`` and, when
   checked, the Exchange Online app role. Anything missing makes it ``non_compliant``.

Decisions where the design is silent:

* Security Reader held **through a role-assignable group** counts as holding it (Entra lists it as an
  active assignment of the group), but gets a ``ROLE_VIA_GROUP`` warning: whether a service principal's
  directory permissions flow through group membership is not documented, and a direct assignment does
  not depend on someone else's group membership management.
* An active assignment whose ``end_date_time`` has passed is treated as absent (a stale listing).
* A time-bound assignment only raises ``ROLE_EXPIRING`` when *no* permanent one at ``/`` exists.
* A snapshot section that is ``None`` was deliberately not collected: not an error. The mailbox census
  missing makes the billing of a ``non_compliant`` tenant unknown (``None``), not zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final, TypeVar
from urllib.parse import quote

from auditor.config import AuditConfig, TenantConfig, VendorSettings
from auditor.constants import (
    CLOUDS,
    DEFAULT_CLOUD,
    EXCHANGE_ONLINE_DISPLAY_NAME,
    KNOWN_EXCHANGE_APP_ROLES,
    ROLE_EXPIRY_WARNING_DAYS,
    SECURITY_READER_ROLE_ID,
    SECURITY_READER_ROLE_NAME,
    TENANT_WIDE_SCOPE,
    ExitCode,
)
from auditor.errors import TenantError
from auditor.model import (
    ROLE_GAP_CODES,
    Billing,
    Collected,
    ExchangeAppRoles,
    Failed,
    Finding,
    FindingCode,
    IdentificationMethod,
    IdentifiedServicePrincipal,
    MailboxCensus,
    Remediation,
    RemediationAction,
    RoleAssignmentRecord,
    RoleEvidence,
    Section,
    ServicePrincipalRecord,
    Severity,
    SharedMailbox,
    Status,
    TenantResult,
    TenantSnapshot,
    internal_error,
    money,
    vendor_found_nowhere,
)

__all__ = [
    "GAP_CODES",
    "EvaluationSettings",
    "MatchOutcome",
    "ServicePrincipalMatch",
    "admin_consent_url",
    "apply_remediation",
    "billing_for",
    "describe_vendor_search",
    "evaluate",
    "exit_code",
    "identify_service_principal",
    "vendor_filters",
    "vendor_found_nowhere",
]

# Findings that make an identified tenant non_compliant. Everything else is advice.
GAP_CODES: Final = ROLE_GAP_CODES | {FindingCode.SP_DISABLED, FindingCode.EXCHANGE_PERMISSION_MISSING}

_V = TypeVar("_V")

# How many mailboxes a finding message names before summarising the rest.
_LISTED_MAILBOXES: Final = 5


@dataclass(frozen=True)
class EvaluationSettings:
    """What the evaluator needs from the config for one tenant."""

    vendor: VendorSettings = field(default_factory=VendorSettings)
    price_per_mailbox: float = 0.0
    currency: str = "GBP"
    tags: tuple[str, ...] = ()
    # Sign-in host of the tenant's cloud, used to build the admin-consent link.
    authority: str = CLOUDS[DEFAULT_CLOUD].authority

    @classmethod
    def for_tenant(cls, config: AuditConfig, tenant: TenantConfig) -> EvaluationSettings:
        """Settings for ``tenant`` taken from a loaded config."""
        return cls(
            vendor=config.vendor,
            price_per_mailbox=tenant.price_per_mailbox,
            currency=config.billing.currency,
            tags=tenant.tags,
            authority=tenant.auth.authority,
        )


class MatchOutcome(StrEnum):
    """Result of looking for the vendor SP among the candidates."""

    IDENTIFIED = "identified"
    NOT_FOUND = "not_found"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class ServicePrincipalMatch:
    """Which SP (if any) is the vendor's, with the identification findings (look-alikes etc.)."""

    outcome: MatchOutcome
    identified: IdentifiedServicePrincipal | None = None
    findings: tuple[Finding, ...] = ()
    contenders: tuple[ServicePrincipalRecord, ...] = ()  # the SPs that made it ambiguous

    def __post_init__(self) -> None:
        if (self.identified is not None) != (self.outcome is MatchOutcome.IDENTIFIED):
            raise ValueError("identified must be set exactly when the outcome is IDENTIFIED")


# --- identification ---------------------------------------------------------------------------------------


def identify_service_principal(
    candidates: Iterable[ServicePrincipalRecord],
    vendor: VendorSettings,
    tenant_id: str,
    *,
    tenant_name: str = "",
) -> ServicePrincipalMatch:
    """Decide which candidate SP is the vendor's (DESIGN §3.4, §3.5).

    * ``vendor.app_id`` set: only the SP with that appId can be the target.
    * else ``vendor.publisher_tenant_id`` set: only SPs whose appOwnerOrganizationId is the publisher,
      narrowed to those with the configured display name when any has it; more than one is ambiguous.
    * else by display name: same-named SPs registered in the tenant itself (appOwnerOrganizationId ==
      tenant id) or that are not application SPs are look-alikes; exactly one remaining is identified
      (with ``SP_NAME_ONLY`` advice), several are ambiguous, none is not found.

    Same-named SPs excluded by these rules get an ``SP_LOOKALIKE`` finding each. Display names compare
    case-insensitively; candidates found by several lookups are counted once.
    """
    tenant = _tenant_label(tenant_name, tenant_id)
    # The collector may return the same SP from several lookups (by appId and by name): count it once.
    unique = list({c.id.strip().lower(): c for c in candidates}.values())
    wanted_name = vendor.app_display_name.strip().casefold()
    named = [c for c in unique if wanted_name and c.display_name.strip().casefold() == wanted_name]
    own_tenant = tenant_id.strip().lower()

    if vendor.app_id:
        eligible = [c for c in unique if c.app_id.strip().lower() == vendor.app_id.lower()]
        method = IdentificationMethod.APP_ID
        why_not = f"its appId is not the pinned vendor.app_id {vendor.app_id}"
    elif vendor.publisher_tenant_id:
        published = [c for c in unique if _owner(c) == vendor.publisher_tenant_id.strip().lower()]
        # The publisher's apps with the configured name; when none has it (a blank name, or the vendor
        # renamed its app), every app of the publisher: one is identified, several are ambiguous.
        eligible = [c for c in published if c in named] or published
        method = IdentificationMethod.PUBLISHER
        why_not = f"it is not published by the vendor tenant {vendor.publisher_tenant_id}"
    else:
        eligible = [c for c in named if _owner(c) != own_tenant and _is_application(c)]
        method = IdentificationMethod.DISPLAY_NAME
        why_not = ""

    findings = [
        _lookalike_finding(c, tenant, _lookalike_reason(c, own_tenant, why_not), vendor, own_tenant)
        for c in named
        if c not in eligible
    ]
    if len(eligible) == 1:
        identified = IdentifiedServicePrincipal(eligible[0], method)
        if method is IdentificationMethod.DISPLAY_NAME:
            findings.append(_name_only_finding(eligible[0], tenant))
        return ServicePrincipalMatch(MatchOutcome.IDENTIFIED, identified, tuple(findings))
    if eligible:
        findings.insert(0, _ambiguous_finding(eligible, tenant, vendor, method))
        return ServicePrincipalMatch(MatchOutcome.AMBIGUOUS, None, tuple(findings), tuple(eligible))
    findings.insert(0, _not_found_finding(tenant, vendor, lookalikes=len(named)))
    return ServicePrincipalMatch(MatchOutcome.NOT_FOUND, None, tuple(findings))


def _owner(sp: ServicePrincipalRecord) -> str:
    return (sp.app_owner_organization_id or "").strip().lower()


def _is_application(sp: ServicePrincipalRecord) -> bool:
    # Unknown type is given the benefit of the doubt; a managed identity or legacy SP never is the vendor's.
    return sp.service_principal_type is None or sp.service_principal_type.casefold() == "application"


def _lookalike_reason(sp: ServicePrincipalRecord, own_tenant: str, why_not: str) -> str:
    if _owner(sp) == own_tenant:
        return "it is registered inside this tenant itself (appOwnerOrganizationId is this tenant)"
    if not _is_application(sp):
        return f"it is a {sp.service_principal_type} service principal, not an application"
    return why_not or "it does not match the configured vendor app"


def _lookalike_finding(
    sp: ServicePrincipalRecord, tenant: str, reason: str, vendor: VendorSettings, own_tenant: str
) -> Finding:
    # Offering to pin only makes sense for an application published elsewhere: a tenant's own
    # registration or a managed identity can never be the vendor's multi-tenant app.
    pinnable = not vendor.app_id and _is_application(sp) and _owner(sp) != own_tenant
    pin_hint = f' If it really is the vendor\'s app, set vendor.app_id = "{sp.app_id}" in the config.'
    return Finding(
        FindingCode.SP_LOOKALIKE,
        Severity.MEDIUM,
        f"Service principal {_sp_label(sp)} in tenant {tenant} is named like the vendor app but is not it: "
        f"{reason}. It is never audited as the vendor app nor given any role. "
        f"Review it in Entra admin center > Enterprise applications and remove it if it is not needed."
        + (pin_hint if pinnable else ""),
    )


def _name_only_finding(sp: ServicePrincipalRecord, tenant: str) -> Finding:
    owner = sp.app_owner_organization_id
    alternative = f' (or vendor.publisher_tenant_id = "{owner}")' if owner else ""
    return Finding(
        FindingCode.SP_NAME_ONLY,
        Severity.LOW,
        f"The vendor app in tenant {tenant} was recognised by display name only: {_sp_label(sp)}, "
        f"published by tenant {owner or 'unknown'}. Pin it so a look-alike can never be mistaken for it: "
        f'after confirming it is the vendor\'s app, set vendor.app_id = "{sp.app_id}"{alternative} in the '
        f"config.",
    )


def _ambiguous_finding(
    contenders: Sequence[ServicePrincipalRecord],
    tenant: str,
    vendor: VendorSettings,
    method: IdentificationMethod,
) -> Finding:
    listed = "; ".join(
        f"object id {c.id}, appId {c.app_id}, published by {c.app_owner_organization_id or 'unknown'}"
        for c in contenders
    )
    basis = "with the pinned appId" if method is IdentificationMethod.APP_ID else "match the config"
    return Finding(
        FindingCode.SP_AMBIGUOUS,
        Severity.HIGH,
        f"{len(contenders)} service principals named {vendor.app_display_name!r} {basis} in tenant {tenant} "
        f"and the config does not say which is the vendor's ({listed}). Nothing was judged or remediated. "
        f'Fix: set vendor.app_id = "<the vendor app\'s appId>" in the config (ask the vendor, or check '
        f"which one the USS portal shows), then re-run.",
    )


def _not_found_finding(tenant: str, vendor: VendorSettings, *, lookalikes: int) -> Finding:
    wanted = [repr(vendor.app_display_name)] if vendor.app_display_name else []
    if vendor.app_id:
        wanted.append(f"appId {vendor.app_id}")
    if vendor.publisher_tenant_id and not vendor.app_id:
        wanted.append(f"published by {vendor.publisher_tenant_id}")
    note = (
        f" {lookalikes} same-named service principal(s) exist but are not the vendor app (see SP_LOOKALIKE)."
        if lookalikes
        else ""
    )
    return Finding(
        FindingCode.SP_NOT_FOUND,
        Severity.INFO,
        f"No service principal of the vendor app ({', '.join(wanted) or 'no [vendor] setting'}) exists in "
        f"tenant {tenant}: the USS connection was never made or was removed, so USS does not sync or bill "
        f"this tenant.{note} Searched: {describe_vendor_search(vendor)}. If this tenant should be protected "
        f"by USS, connect it from the USS portal, then re-run.",
    )


def vendor_filters(vendor: VendorSettings) -> list[str]:
    """The `$filter`s the vendor search sends, in order: by pinned appId, by display name, by publisher.

    `appOwnerOrganizationId` supports `$filter` `eq` (Graph docs, resources/serviceprincipal.md), so a
    config that names only the publisher still finds the vendor's app.
    """
    filters = []
    if vendor.app_id:
        filters.append(f"appId eq {_odata_string(vendor.app_id)}")
    if vendor.app_display_name:
        filters.append(f"displayName eq {_odata_string(vendor.app_display_name)}")
    if vendor.publisher_tenant_id:
        filters.append(f"appOwnerOrganizationId eq {_odata_string(vendor.publisher_tenant_id)}")
    return filters


def describe_vendor_search(vendor: VendorSettings) -> str:
    """The vendor search in words an admin can compare with the config (reports, summary, doctor)."""
    filters = vendor_filters(vendor)
    if not filters:
        return "no vendor search: [vendor] sets no app_id, app_display_name or publisher_tenant_id"
    return "servicePrincipals where " + " or ".join(filters)


def _odata_string(value: str) -> str:
    """An OData string literal ('' escapes a quote)."""
    return "'" + value.replace("'", "''") + "'"


# --- verdict ----------------------------------------------------------------------------------------------


def evaluate(snapshot: TenantSnapshot, settings: EvaluationSettings, now: datetime) -> TenantResult:
    """Judge one tenant's snapshot: status, findings, billing (DESIGN §3.4). Pure and deterministic.

    ``now`` is the reference time for expiring/expired assignments (timezone-aware; naive values are
    taken as UTC).
    """
    now = _aware(now)
    tenant = _tenant_label(snapshot.tenant_name, snapshot.tenant_id)

    def result(
        status: Status,
        *,
        error: TenantError | None = None,
        identified: IdentifiedServicePrincipal | None = None,
        findings: Sequence[Finding] = (),
        census: MailboxCensus | None = None,
    ) -> TenantResult:
        return TenantResult(
            name=snapshot.tenant_name,
            tenant_id=snapshot.tenant_id,
            tags=settings.tags,
            status=status,
            service_principal=identified,
            findings=tuple(findings),
            mailboxes=census,
            billing=billing_for(status, census, settings.price_per_mailbox, settings.currency),
            error=error,
        )

    if snapshot.error is not None:
        return result(Status.ERROR, error=snapshot.error)

    sp_section = snapshot.service_principals
    if sp_section is None:
        return result(Status.ERROR, error=internal_error("the service principal lookup was not collected"))
    if isinstance(sp_section, Failed):
        return result(Status.ERROR, error=sp_section.error)

    errors: list[TenantError] = []
    census = _section_value(snapshot.mailboxes, errors)
    match = identify_service_principal(
        sp_section.value.candidates, settings.vendor, snapshot.tenant_id, tenant_name=snapshot.tenant_name
    )
    findings = list(match.findings)

    if match.outcome is MatchOutcome.NOT_FOUND:
        status = Status.NOT_CONNECTED
    elif match.identified is None:
        status = Status.AMBIGUOUS
    else:
        sp = match.identified.record
        if not sp.account_enabled:
            findings.append(_disabled_finding(sp, tenant))
        evidence = _section_value(snapshot.roles, errors)
        if evidence is not None:
            findings.extend(_judge_roles(evidence, sp, tenant, now))
        elif snapshot.roles is None:
            errors.append(
                internal_error("the vendor service principal's role assignments were not collected")
            )
        if settings.vendor.checks_exchange:
            exchange = _section_value(snapshot.exchange, errors)
            if exchange is not None:
                findings.extend(_judge_exchange(exchange, sp, tenant, snapshot.tenant_id, settings))
            elif snapshot.exchange is None:
                errors.append(
                    internal_error("the vendor service principal's Exchange app roles were not collected")
                )
        status = Status.NON_COMPLIANT if any(f.code in GAP_CODES for f in findings) else Status.COMPLIANT

    if census is not None:
        findings.extend(_judge_mailboxes(census, tenant))
    if errors:
        # A gap never hides an error: the first failure decides, later ones are usually the same cause.
        return result(
            Status.ERROR, error=errors[0], identified=match.identified, findings=findings, census=census
        )
    return result(status, identified=match.identified, findings=findings, census=census)


def _section_value(section: Section[_V] | None, errors: list[TenantError]) -> _V | None:
    """The section's facts; a failure is appended to ``errors``; ``None`` when absent or failed."""
    if isinstance(section, Failed):
        errors.append(section.error)
        return None
    if isinstance(section, Collected):
        return section.value
    return None


def _disabled_finding(sp: ServicePrincipalRecord, tenant: str) -> Finding:
    return Finding(
        FindingCode.SP_DISABLED,
        Severity.CRITICAL,
        f"The vendor service principal {_sp_label(sp)} is disabled in tenant {tenant} (accountEnabled = "
        f"false): USS cannot sign in to sync this tenant. Fix: Entra admin center > Enterprise "
        f"applications > {sp.display_name} > Properties > 'Enabled for users to sign-in?' = Yes.",
    )


def _is_security_reader_for(assignment: RoleAssignmentRecord, sp: ServicePrincipalRecord) -> bool:
    if assignment.role_definition_id.strip().lower() != SECURITY_READER_ROLE_ID:
        return False
    # Direct (principal is the SP) or through a group the collector found the SP to be a member of.
    return (
        assignment.principal_id.strip().lower() == sp.id.strip().lower()
        or assignment.via_group_id is not None
    )


def _judge_roles(
    evidence: RoleEvidence, sp: ServicePrincipalRecord, tenant: str, now: datetime
) -> list[Finding]:
    findings: list[Finding] = []
    relevant = [a for a in evidence.active if _is_security_reader_for(a, sp)]
    current = [a for a in relevant if a.end_date_time is None or _aware(a.end_date_time) > now]
    expired = [a for a in relevant if a not in current]
    tenant_wide = [a for a in current if a.directory_scope_id.strip() == TENANT_WIDE_SCOPE]
    scoped = [a for a in current if a.directory_scope_id.strip() != TENANT_WIDE_SCOPE]
    eligible = [
        a
        for a in evidence.eligible
        if _is_security_reader_for(a, sp) and (a.end_date_time is None or _aware(a.end_date_time) > now)
    ]
    who = _sp_label(sp)
    role = f"{SECURITY_READER_ROLE_NAME} ({SECURITY_READER_ROLE_ID})"
    fix = (
        f"Fix: Entra admin center > Roles and administrators > {SECURITY_READER_ROLE_NAME} > Add "
        f"assignments: select {sp.display_name!r}, assignment type Active, Permanently assigned, scope "
        f"Directory (or run `auditor audit --remediate`)."
    )

    if tenant_wide:
        if all(a.is_via_group for a in tenant_wide):
            group_names = _group_names(tenant_wide, evidence)
            findings.append(
                Finding(
                    FindingCode.ROLE_VIA_GROUP,
                    Severity.MEDIUM,
                    f"{who} in tenant {tenant} holds {role} only through group membership ({group_names}). "
                    f"This counts as compliant, but it is not documented that a service principal's "
                    f"directory permissions flow through a group, and it breaks if the membership changes. "
                    f"Recommended: also assign the role to the service principal directly. {fix}",
                )
            )
        if all(a.end_date_time is not None for a in tenant_wide):
            ends = max(_aware(a.end_date_time) for a in tenant_wide if a.end_date_time is not None)
            soon = ends - now <= timedelta(days=ROLE_EXPIRY_WARNING_DAYS)
            days = max(0, (ends - now).days)
            findings.append(
                Finding(
                    FindingCode.ROLE_EXPIRING,
                    Severity.HIGH if soon else Severity.MEDIUM,
                    f"{who} in tenant {tenant} holds {role} at scope '/' only until "
                    f"{ends:%Y-%m-%d %H:%M} UTC ({days} days): after that USS bills shared mailboxes as "
                    f"users again. Fix: make the assignment permanent (Entra admin center > Roles and "
                    f"administrators > {SECURITY_READER_ROLE_NAME} > Assignments > Update: Permanently "
                    f"assigned), or add a "
                    f"permanent active assignment.",
                )
            )
    else:
        if scoped:
            scopes = ", ".join(sorted({a.directory_scope_id for a in scoped}))
            findings.append(
                Finding(
                    FindingCode.ROLE_SCOPED,
                    Severity.HIGH,
                    f"{who} in tenant {tenant} holds {role} only at scope {scopes}, not tenant-wide ('/'): "
                    f"USS cannot see mailboxes outside it and bills them as users. {fix}",
                )
            )
        if eligible:
            findings.append(
                Finding(
                    FindingCode.ROLE_ELIGIBLE_ONLY,
                    Severity.HIGH,
                    f"{who} in tenant {tenant} is only PIM-eligible for {role}, not active; a service "
                    f"principal cannot activate an eligible role, so it does not hold it. {fix}",
                )
            )
        if not scoped and not eligible:
            lapsed = ""
            if expired:
                last = max(_aware(a.end_date_time) for a in expired if a.end_date_time is not None)
                lapsed = f" A time-bound assignment ended on {last:%Y-%m-%d}."
            unchecked = (
                " (PIM data could not be read, so eligible assignments could not be checked.)"
                if evidence.pim_available is not True
                else ""
            )
            findings.append(
                Finding(
                    FindingCode.ROLE_MISSING,
                    Severity.HIGH,
                    f"{who} in tenant {tenant} has no active {role} assignment at scope '/', so USS cannot "
                    f"recognise shared mailboxes and bills them as users.{lapsed}{unchecked} {fix}",
                )
            )

    if evidence.pim_available is False or evidence.pim_error is not None:
        pim_error = evidence.pim_error
        if pim_error is not None:
            why = f"the PIM reads failed ({pim_error.code}: {pim_error.message.rstrip('.')}). "
            why += pim_error.hint.rstrip(". ") + "."
        else:
            why = "the tenant has no Microsoft Entra ID P2 / ID Governance licence."
        findings.append(
            Finding(
                FindingCode.PIM_UNAVAILABLE,
                Severity.INFO,
                f"Privileged Identity Management data is not available in tenant {tenant}: {why} "
                f"Eligible-only and time-bound {SECURITY_READER_ROLE_NAME} assignments could not be checked; "
                f"the verdict relies on active role assignments, which were read.",
            )
        )
    return findings


def _group_names(assignments: Sequence[RoleAssignmentRecord], evidence: RoleEvidence) -> str:
    # Without a group read permission the groups are limited-information objects: no name, id only.
    names = {g.id.lower(): g.display_name for g in evidence.groups if g.display_name}
    ids = sorted({(a.via_group_id or a.principal_id).lower() for a in assignments})
    return ", ".join(f"{names[i]!r} ({i})" if i in names else f"group {i}" for i in ids)


def _judge_exchange(
    roles: ExchangeAppRoles,
    sp: ServicePrincipalRecord,
    tenant: str,
    tenant_id: str,
    settings: EvaluationSettings,
) -> list[Finding]:
    wanted = settings.vendor.exchange_app_role
    held = {value.strip().casefold() for value in roles.role_values}
    # The collector could not translate some ids; well-known ids are stable across tenants.
    held |= {
        KNOWN_EXCHANGE_APP_ROLES[i.strip().lower()].casefold()
        for i in roles.unresolved_role_ids
        if i.strip().lower() in KNOWN_EXCHANGE_APP_ROLES
    }
    if wanted.casefold() in held:
        return []
    unresolved = (
        f" (app role ids that could not be resolved: {', '.join(roles.unresolved_role_ids)})"
        if roles.unresolved_role_ids
        else ""
    )
    link = admin_consent_url(settings.authority, tenant_id, sp.app_id)
    return [
        Finding(
            FindingCode.EXCHANGE_PERMISSION_MISSING,
            Severity.HIGH,
            f"{_sp_label(sp)} in tenant {tenant} lacks the {EXCHANGE_ONLINE_DISPLAY_NAME} application "
            f"permission {wanted}{unresolved}: connections made before the vendor added it lack it, and "
            f"without it USS cannot read mailbox types. Fix: a Global Administrator of the tenant grants "
            f"admin consent to the vendor app at {link} (the auditor never writes this consent).",
        )
    ]


def _judge_mailboxes(census: MailboxCensus, tenant: str) -> list[Finding]:
    findings: list[Finding] = []
    if census.unclassified:
        reason = f" ({census.unclassified_reason})" if census.unclassified_reason else ""
        findings.append(
            Finding(
                FindingCode.MAILBOX_SCAN_INCOMPLETE,
                Severity.MEDIUM,
                f"{census.unclassified} of {census.total_users} users in tenant {tenant} could not be "
                f"classified after retries{reason}; the {census.shared} shared mailboxes found, and any "
                f"billing figure, are a lower bound. Fix: re-run later; if it persists, check that the "
                f"auditor app has the Microsoft Graph permission MailboxSettings.Read and is not limited "
                f"by an Exchange application access policy.",
            )
        )
    signin = [m for m in census.shared_mailboxes if m.account_enabled]
    if signin:
        findings.append(
            Finding(
                FindingCode.SHARED_MAILBOX_SIGNIN_ENABLED,
                Severity.MEDIUM,
                f"{len(signin)} shared mailbox(es) in tenant {tenant} allow direct sign-in: "
                f"{_mailbox_list(signin)}. Nobody should sign in to a shared mailbox; Microsoft recommends "
                f"blocking it. Fix: Microsoft 365 admin center > Users > Active users > select the mailbox > "
                f"Block sign-in.",
            )
        )
    licensed = [m for m in census.shared_mailboxes if m.licensed]
    if licensed:
        findings.append(
            Finding(
                FindingCode.SHARED_MAILBOX_LICENSED,
                Severity.LOW,
                f"{len(licensed)} shared mailbox(es) in tenant {tenant} have a licence assigned: "
                f"{_mailbox_list(licensed)}. A shared mailbox needs no licence unless it is over 50 GB or "
                f"uses an archive or litigation hold. Fix: review and remove unneeded licences in the "
                f"Microsoft 365 admin center.",
            )
        )
    return findings


def _mailbox_list(mailboxes: Sequence[SharedMailbox]) -> str:
    names = [m.user_principal_name or m.display_name or m.id for m in mailboxes]
    shown = ", ".join(names[:_LISTED_MAILBOXES])
    more = len(names) - _LISTED_MAILBOXES
    return shown + (f" and {more} more" if more > 0 else "")


# --- billing, remediation, exit code -------------------------------------------------------------------


def billing_for(
    status: Status, census: MailboxCensus | None, price_per_mailbox: float, currency: str = "GBP"
) -> Billing:
    """Billing impact of a verdict (DESIGN §3.4).

    ``non_compliant`` and ``remediated`` (until the vendor's next full sync): every shared mailbox is
    billed; unknown (``None``) if the census was not collected. ``compliant`` and ``not_connected``: zero.
    ``ambiguous`` and ``error``: unknown, never zero.
    """
    if status in (Status.NON_COMPLIANT, Status.REMEDIATED):
        if census is None:
            return Billing(None, price_per_mailbox, None, currency)
        cost = money(Decimal(str(price_per_mailbox)) * census.shared)
        return Billing(census.shared, price_per_mailbox, cost, currency)
    if status in (Status.COMPLIANT, Status.NOT_CONNECTED):
        return Billing(0, price_per_mailbox, 0.0, currency)
    return Billing(None, price_per_mailbox, None, currency)


def apply_remediation(result: TenantResult, remediation: Remediation) -> TenantResult:
    """Record a remediation outcome; a ``non_compliant`` tenant becomes ``remediated`` when it is fixed.

    ``created`` / ``already_present`` must mean the assignment was read back. The status only becomes
    ``remediated`` when the role was the *only* gap: a disabled SP or a missing Exchange permission is
    not something the tool writes, so such a tenant stays ``non_compliant``. Billing is unchanged either
    way: the vendor reclassifies shared mailboxes only at its next full sync.
    """
    fixed = remediation.action in (RemediationAction.CREATED, RemediationAction.ALREADY_PRESENT)
    other_gaps = result.finding_codes() & (GAP_CODES - ROLE_GAP_CODES)
    if fixed and result.status is Status.NON_COMPLIANT and result.has_role_gap and not other_gaps:
        return result.with_remediation(remediation, Status.REMEDIATED)
    return result.with_remediation(remediation)


def exit_code(results: Iterable[TenantResult]) -> int:
    """Process exit code for a run (DESIGN §3.1): 3 if any tenant is ``error`` (wins over 1), 1 if any is
    ``non_compliant`` or ``ambiguous``, or when the vendor app was found in none of two or more tenants
    audited without error (:func:`vendor_found_nowhere`), else 0."""
    results = list(results)
    statuses = {r.status for r in results}
    if Status.ERROR in statuses:
        return int(ExitCode.TENANT_ERROR)
    if statuses & {Status.NON_COMPLIANT, Status.AMBIGUOUS} or vendor_found_nowhere(results):
        return int(ExitCode.GAPS)
    return int(ExitCode.OK)


def admin_consent_url(authority: str, tenant_id: str, app_id: str) -> str:
    """The admin-consent link a tenant's Global Administrator opens to consent to the vendor app."""
    return (
        f"{authority.rstrip('/')}/{quote(tenant_id, safe='')}/adminconsent?client_id={quote(app_id, safe='')}"
    )


# --- helpers --------------------------------------------------------------------------------------------


def _tenant_label(name: str, tenant_id: str) -> str:
    return f"{name} ({tenant_id})" if name else tenant_id


def _sp_label(sp: ServicePrincipalRecord) -> str:
    return f"{sp.display_name!r} (object id {sp.id}, appId {sp.app_id})"


def _aware(value: datetime) -> datetime:
    # Graph returns UTC; a naive value would make comparisons raise, so it is read as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
