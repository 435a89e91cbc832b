"""Table-driven tests of the pure evaluator (auditor.evaluate) and the result model (auditor.model)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auditor.config import VendorSettings
from auditor.constants import EXCHANGE_MANAGE_AS_APP_ROLE_ID, SECURITY_READER_ROLE_ID
from auditor.errors import ErrorCode, TenantError, redact
from auditor.evaluate import (
    EvaluationSettings,
    MatchOutcome,
    ServicePrincipalMatch,
    admin_consent_url,
    apply_remediation,
    billing_for,
    evaluate,
    exit_code,
    identify_service_principal,
)
from auditor.model import (
    SCHEMA_VERSION,
    Billing,
    Collected,
    ExchangeAppRoles,
    Failed,
    FindingCode,
    GroupRecord,
    IdentificationMethod,
    IdentifiedServicePrincipal,
    MailboxCensus,
    MailboxPurpose,
    Remediation,
    RemediationAction,
    RoleAssignmentRecord,
    RoleEvidence,
    RunMode,
    RunResult,
    ServicePrincipalRecord,
    ServicePrincipalSearch,
    Severity,
    SharedMailbox,
    Status,
    TenantResult,
    TenantSnapshot,
    error_result,
)

NOW = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
TENANT_ID = "aaaaaaaa-0000-0000-0000-000000000001"
VENDOR_APP_ID = "bbbbbbbb-0000-0000-0000-000000000002"
PUBLISHER = "cccccccc-0000-0000-0000-000000000003"
OTHER_ORG = "dddddddd-0000-0000-0000-000000000004"
SP_ID = "eeeeeeee-0000-0000-0000-000000000005"
GROUP_ID = "ffffffff-0000-0000-0000-000000000006"


# --- builders -------------------------------------------------------------------------------------------


def make_sp(
    id: str = SP_ID,
    app_id: str = VENDOR_APP_ID,
    name: str = "USS AzureAD",
    enabled: bool = True,
    owner: str | None = PUBLISHER,
    sp_type: str | None = "Application",
) -> ServicePrincipalRecord:
    return ServicePrincipalRecord(id, app_id, name, enabled, owner, sp_type)


def sr(
    scope: str = "/",
    principal: str = SP_ID,
    end: datetime | None = None,
    via_group: str | None = None,
    role: str = SECURITY_READER_ROLE_ID,
) -> RoleAssignmentRecord:
    return RoleAssignmentRecord(
        id=f"ra-{scope}-{principal}-{end}",
        principal_id=principal,
        role_definition_id=role,
        directory_scope_id=scope,
        end_date_time=end,
        via_group_id=via_group,
        member_type="Group" if via_group else "Direct",
    )


def mailbox(n: int, *, enabled: bool = False, licensed: bool = False) -> SharedMailbox:
    upn = f"shared{n}@contoso.example"
    return SharedMailbox(f"mb-{n}", f"Shared {n}", upn, upn, enabled, licensed)


def census(shared: int = 3, unclassified: int = 0, **flags: bool) -> MailboxCensus:
    return MailboxCensus(
        shared_mailboxes=tuple(mailbox(i, **flags) for i in range(shared)),
        user=10,
        room=1,
        equipment=1,
        other=0,
        no_mailbox=2,
        unclassified=unclassified,
        unclassified_reason="throttled" if unclassified else "",
    )


THE_VENDOR_SP = (make_sp(),)
ERR = TenantError(
    ErrorCode.PERMISSION_DENIED, "403 on roleAssignments", "grant RoleManagement.Read.Directory"
)
GOOD_ROLES = RoleEvidence(active=(sr(),), pim_available=True)
GOOD_EXCHANGE = ExchangeAppRoles(role_values=("Exchange.ManageAsApp",))
_UNSET: Any = object()


def wrap(value: Any) -> Any:
    """Raw facts become Collected; Failed and None (not collected) pass through."""
    return value if value is None or isinstance(value, Failed) else Collected(value)


def snapshot(
    *,
    candidates: Any = THE_VENDOR_SP,
    roles: Any = GOOD_ROLES,
    exchange: Any = GOOD_EXCHANGE,
    mailboxes: Any = _UNSET,
    error: TenantError | None = None,
) -> TenantSnapshot:
    sps = (
        candidates if isinstance(candidates, Failed) else Collected(ServicePrincipalSearch(tuple(candidates)))
    )
    return TenantSnapshot(
        tenant_name="Contoso",
        tenant_id=TENANT_ID,
        collected_at=NOW,
        error=error,
        service_principals=sps,
        roles=wrap(roles),
        exchange=wrap(exchange),
        mailboxes=wrap(census() if mailboxes is _UNSET else mailboxes),
    )


PINNED = EvaluationSettings(
    vendor=VendorSettings(app_id=VENDOR_APP_ID), price_per_mailbox=2.5, tags=("gold",)
)
BY_NAME = EvaluationSettings(vendor=VendorSettings(), price_per_mailbox=2.5)
BY_PUBLISHER = EvaluationSettings(vendor=VendorSettings(publisher_tenant_id=PUBLISHER), price_per_mailbox=2.5)
NO_EXCHANGE = EvaluationSettings(vendor=VendorSettings(app_id=VENDOR_APP_ID, exchange_app_role=""))


# --- the status / findings table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    snap: TenantSnapshot
    status: Status
    codes: frozenset[FindingCode] = frozenset()
    settings: EvaluationSettings = PINNED
    severities: dict[FindingCode, Severity] = field(default_factory=dict)
    error_code: ErrorCode | None = None


C = FindingCode
CASES = [
    Case("compliant", snapshot(), Status.COMPLIANT),
    Case(
        "not connected",
        snapshot(candidates=()),
        Status.NOT_CONNECTED,
        frozenset({C.SP_NOT_FOUND}),
        severities={C.SP_NOT_FOUND: Severity.INFO},
    ),
    Case(
        "not connected, census not collected",
        snapshot(candidates=(), roles=None, exchange=None, mailboxes=None),
        Status.NOT_CONNECTED,
        frozenset({C.SP_NOT_FOUND}),
    ),
    Case(
        "ambiguous by name",
        snapshot(
            candidates=(make_sp(), make_sp(id="sp2", app_id="app2", owner=OTHER_ORG)),
            roles=None,
            exchange=None,
        ),
        Status.AMBIGUOUS,
        frozenset({C.SP_AMBIGUOUS}),
        BY_NAME,
        {C.SP_AMBIGUOUS: Severity.HIGH},
    ),
    Case(
        "whole-tenant auth error",
        snapshot(error=TenantError(ErrorCode.AUTH_FAILED, "AADSTS7000215")),
        Status.ERROR,
        error_code=ErrorCode.AUTH_FAILED,
    ),
    Case(
        "sp lookup failed",
        snapshot(candidates=Failed(ERR)),
        Status.ERROR,
        error_code=ErrorCode.PERMISSION_DENIED,
    ),
    Case("roles failed", snapshot(roles=Failed(ERR)), Status.ERROR, error_code=ErrorCode.PERMISSION_DENIED),
    Case(
        "exchange failed",
        snapshot(exchange=Failed(TenantError(ErrorCode.THROTTLED, "429"))),
        Status.ERROR,
        error_code=ErrorCode.THROTTLED,
    ),
    Case(
        "census failed on a compliant tenant",
        snapshot(mailboxes=Failed(TenantError(ErrorCode.TIMEOUT, "t/o"))),
        Status.ERROR,
        error_code=ErrorCode.TIMEOUT,
    ),
    Case(
        "census failed on a not connected tenant",
        snapshot(candidates=(), mailboxes=Failed(TenantError(ErrorCode.TIMEOUT, "t/o"))),
        Status.ERROR,
        frozenset({C.SP_NOT_FOUND}),
        error_code=ErrorCode.TIMEOUT,
    ),
    Case(
        "error keeps gaps known from other sections",
        snapshot(roles=RoleEvidence(pim_available=True), exchange=Failed(ERR)),
        Status.ERROR,
        frozenset({C.ROLE_MISSING}),
        error_code=ErrorCode.PERMISSION_DENIED,
    ),
    Case(
        "roles not collected for an identified SP",
        snapshot(roles=None),
        Status.ERROR,
        error_code=ErrorCode.INTERNAL_ERROR,
    ),
    Case(
        "exchange not collected while checked",
        snapshot(exchange=None),
        Status.ERROR,
        error_code=ErrorCode.INTERNAL_ERROR,
    ),
    Case(
        "role missing",
        snapshot(roles=RoleEvidence(pim_available=True)),
        Status.NON_COMPLIANT,
        frozenset({C.ROLE_MISSING}),
        severities={C.ROLE_MISSING: Severity.HIGH},
    ),
    Case(
        "other role only",
        snapshot(
            roles=RoleEvidence(active=(sr(role="62e90394-69f5-4237-9190-012177145e10"),), pim_available=True)
        ),
        Status.NON_COMPLIANT,
        frozenset({C.ROLE_MISSING}),
    ),
    Case(
        "another principal's assignment does not count",
        snapshot(roles=RoleEvidence(active=(sr(principal="someone-else"),), pim_available=True)),
        Status.NON_COMPLIANT,
        frozenset({C.ROLE_MISSING}),
    ),
    Case(
        "expired assignment",
        snapshot(roles=RoleEvidence(active=(sr(end=NOW - timedelta(days=1)),), pim_available=True)),
        Status.NON_COMPLIANT,
        frozenset({C.ROLE_MISSING}),
    ),
    Case(
        "scoped to an administrative unit",
        snapshot(roles=RoleEvidence(active=(sr(scope="/administrativeUnits/au1"),), pim_available=True)),
        Status.NON_COMPLIANT,
        frozenset({C.ROLE_SCOPED}),
        severities={C.ROLE_SCOPED: Severity.HIGH},
    ),
    Case(
        "eligible only",
        snapshot(roles=RoleEvidence(eligible=(sr(),), pim_available=True)),
        Status.NON_COMPLIANT,
        frozenset({C.ROLE_ELIGIBLE_ONLY}),
    ),
    Case(
        "scoped and eligible",
        snapshot(
            roles=RoleEvidence(
                active=(sr(scope="/administrativeUnits/au1"),), eligible=(sr(),), pim_available=True
            )
        ),
        Status.NON_COMPLIANT,
        frozenset({C.ROLE_SCOPED, C.ROLE_ELIGIBLE_ONLY}),
    ),
    Case(
        "scoped plus tenant-wide is fine",
        snapshot(roles=RoleEvidence(active=(sr(scope="/administrativeUnits/au1"), sr()), pim_available=True)),
        Status.COMPLIANT,
    ),
    Case(
        "expiring within 30 days",
        snapshot(roles=RoleEvidence(active=(sr(end=NOW + timedelta(days=10)),), pim_available=True)),
        Status.COMPLIANT,
        frozenset({C.ROLE_EXPIRING}),
        severities={C.ROLE_EXPIRING: Severity.HIGH},
    ),
    Case(
        "expiring later",
        snapshot(roles=RoleEvidence(active=(sr(end=NOW + timedelta(days=90)),), pim_available=True)),
        Status.COMPLIANT,
        frozenset({C.ROLE_EXPIRING}),
        severities={C.ROLE_EXPIRING: Severity.MEDIUM},
    ),
    Case(
        "time-bound plus permanent is fine",
        snapshot(roles=RoleEvidence(active=(sr(end=NOW + timedelta(days=3)), sr()), pim_available=True)),
        Status.COMPLIANT,
    ),
    Case(
        "via role-assignable group",
        snapshot(
            roles=RoleEvidence(
                active=(sr(principal=GROUP_ID, via_group=GROUP_ID),),
                groups=(GroupRecord(GROUP_ID, "USS role holders", True),),
                pim_available=True,
            )
        ),
        Status.COMPLIANT,
        frozenset({C.ROLE_VIA_GROUP}),
        severities={C.ROLE_VIA_GROUP: Severity.MEDIUM},
    ),
    Case(
        "via group plus direct is fine",
        snapshot(
            roles=RoleEvidence(active=(sr(principal=GROUP_ID, via_group=GROUP_ID), sr()), pim_available=True)
        ),
        Status.COMPLIANT,
    ),
    Case(
        "sp disabled",
        snapshot(candidates=(make_sp(enabled=False),)),
        Status.NON_COMPLIANT,
        frozenset({C.SP_DISABLED}),
        severities={C.SP_DISABLED: Severity.CRITICAL},
    ),
    Case(
        "exchange permission missing",
        snapshot(exchange=ExchangeAppRoles()),
        Status.NON_COMPLIANT,
        frozenset({C.EXCHANGE_PERMISSION_MISSING}),
    ),
    Case(
        "exchange: other roles only",
        snapshot(exchange=ExchangeAppRoles(role_values=("full_access_as_app",))),
        Status.NON_COMPLIANT,
        frozenset({C.EXCHANGE_PERMISSION_MISSING}),
    ),
    Case(
        "exchange: unresolved well-known id",
        snapshot(exchange=ExchangeAppRoles(unresolved_role_ids=(EXCHANGE_MANAGE_AS_APP_ROLE_ID.upper(),))),
        Status.COMPLIANT,
    ),
    Case("exchange check off", snapshot(exchange=None), Status.COMPLIANT, settings=NO_EXCHANGE),
    Case(
        "every gap at once",
        snapshot(
            candidates=(make_sp(enabled=False),),
            roles=RoleEvidence(pim_available=True),
            exchange=ExchangeAppRoles(),
        ),
        Status.NON_COMPLIANT,
        frozenset({C.SP_DISABLED, C.ROLE_MISSING, C.EXCHANGE_PERMISSION_MISSING}),
    ),
    Case(
        "mailbox scan incomplete is not an error",
        snapshot(mailboxes=census(unclassified=4)),
        Status.COMPLIANT,
        frozenset({C.MAILBOX_SCAN_INCOMPLETE}),
    ),
    Case(
        "shared mailbox sign-in enabled",
        snapshot(mailboxes=census(enabled=True)),
        Status.COMPLIANT,
        frozenset({C.SHARED_MAILBOX_SIGNIN_ENABLED}),
    ),
    Case(
        "shared mailbox licensed",
        snapshot(mailboxes=census(licensed=True)),
        Status.COMPLIANT,
        frozenset({C.SHARED_MAILBOX_LICENSED}),
        severities={C.SHARED_MAILBOX_LICENSED: Severity.LOW},
    ),
    Case(
        "mailbox hygiene on a not connected tenant",
        snapshot(candidates=(), mailboxes=census(enabled=True)),
        Status.NOT_CONNECTED,
        frozenset({C.SP_NOT_FOUND, C.SHARED_MAILBOX_SIGNIN_ENABLED}),
    ),
    Case("census not collected is not an error", snapshot(mailboxes=None), Status.COMPLIANT),
    Case(
        "pim not licensed",
        snapshot(roles=RoleEvidence(active=(sr(),), pim_available=False)),
        Status.COMPLIANT,
        frozenset({C.PIM_UNAVAILABLE}),
        severities={C.PIM_UNAVAILABLE: Severity.INFO},
    ),
    Case(
        "pim read failed is not an error",
        snapshot(roles=RoleEvidence(pim_available=None, pim_error=ERR)),
        Status.NON_COMPLIANT,
        frozenset({C.ROLE_MISSING, C.PIM_UNAVAILABLE}),
    ),
    Case(
        "identified by name only",
        snapshot(),
        Status.COMPLIANT,
        frozenset({C.SP_NAME_ONLY}),
        BY_NAME,
        {C.SP_NAME_ONLY: Severity.LOW},
    ),
    Case("identified by publisher", snapshot(), Status.COMPLIANT, settings=BY_PUBLISHER),
    Case(
        "look-alike beside the vendor app",
        snapshot(candidates=(make_sp(), make_sp(id="fake", app_id="fake-app", owner=TENANT_ID))),
        Status.COMPLIANT,
        frozenset({C.SP_LOOKALIKE, C.SP_NAME_ONLY}),
        BY_NAME,
        {C.SP_LOOKALIKE: Severity.MEDIUM},
    ),
    Case(
        "only a look-alike",
        snapshot(
            candidates=(make_sp(id="fake", app_id="fake-app", owner=TENANT_ID),), roles=None, exchange=None
        ),
        Status.NOT_CONNECTED,
        frozenset({C.SP_NOT_FOUND, C.SP_LOOKALIKE}),
        BY_NAME,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_verdicts_and_findings(case: Case) -> None:
    result = evaluate(case.snap, case.settings, NOW)
    assert result.status is case.status
    assert result.finding_codes() == case.codes
    for code, severity in case.severities.items():
        assert next(f for f in result.findings if f.code is code).severity is severity
    if case.error_code is None:
        assert result.error is None
    else:
        assert result.error is not None
        assert result.error.code is case.error_code
        assert result.error.hint  # every error tells the admin what to do


def test_table_covers_every_status_and_finding_code() -> None:
    statuses = {c.status for c in CASES} | {Status.REMEDIATED}  # remediated: see test_apply_remediation_*
    assert statuses == set(Status)
    assert set().union(*(c.codes for c in CASES)) == set(FindingCode)


def test_findings_are_admin_ready() -> None:
    result = evaluate(
        snapshot(roles=RoleEvidence(pim_available=True), exchange=ExchangeAppRoles()), PINNED, NOW
    )
    role = next(f for f in result.findings if f.code is FindingCode.ROLE_MISSING)
    # what (role + id), who (SP name, object id, appId), where (tenant name + id), and the exact fix
    for fragment in (
        "Security Reader",
        SECURITY_READER_ROLE_ID,
        "'USS AzureAD'",
        SP_ID,
        VENDOR_APP_ID,
        "Contoso",
        TENANT_ID,
        "Fix:",
        "Active",
        "--remediate",
    ):
        assert fragment in role.message
    exchange = next(f for f in result.findings if f.code is FindingCode.EXCHANGE_PERMISSION_MISSING)
    assert "Exchange.ManageAsApp" in exchange.message
    assert (
        admin_consent_url("https://login.microsoftonline.com", TENANT_ID, VENDOR_APP_ID) in exchange.message
    )


def test_error_result_never_reports_a_gap_or_cost() -> None:
    result = evaluate(snapshot(error=TenantError(ErrorCode.AUTH_FAILED, "bad cert")), PINNED, NOW)
    assert result.findings == ()
    assert result.billing == Billing(None, 2.5, None)
    assert result.service_principal is None


def test_error_from_section_keeps_the_identified_sp() -> None:
    result = evaluate(snapshot(roles=Failed(ERR)), PINNED, NOW)
    assert result.status is Status.ERROR
    assert result.error == ERR
    assert result.service_principal is not None
    assert result.billing.monthly_cost is None


def test_via_group_message_names_the_group() -> None:
    roles = RoleEvidence(
        active=(sr(principal=GROUP_ID, via_group=GROUP_ID),),
        groups=(GroupRecord(GROUP_ID, "USS role holders", True),),
        pim_available=True,
    )
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    assert "'USS role holders'" in result.findings[0].message


def test_role_missing_mentions_lapsed_assignment_and_unchecked_pim() -> None:
    roles = RoleEvidence(active=(sr(end=datetime(2025, 2, 1, tzinfo=UTC)),), pim_available=False)
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    message = next(f.message for f in result.findings if f.code is FindingCode.ROLE_MISSING)
    assert "ended on 2025-02-01" in message
    assert "eligible assignments could not be checked" in message


def test_naive_datetimes_are_taken_as_utc() -> None:
    roles = RoleEvidence(active=(sr(end=datetime(2025, 3, 5)),), pim_available=True)
    result = evaluate(snapshot(roles=roles), PINNED, NOW.replace(tzinfo=None))
    assert result.finding_codes() == {FindingCode.ROLE_EXPIRING}


def test_mailbox_list_is_truncated() -> None:
    result = evaluate(snapshot(mailboxes=census(shared=8, enabled=True)), PINNED, NOW)
    assert "and 3 more" in result.findings[0].message


def test_admin_consent_url_follows_the_cloud() -> None:
    settings = replace(PINNED, authority="https://login.microsoftonline.us")
    result = evaluate(snapshot(exchange=ExchangeAppRoles()), settings, NOW)
    assert f"https://login.microsoftonline.us/{TENANT_ID}/adminconsent?client_id={VENDOR_APP_ID}" in (
        result.findings[0].message
    )


# --- identification ---------------------------------------------------------------------------------------

VENDOR = make_sp()
LOOKALIKE = make_sp(id="look", app_id="look-app", owner=TENANT_ID)
THIRD_PARTY = make_sp(id="third", app_id="third-app", owner=OTHER_ORG)
RENAMED = make_sp(name="USS Azure AD (v2)")
MANAGED_IDENTITY = make_sp(id="mi", app_id="mi-app", owner=None, sp_type="ManagedIdentity")
UNKNOWN_OWNER = make_sp(id="old", app_id="old-app", owner=None, sp_type=None)

ID_CASES = [
    (
        "pinned app id",
        VendorSettings(app_id=VENDOR_APP_ID),
        [VENDOR],
        MatchOutcome.IDENTIFIED,
        "app_id",
        set(),
    ),
    (
        "pinned app id ignores name",
        VendorSettings(app_id=VENDOR_APP_ID),
        [RENAMED],
        MatchOutcome.IDENTIFIED,
        "app_id",
        set(),
    ),
    (
        "pinned app id is case-insensitive",
        VendorSettings(app_id=VENDOR_APP_ID),
        [replace(VENDOR, app_id=VENDOR_APP_ID.upper())],
        MatchOutcome.IDENTIFIED,
        "app_id",
        set(),
    ),
    (
        "pinned app id wins over same-named",
        VendorSettings(app_id=VENDOR_APP_ID),
        [THIRD_PARTY, VENDOR, LOOKALIKE],
        MatchOutcome.IDENTIFIED,
        "app_id",
        {"third", "look"},
    ),
    (
        "pinned app id absent",
        VendorSettings(app_id=VENDOR_APP_ID),
        [THIRD_PARTY],
        MatchOutcome.NOT_FOUND,
        None,
        {"third"},
    ),
    (
        "publisher",
        VendorSettings(publisher_tenant_id=PUBLISHER),
        [THIRD_PARTY, VENDOR],
        MatchOutcome.IDENTIFIED,
        "publisher",
        {"third"},
    ),
    (
        "publisher finds a renamed app",
        VendorSettings(publisher_tenant_id=PUBLISHER),
        [RENAMED],
        MatchOutcome.IDENTIFIED,
        "publisher",
        set(),
    ),
    (
        "publisher alone, blank name",
        VendorSettings(app_display_name="", publisher_tenant_id=PUBLISHER),
        [RENAMED],
        MatchOutcome.IDENTIFIED,
        "publisher",
        set(),
    ),
    (
        "publisher prefers its app with the configured name",
        VendorSettings(publisher_tenant_id=PUBLISHER),
        [RENAMED, replace(VENDOR, id="sp2", app_id="app2")],
        MatchOutcome.IDENTIFIED,
        "publisher",
        set(),
    ),
    (
        "publisher with two apps, neither named",
        VendorSettings(app_display_name="", publisher_tenant_id=PUBLISHER),
        [RENAMED, replace(RENAMED, id="sp2", app_id="app2")],
        MatchOutcome.AMBIGUOUS,
        None,
        set(),
    ),
    (
        "publisher matches nothing: a same-named app of another publisher is a look-alike",
        VendorSettings(publisher_tenant_id=OTHER_ORG + "0"),
        [VENDOR],
        MatchOutcome.NOT_FOUND,
        None,
        {VENDOR.id},
    ),
    (
        "publisher with two apps",
        VendorSettings(publisher_tenant_id=PUBLISHER),
        [VENDOR, replace(VENDOR, id="sp2", app_id="app2")],
        MatchOutcome.AMBIGUOUS,
        None,
        set(),
    ),
    ("name only", VendorSettings(), [VENDOR], MatchOutcome.IDENTIFIED, "display_name", set()),
    (
        "name ignores case and spaces",
        VendorSettings(),
        [replace(VENDOR, display_name="  uss azuread ")],
        MatchOutcome.IDENTIFIED,
        "display_name",
        set(),
    ),
    (
        "name excludes tenant-owned",
        VendorSettings(),
        [LOOKALIKE, VENDOR],
        MatchOutcome.IDENTIFIED,
        "display_name",
        {"look"},
    ),
    (
        "name excludes managed identities",
        VendorSettings(),
        [MANAGED_IDENTITY, VENDOR],
        MatchOutcome.IDENTIFIED,
        "display_name",
        {"mi"},
    ),
    (
        "name: unknown owner and type may be the vendor",
        VendorSettings(),
        [UNKNOWN_OWNER],
        MatchOutcome.IDENTIFIED,
        "display_name",
        set(),
    ),
    ("name: two third parties", VendorSettings(), [VENDOR, THIRD_PARTY], MatchOutcome.AMBIGUOUS, None, set()),
    (
        "name: same SP found twice",
        VendorSettings(),
        [VENDOR, VENDOR],
        MatchOutcome.IDENTIFIED,
        "display_name",
        set(),
    ),
    ("name: look-alike only", VendorSettings(), [LOOKALIKE], MatchOutcome.NOT_FOUND, None, {"look"}),
    ("nothing", VendorSettings(), [], MatchOutcome.NOT_FOUND, None, set()),
    (
        "other apps are ignored",
        VendorSettings(),
        [replace(THIRD_PARTY, display_name="Zoom")],
        MatchOutcome.NOT_FOUND,
        None,
        set(),
    ),
]


@pytest.mark.parametrize(
    ("vendor", "candidates", "outcome", "method", "lookalikes"),
    [c[1:] for c in ID_CASES],
    ids=[c[0] for c in ID_CASES],
)
def test_identify_service_principal(
    vendor: VendorSettings,
    candidates: list[ServicePrincipalRecord],
    outcome: MatchOutcome,
    method: str | None,
    lookalikes: set[str],
) -> None:
    match = identify_service_principal(candidates, vendor, TENANT_ID, tenant_name="Contoso")
    assert match.outcome is outcome
    if method is None:
        assert match.identified is None
    else:
        assert match.identified is not None
        assert match.identified.identified_by is IdentificationMethod(method)
    flagged = {
        f.message.split("object id ")[1].split(",")[0] for f in match.findings if f.code is C.SP_LOOKALIKE
    }
    assert flagged == lookalikes
    expected = {
        MatchOutcome.NOT_FOUND: C.SP_NOT_FOUND,
        MatchOutcome.AMBIGUOUS: C.SP_AMBIGUOUS,
    }.get(outcome)
    if expected:
        assert match.findings[0].code is expected
        assert not any(f.code is C.SP_NAME_ONLY for f in match.findings)


def test_ambiguous_lists_the_contenders_and_the_fix() -> None:
    match = identify_service_principal([VENDOR, THIRD_PARTY], VendorSettings(), TENANT_ID)
    assert {c.id for c in match.contenders} == {VENDOR.id, THIRD_PARTY.id}
    message = match.findings[0].message
    assert VENDOR.app_id in message and THIRD_PARTY.app_id in message and "vendor.app_id" in message


def test_name_only_recommends_pinning_the_app_id() -> None:
    match = identify_service_principal([VENDOR], VendorSettings(), TENANT_ID)
    assert f'vendor.app_id = "{VENDOR_APP_ID}"' in match.findings[0].message


def test_lookalike_explains_why() -> None:
    match = identify_service_principal([LOOKALIKE, VENDOR], VendorSettings(), TENANT_ID)
    assert "registered inside this tenant itself" in match.findings[0].message


def test_match_invariant() -> None:
    with pytest.raises(ValueError, match="identified"):
        ServicePrincipalMatch(MatchOutcome.IDENTIFIED)


# --- billing --------------------------------------------------------------------------------------------

BILLING_CASES = [
    (Status.NON_COMPLIANT, census(shared=3), 2.5, Billing(3, 2.5, 7.5)),
    (Status.REMEDIATED, census(shared=3), 2.5, Billing(3, 2.5, 7.5)),
    (Status.NON_COMPLIANT, census(shared=3), 0.1, Billing(3, 0.1, 0.3)),  # no 0.30000000000000004
    (Status.NON_COMPLIANT, census(shared=3), 0.125, Billing(3, 0.125, 0.38)),  # half-up
    (Status.NON_COMPLIANT, census(shared=0), 2.5, Billing(0, 2.5, 0.0)),
    (Status.NON_COMPLIANT, None, 2.5, Billing(None, 2.5, None)),
    (Status.COMPLIANT, census(shared=3), 2.5, Billing(0, 2.5, 0.0)),
    (Status.NOT_CONNECTED, census(shared=3), 2.5, Billing(0, 2.5, 0.0)),
    (Status.AMBIGUOUS, census(shared=3), 2.5, Billing(None, 2.5, None)),
    (Status.ERROR, census(shared=3), 2.5, Billing(None, 2.5, None)),
]


@pytest.mark.parametrize(("status", "the_census", "price", "expected"), BILLING_CASES)
def test_billing_for(
    status: Status, the_census: MailboxCensus | None, price: float, expected: Billing
) -> None:
    assert billing_for(status, the_census, price) == expected


def test_evaluate_bills_shared_mailboxes_of_a_non_compliant_tenant() -> None:
    settings = replace(PINNED, price_per_mailbox=3.0, currency="EUR")
    result = evaluate(
        snapshot(roles=RoleEvidence(pim_available=True), mailboxes=census(shared=4)), settings, NOW
    )
    assert result.billing == Billing(4, 3.0, 12.0, "EUR")


def test_incomplete_scan_bills_the_lower_bound() -> None:
    the_census = census(shared=2, unclassified=5)
    result = evaluate(snapshot(roles=RoleEvidence(pim_available=True), mailboxes=the_census), PINNED, NOW)
    assert result.status is Status.NON_COMPLIANT
    assert result.billing.billed_shared_mailboxes == 2
    message = next(f.message for f in result.findings if f.code is C.MAILBOX_SCAN_INCOMPLETE)
    assert "5 of 21 users" in message and "lower bound" in message and "MailboxSettings.Read" in message


# --- remediation ------------------------------------------------------------------------------------------


def _non_compliant(**kwargs: Any) -> TenantResult:
    result = evaluate(snapshot(roles=RoleEvidence(pim_available=True), **kwargs), PINNED, NOW)
    assert result.status is Status.NON_COMPLIANT
    return result


@pytest.mark.parametrize("action", [RemediationAction.CREATED, RemediationAction.ALREADY_PRESENT])
def test_apply_remediation_marks_fixed_tenant_remediated_and_keeps_billing(action: RemediationAction) -> None:
    before = _non_compliant()
    after = apply_remediation(before, Remediation(action, "assignment read back", role_assignment_id="ra1"))
    assert after.status is Status.REMEDIATED
    assert after.billing == before.billing and after.billing.monthly_cost == 7.5
    assert after.remediation.action is action
    assert exit_code([after]) == 0


@pytest.mark.parametrize(
    "action",
    [RemediationAction.PLANNED, RemediationAction.FAILED, RemediationAction.REFUSED, RemediationAction.NONE],
)
def test_apply_remediation_without_a_fix_keeps_status(action: RemediationAction) -> None:
    after = apply_remediation(_non_compliant(), Remediation(action))
    assert after.status is Status.NON_COMPLIANT
    assert after.remediation.action is action


def test_apply_remediation_with_other_gaps_stays_non_compliant() -> None:
    before = _non_compliant(exchange=ExchangeAppRoles())
    after = apply_remediation(before, Remediation(RemediationAction.CREATED))
    assert after.status is Status.NON_COMPLIANT
    assert after.remediation.action is RemediationAction.CREATED


def test_apply_remediation_never_changes_an_error() -> None:
    before = evaluate(snapshot(roles=Failed(ERR)), PINNED, NOW)
    assert apply_remediation(before, Remediation(RemediationAction.CREATED)).status is Status.ERROR


def test_has_role_gap() -> None:
    assert _non_compliant().has_role_gap
    assert not evaluate(snapshot(exchange=ExchangeAppRoles()), PINNED, NOW).has_role_gap


# --- exit codes -----------------------------------------------------------------------------------------

S = Status


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ([], 0),
        ([S.COMPLIANT, S.REMEDIATED, S.NOT_CONNECTED], 0),
        ([S.COMPLIANT, S.NON_COMPLIANT], 1),
        ([S.AMBIGUOUS], 1),
        ([S.ERROR], 3),
        ([S.NON_COMPLIANT, S.AMBIGUOUS, S.ERROR, S.COMPLIANT], 3),
    ],
)
def test_exit_code(statuses: list[Status], code: int) -> None:
    results = [replace(_result(), status=s) for s in statuses]
    assert exit_code(results) == code


# --- model: audit.json ------------------------------------------------------------------------------------


def _result() -> TenantResult:
    return evaluate(snapshot(), PINNED, NOW)


def _run() -> RunResult:
    tenants = (
        evaluate(snapshot(), PINNED, NOW),
        evaluate(snapshot(roles=RoleEvidence(pim_available=True), mailboxes=census(shared=4)), PINNED, NOW),
        evaluate(snapshot(candidates=(), roles=None, exchange=None), PINNED, NOW),
        evaluate(snapshot(error=TenantError(ErrorCode.AUTH_FAILED, "no")), PINNED, NOW),
        apply_remediation(
            evaluate(
                snapshot(roles=RoleEvidence(pim_available=True), mailboxes=census(shared=1)), PINNED, NOW
            ),
            Remediation(RemediationAction.CREATED, "created", "ra1", "req-1", NOW),
        ),
    )
    return RunResult("run-1", NOW, NOW + timedelta(minutes=3), "0.1.0", RunMode.REMEDIATE, tenants, "GBP")


def test_audit_json_shape() -> None:
    data = _run().to_dict()
    json.dumps(data)  # serialisable as is
    assert set(data) == {"schema_version", "run", "summary", "tenants"}
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert set(data["run"]) == {"id", "started_at", "finished_at", "tool_version", "mode", "vendor_search"}
    tenant = data["tenants"][0]
    assert set(tenant) == {
        "name",
        "tenant_id",
        "tags",
        "status",
        "service_principal",
        "findings",
        "mailboxes",
        "shared_mailboxes",
        "billing",
        "remediation",
        "error",
    }
    assert tenant["status"] == "compliant" and tenant["tags"] == ["gold"]
    assert tenant["service_principal"]["identified_by"] == "app_id"
    assert set(tenant["service_principal"]) >= {
        "id",
        "app_id",
        "display_name",
        "account_enabled",
        "app_owner_organization_id",
    }
    assert tenant["mailboxes"] == {
        "shared": 3,
        "user": 10,
        "room": 1,
        "equipment": 1,
        "other": 0,
        "no_mailbox": 2,
        "on_premises": 0,
        "unclassified": 0,
    }
    assert set(tenant["shared_mailboxes"][0]) == {
        "id",
        "display_name",
        "user_principal_name",
        "mail",
        "account_enabled",
        "licensed",
    }
    assert {"billed_shared_mailboxes", "price_per_mailbox", "monthly_cost"} <= set(tenant["billing"])
    assert tenant["remediation"]["action"] == "none"
    assert tenant["error"] is None
    errored = data["tenants"][3]
    assert errored["error"]["code"] == "AUTH_FAILED" and errored["error"]["hint"]
    assert errored["billing"]["monthly_cost"] is None and errored["mailboxes"] is None
    assert data["tenants"][1]["findings"][0] == {
        "code": "ROLE_MISSING",
        "severity": "high",
        "message": data["tenants"][1]["findings"][0]["message"],
    }


def test_summary() -> None:
    summary = _run().to_dict()["summary"]
    assert summary["tenants"] == 5
    assert summary["by_status"] == {
        "compliant": 1,
        "non_compliant": 1,
        "remediated": 1,
        "not_connected": 1,
        "ambiguous": 0,
        "error": 1,
    }
    assert summary["shared_mailboxes"] == 3 + 4 + 3 + 1  # the error tenant has no census
    assert summary["billed_shared_mailboxes"] == 4 + 1
    assert summary["estimated_monthly_cost"] == 12.5
    assert summary["currency"] == "GBP"
    assert summary["tenants_with_unknown_cost"] == 1


def test_audit_json_round_trip() -> None:
    run = _run()
    again = RunResult.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again.to_dict() == run.to_dict()
    assert again.tenants[4].remediation.at == NOW


def test_audit_json_rejects_other_schema_versions() -> None:
    data = _run().to_dict()
    data["schema_version"] = 2
    with pytest.raises(ValueError, match="schema_version"):
        RunResult.from_dict(data)


def test_error_result_helper() -> None:
    result = error_result(
        "X", TENANT_ID, TenantError(ErrorCode.TIMEOUT, "tenant timed out"), price_per_mailbox=1.0
    )
    assert result.status is Status.ERROR and result.billing.monthly_cost is None
    assert result.error is not None and result.error.hint


@pytest.mark.parametrize(
    ("raw", "purpose"),
    [
        ("shared", "shared"),
        ("Shared", "shared"),
        ({"value": "room"}, "room"),
        ("linked", "user"),
        ("equipment", "equipment"),
        ("others", "other"),
        ("unknownFutureValue", "other"),
        (None, "other"),
    ],
)
def test_mailbox_purpose_from_graph(raw: object, purpose: str) -> None:
    assert MailboxPurpose.from_user_purpose(raw) is MailboxPurpose(purpose)


def test_census_counts_cannot_disagree() -> None:
    assert census(shared=2).shared == 2
    assert census(shared=2).total_users == 2 + 10 + 1 + 1 + 0 + 2
    with pytest.raises(ValueError, match="negative"):
        MailboxCensus(user=-1)


def test_severity_rank() -> None:
    assert sorted([Severity.INFO, Severity.CRITICAL, Severity.MEDIUM], key=lambda s: s.rank) == [
        Severity.CRITICAL,
        Severity.MEDIUM,
        Severity.INFO,
    ]


# --- errors never leak secrets ----------------------------------------------------------------------------

SECRETY = [
    "AADSTS7000215: Invalid client secret provided. client_secret=abc~DEF123.ghi",
    "Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.eyJhdWQiOiJodHRwczovL2dyYXBo.c2lnbmF0dXJl",
    'request body {"password": "hunter2hunter2"}',
    "client_assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.sig&grant_type=client_credentials",
]


@pytest.mark.parametrize("text", SECRETY)
def test_tenant_error_redacts_secrets(text: str) -> None:
    error = TenantError(ErrorCode.AUTH_FAILED, text, hint=text)
    for secret in ("abc~DEF123.ghi", "eyJ0eXAiOiJKV1QiLCJhbGciOi", "hunter2hunter2", "eyJhbGciOiJSUzI1NiJ9"):
        assert secret not in error.message
        assert secret not in error.hint
    assert (
        redact("AADSTS7000215: Invalid client secret provided.")
        == "AADSTS7000215: Invalid client secret provided."
    )


# --- the exact texts an admin reads ---------------------------------------------------------------------

CONTOSO_LABEL = f"Contoso ({TENANT_ID})"
SP_LABEL = f"'USS AzureAD' (object id {SP_ID}, appId {VENDOR_APP_ID})"
OTHER_GROUP = "99999999-0000-0000-0000-000000000009"
PIM_ERROR = TenantError(
    ErrorCode.PERMISSION_DENIED,
    "Graph answered 403 for roleEligibilityScheduleInstances X.",
    "Grant RoleEligibilitySchedule.Read.Directory to app X.",
)
NOT_COLLECTED = "This is a bug in the auditor; please report it with the log."


def _first_finding(result: TenantResult, code: FindingCode) -> str:
    return next(f.message for f in result.findings if f.code is code)


def _error_text(result: TenantResult) -> str:
    """The error as the reports show it: code, message and hint."""
    assert result.status is Status.ERROR and result.error is not None
    return f"{result.error.code.value}: {result.error.message} ({result.error.hint})"


TEXT_CASES: list[tuple[str, Any, str]] = [
    (
        "ambiguous: every contender listed, separated by semicolons",
        lambda: (
            identify_service_principal(
                [VENDOR, THIRD_PARTY], VendorSettings(), TENANT_ID, tenant_name="Contoso"
            )
            .findings[0]
            .message
        ),
        f"2 service principals named 'USS AzureAD' match the config in tenant {CONTOSO_LABEL} and the config "
        f"does not say which is the vendor's (object id {SP_ID}, appId {VENDOR_APP_ID}, published by "
        f"{PUBLISHER}; object id third, appId third-app, published by {OTHER_ORG}). Nothing was judged or "
        f'remediated. Fix: set vendor.app_id = "<the vendor app\'s appId>" in the config (ask the vendor, or '
        f"check which one the USS portal shows), then re-run.",
    ),
    (
        "not found, the tenant named by its id when no name is given",
        lambda: (
            identify_service_principal([], VendorSettings(app_id=VENDOR_APP_ID), TENANT_ID)
            .findings[0]
            .message
        ),
        f"No service principal of the vendor app ('USS AzureAD', appId {VENDOR_APP_ID}) exists in tenant "
        f"{TENANT_ID}: the USS connection was never made or was removed, so USS does not sync or bill this "
        f"tenant. Searched: servicePrincipals where appId eq '{VENDOR_APP_ID}' or displayName eq 'USS AzureAD'. "
        f"If this tenant should be protected by USS, connect it from the USS portal, then re-run.",
    ),
    (
        "held through two groups, named or not, separated by commas",
        lambda: _first_finding(
            evaluate(
                snapshot(
                    roles=RoleEvidence(
                        active=(
                            sr(principal=GROUP_ID, via_group=GROUP_ID),
                            sr(principal=OTHER_GROUP, via_group=OTHER_GROUP),
                        ),
                        groups=(GroupRecord(GROUP_ID, "USS role holders", True),),
                        pim_available=True,
                    )
                ),
                PINNED,
                NOW,
            ),
            FindingCode.ROLE_VIA_GROUP,
        ),
        f"{SP_LABEL} in tenant {CONTOSO_LABEL} holds Security Reader ({SECURITY_READER_ROLE_ID}) only through "
        f"group membership (group {OTHER_GROUP}, 'USS role holders' ({GROUP_ID})). This counts as compliant, "
        f"but it is not documented that a service principal's directory permissions flow through a group, and "
        f"it breaks if the membership changes. Recommended: also assign the role to the service principal "
        f"directly. Fix: Entra admin center > Roles and administrators > Security Reader > Add assignments: "
        f"select 'USS AzureAD', assignment type Active, Permanently assigned, scope Directory (or run `auditor "
        f"audit --remediate`).",
    ),
    (
        "PIM reads failed: the error and its hint quoted whole, one full stop each",
        lambda: _first_finding(
            evaluate(
                snapshot(roles=RoleEvidence(active=(sr(),), pim_available=None, pim_error=PIM_ERROR)),
                PINNED,
                NOW,
            ),
            FindingCode.PIM_UNAVAILABLE,
        ),
        f"Privileged Identity Management data is not available in tenant {CONTOSO_LABEL}: the PIM reads failed "
        f"(PERMISSION_DENIED: Graph answered 403 for roleEligibilityScheduleInstances X). Grant "
        f"RoleEligibilitySchedule.Read.Directory to app X. Eligible-only and time-bound Security Reader "
        f"assignments could not be checked; the verdict relies on active role assignments, which were read.",
    ),
    (
        "the service principal lookup missing from the snapshot",
        lambda: _error_text(evaluate(replace(snapshot(), service_principals=None), PINNED, NOW)),
        f"INTERNAL_ERROR: the service principal lookup was not collected ({NOT_COLLECTED})",
    ),
    (
        "the role assignments missing from the snapshot",
        lambda: _error_text(evaluate(snapshot(roles=None), PINNED, NOW)),
        f"INTERNAL_ERROR: the vendor service principal's role assignments were not collected ({NOT_COLLECTED})",
    ),
    (
        "the Exchange app roles missing from the snapshot",
        lambda: _error_text(evaluate(snapshot(exchange=None), PINNED, NOW)),
        f"INTERNAL_ERROR: the vendor service principal's Exchange app roles were not collected "
        f"({NOT_COLLECTED})",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_the_exact_texts_an_admin_reads(text: Any, expected: str) -> None:
    assert text() == expected


def test_the_match_invariant_names_itself() -> None:
    with pytest.raises(ValueError, match=r"^identified must be set exactly when the outcome is IDENTIFIED$"):
        ServicePrincipalMatch(
            MatchOutcome.NOT_FOUND, identified=IdentifiedServicePrincipal(VENDOR, IdentificationMethod.APP_ID)
        )
