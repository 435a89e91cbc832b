"""Boundaries of the evaluator that a wrong verdict would slip through: the 30-day expiry warning, lapsed
eligibility and assignments, group-held roles, billing arithmetic and the exit code (issue 14)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from auditor.config import VendorSettings, parse_config
from auditor.constants import ROLE_EXPIRY_WARNING_DAYS
from auditor.errors import ErrorCode, TenantError
from auditor.evaluate import (
    EvaluationSettings,
    admin_consent_url,
    apply_remediation,
    billing_for,
    evaluate,
    exit_code,
)
from auditor.model import (
    ExchangeAppRoles,
    Failed,
    FindingCode,
    GroupRecord,
    MailboxCensus,
    Remediation,
    RemediationAction,
    RoleEvidence,
    Severity,
    SharedMailbox,
    Status,
    TenantResult,
)
from tests.unit.test_evaluate import (
    BY_NAME,
    BY_PUBLISHER,
    GROUP_ID,
    NOW,
    OTHER_ORG,
    PINNED,
    PUBLISHER,
    SP_ID,
    TENANT_ID,
    VENDOR_APP_ID,
    census,
    make_sp,
    snapshot,
    sr,
)

C = FindingCode


def _expiring_severity(days: timedelta) -> Severity:
    result = evaluate(
        snapshot(roles=RoleEvidence(active=(sr(end=NOW + days),), pim_available=True)), PINNED, NOW
    )
    assert result.status is Status.COMPLIANT, "a time-bound assignment still counts while it lasts"
    [finding] = [f for f in result.findings if f.code is C.ROLE_EXPIRING]
    return finding.severity


@pytest.mark.parametrize(
    ("ends_in", "severity"),
    [
        (timedelta(days=1), Severity.HIGH),
        (timedelta(days=29), Severity.HIGH),
        (timedelta(days=30), Severity.HIGH),  # the boundary itself is "within 30 days"
        (timedelta(days=30, seconds=1), Severity.MEDIUM),
        (timedelta(days=31), Severity.MEDIUM),
        (timedelta(days=59), Severity.MEDIUM),  # a warning window of 60 days would call this HIGH
        (timedelta(days=61), Severity.MEDIUM),
        (timedelta(days=365), Severity.MEDIUM),
    ],
)
def test_expiry_warning_is_high_within_30_days_only(ends_in: timedelta, severity: Severity) -> None:
    assert ROLE_EXPIRY_WARNING_DAYS == 30  # the README's promise; the table above is written for it
    assert _expiring_severity(ends_in) is severity


def test_expiring_message_counts_whole_days_left() -> None:
    result = evaluate(
        snapshot(roles=RoleEvidence(active=(sr(end=NOW + timedelta(days=31, hours=5)),), pim_available=True)),
        PINNED,
        NOW,
    )
    [finding] = [f for f in result.findings if f.code is C.ROLE_EXPIRING]
    assert "(31 days)" in finding.message
    assert (NOW + timedelta(days=31, hours=5)).strftime("%Y-%m-%d %H:%M") in finding.message


def test_the_latest_end_of_several_time_bound_assignments_counts() -> None:
    roles = RoleEvidence(
        active=(sr(end=NOW + timedelta(days=5)), sr(end=NOW + timedelta(days=40))), pim_available=True
    )
    [finding] = [
        f for f in evaluate(snapshot(roles=roles), PINNED, NOW).findings if f.code is C.ROLE_EXPIRING
    ]
    assert finding.severity is Severity.MEDIUM and "(40 days)" in finding.message


def test_a_permanent_assignment_beside_a_time_bound_one_raises_no_expiry() -> None:
    roles = RoleEvidence(
        active=(sr(end=NOW + timedelta(days=5)), sr(scope="/", end=None)), pim_available=True
    )
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    assert result.status is Status.COMPLIANT and result.finding_codes() == set()


@pytest.mark.parametrize(
    "ended",
    [timedelta(seconds=1), timedelta(days=1), timedelta(days=400)],
)
def test_an_expired_eligibility_is_not_eligibility(ended: timedelta) -> None:
    """A PIM eligibility that has ended is no eligibility at all: the role is simply missing."""
    roles = RoleEvidence(eligible=(sr(end=NOW - ended),), pim_available=True)
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    assert result.status is Status.NON_COMPLIANT
    assert result.finding_codes() == {C.ROLE_MISSING}


def test_a_current_time_bound_eligibility_is_eligible_only() -> None:
    roles = RoleEvidence(eligible=(sr(end=NOW + timedelta(seconds=1)),), pim_available=True)
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    assert result.status is Status.NON_COMPLIANT
    assert result.finding_codes() == {C.ROLE_ELIGIBLE_ONLY}


def test_an_assignment_ending_exactly_now_has_lapsed() -> None:
    roles = RoleEvidence(active=(sr(end=NOW),), pim_available=True)
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    assert result.finding_codes() == {C.ROLE_MISSING}
    [finding] = result.findings
    assert f"ended on {NOW:%Y-%m-%d}" in finding.message


def test_an_eligibility_ending_exactly_now_has_lapsed() -> None:
    roles = RoleEvidence(eligible=(sr(end=NOW),), pim_available=True)
    assert evaluate(snapshot(roles=roles), PINNED, NOW).finding_codes() == {C.ROLE_MISSING}


def test_naive_end_times_are_read_as_utc() -> None:
    naive = (NOW + timedelta(days=10)).replace(tzinfo=None)
    roles = RoleEvidence(active=(sr(end=naive),), pim_available=True)
    result = evaluate(snapshot(roles=roles), PINNED, NOW.replace(tzinfo=None))
    assert result.status is Status.COMPLIANT
    assert {f.code: f.severity for f in result.findings} == {C.ROLE_EXPIRING: Severity.HIGH}


def test_someone_elses_security_reader_does_not_count() -> None:
    roles = RoleEvidence(active=(sr(principal="someone-else"),), pim_available=True)
    assert evaluate(snapshot(roles=roles), PINNED, NOW).finding_codes() == {C.ROLE_MISSING}


def test_another_role_at_root_does_not_count() -> None:
    roles = RoleEvidence(active=(sr(role="f2ef992c-3afb-46b9-b7cf-a126ee74c451"),), pim_available=True)
    assert evaluate(snapshot(roles=roles), PINNED, NOW).finding_codes() == {C.ROLE_MISSING}


def test_a_role_held_directly_and_through_a_group_is_not_flagged_as_via_group() -> None:
    roles = RoleEvidence(
        active=(sr(), sr(principal=GROUP_ID, via_group=GROUP_ID)),
        groups=(GroupRecord(GROUP_ID, "USS readers", True),),
        pim_available=True,
    )
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    assert result.status is Status.COMPLIANT and result.finding_codes() == set()


def test_a_role_held_only_through_a_group_names_the_group() -> None:
    roles = RoleEvidence(
        active=(sr(principal=GROUP_ID, via_group=GROUP_ID),),
        groups=(GroupRecord(GROUP_ID, "USS readers", True),),
        pim_available=True,
    )
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    assert result.status is Status.COMPLIANT
    [finding] = result.findings
    assert finding.code is C.ROLE_VIA_GROUP and finding.severity is Severity.MEDIUM
    assert f"'USS readers' ({GROUP_ID})" in finding.message


# --- billing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "shared", "price", "count", "cost"),
    [
        (Status.NON_COMPLIANT, 3, 2.5, 3, 7.5),
        (Status.NON_COMPLIANT, 7, 0.1, 7, 0.7),  # decimal arithmetic: 0.1 * 7 is 0.7, not 0.7000000000000001
        (Status.NON_COMPLIANT, 0, 2.5, 0, 0.0),
        (Status.REMEDIATED, 3, 2.5, 3, 7.5),  # billed until the vendor's next sync
        (Status.COMPLIANT, 3, 2.5, 0, 0.0),
        (Status.NOT_CONNECTED, 3, 2.5, 0, 0.0),
        (Status.AMBIGUOUS, 3, 2.5, None, None),  # unknown, never zero
        (Status.ERROR, 3, 2.5, None, None),
    ],
)
def test_billing(status: Status, shared: int, price: float, count: int | None, cost: float | None) -> None:
    billing = billing_for(status, census(shared=shared), price, "EUR")
    assert (billing.billed_shared_mailboxes, billing.monthly_cost) == (count, cost)
    assert billing.price_per_mailbox == price and billing.currency == "EUR"
    if cost is not None:
        assert Decimal(str(billing.monthly_cost)) == Decimal(str(cost))


def test_billing_of_a_gap_without_a_census_is_unknown_not_zero() -> None:
    billing = billing_for(Status.NON_COMPLIANT, None, 2.5)
    assert billing.billed_shared_mailboxes is None and billing.monthly_cost is None
    assert billing.currency == "GBP"


def test_non_compliant_tenant_is_billed_through_evaluate() -> None:
    roles = RoleEvidence(pim_available=True)
    result = evaluate(snapshot(roles=roles, mailboxes=census(shared=4)), PINNED, NOW)
    assert result.status is Status.NON_COMPLIANT
    assert (result.billing.billed_shared_mailboxes, result.billing.monthly_cost) == (4, 10.0)
    assert result.tags == ("gold",)


# --- remediation outcome and exit code ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status"),
    [
        (RemediationAction.CREATED, Status.REMEDIATED),
        (RemediationAction.ALREADY_PRESENT, Status.REMEDIATED),
        (RemediationAction.FAILED, Status.NON_COMPLIANT),
        (RemediationAction.PLANNED, Status.NON_COMPLIANT),
        (RemediationAction.REFUSED, Status.NON_COMPLIANT),
    ],
)
def test_only_a_confirmed_assignment_remediates(action: RemediationAction, status: Status) -> None:
    result = evaluate(snapshot(roles=RoleEvidence(pim_available=True)), PINNED, NOW)
    after = apply_remediation(result, Remediation(action, "x"))
    assert after.status is status
    assert after.remediation is not None and after.remediation.action is action
    assert after.billing == result.billing


def test_a_fixed_role_does_not_remediate_a_disabled_service_principal() -> None:
    result = evaluate(
        snapshot(candidates=(make_sp(enabled=False),), roles=RoleEvidence(pim_available=True)), PINNED, NOW
    )
    assert result.finding_codes() >= {C.SP_DISABLED, C.ROLE_MISSING}
    after = apply_remediation(result, Remediation(RemediationAction.CREATED, "x"))
    assert after.status is Status.NON_COMPLIANT


def test_a_compliant_tenant_is_not_turned_into_remediated() -> None:
    result = evaluate(snapshot(), PINNED, NOW)
    after = apply_remediation(result, Remediation(RemediationAction.CREATED, "x"))
    assert after.status is Status.COMPLIANT


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ((), 0),
        ((Status.COMPLIANT,), 0),
        ((Status.COMPLIANT, Status.NOT_CONNECTED, Status.REMEDIATED), 0),
        ((Status.COMPLIANT, Status.NON_COMPLIANT), 1),
        ((Status.AMBIGUOUS,), 1),
        ((Status.NON_COMPLIANT, Status.ERROR), 3),
        ((Status.ERROR, Status.COMPLIANT), 3),
    ],
)
def test_exit_code(statuses: tuple[Status, ...], code: int) -> None:
    base = evaluate(snapshot(), PINNED, NOW)
    results = [replace(base, status=status) for status in statuses]
    assert exit_code(results) == code


def test_census_counts_feed_the_result() -> None:
    mailboxes = MailboxCensus(shared_mailboxes=(), user=5, room=1, equipment=0, other=0, no_mailbox=2)
    result = evaluate(snapshot(mailboxes=mailboxes), PINNED, NOW)
    assert result.mailboxes == mailboxes


# --- what the findings say: every message names the tenant and the object, and carries its fix ---------


TENANT = f"Contoso ({TENANT_ID})"


def messages(result: TenantResult) -> dict[FindingCode, str]:
    found = {f.code: f.message for f in result.findings}
    for text in found.values():
        assert "None" not in text and "XX" not in text, text
    return found


def test_disabled_and_missing_role_messages_name_tenant_object_and_fix() -> None:
    result = evaluate(
        snapshot(candidates=(make_sp(enabled=False),), roles=RoleEvidence(pim_available=True)), PINNED, NOW
    )
    said = messages(result)
    for text in said.values():
        assert TENANT in text and SP_ID in text and VENDOR_APP_ID in text
    assert "accountEnabled = false" in said[C.SP_DISABLED]
    assert "Enterprise applications > USS AzureAD > Properties" in said[C.SP_DISABLED]
    assert "auditor audit --remediate" in said[C.ROLE_MISSING]
    assert "PIM data could not be read" not in said[C.ROLE_MISSING]


def test_missing_role_message_says_when_pim_could_not_be_checked() -> None:
    said = messages(evaluate(snapshot(roles=RoleEvidence(pim_available=None)), PINNED, NOW))
    assert (
        "(PIM data could not be read, so eligible assignments could not be checked.)" in said[C.ROLE_MISSING]
    )


def test_pim_unavailable_says_why() -> None:
    no_p2 = messages(evaluate(snapshot(roles=RoleEvidence(active=(sr(),), pim_available=False)), PINNED, NOW))
    assert "no Microsoft Entra ID P2 / ID Governance licence." in no_p2[C.PIM_UNAVAILABLE]
    assert TENANT in no_p2[C.PIM_UNAVAILABLE]
    failed = TenantError(
        ErrorCode.PERMISSION_DENIED, "403 on schedule instances.", "Grant RoleManagement.Read.Directory. "
    )
    said = messages(evaluate(snapshot(roles=RoleEvidence(active=(sr(),), pim_error=failed)), PINNED, NOW))
    assert (
        "the PIM reads failed (PERMISSION_DENIED: 403 on schedule instances). "
        "Grant RoleManagement.Read.Directory. Eligible-only"
    ) in said[C.PIM_UNAVAILABLE]


def test_expiry_within_a_day_counts_zero_days() -> None:
    roles = RoleEvidence(active=(sr(end=NOW + timedelta(hours=5)),), pim_available=True)
    said = messages(evaluate(snapshot(roles=roles), PINNED, NOW))
    assert "(0 days)" in said[C.ROLE_EXPIRING]


def test_end_times_in_another_zone_are_compared_as_instants() -> None:
    plus_two = timezone(timedelta(hours=2))
    # exactly 30 days away, written in UTC+2: still within the warning window
    end = (NOW + timedelta(days=30)).astimezone(plus_two)
    roles = RoleEvidence(active=(sr(end=end),), pim_available=True)
    result = evaluate(snapshot(roles=roles), PINNED, NOW)
    assert {f.code: f.severity for f in result.findings} == {C.ROLE_EXPIRING: Severity.HIGH}


def test_a_naive_end_time_against_an_aware_clock() -> None:
    naive = (NOW + timedelta(days=3)).replace(tzinfo=None)
    result = evaluate(snapshot(roles=RoleEvidence(active=(sr(end=naive),), pim_available=True)), PINNED, NOW)
    assert result.finding_codes() == {C.ROLE_EXPIRING}


def test_scoped_message_lists_the_scopes() -> None:
    roles = RoleEvidence(active=(sr(scope="/administrativeUnits/b"), sr(scope="/administrativeUnits/a")))
    said = messages(evaluate(snapshot(roles=roles), PINNED, NOW))
    assert (
        "only at scope /administrativeUnits/a, /administrativeUnits/b, not tenant-wide" in said[C.ROLE_SCOPED]
    )


def test_via_group_message_falls_back_to_the_id_of_an_unknown_group() -> None:
    roles = RoleEvidence(active=(sr(principal=GROUP_ID, via_group=GROUP_ID),), pim_available=True)
    said = messages(evaluate(snapshot(roles=roles), PINNED, NOW))
    # a group with no name (limited-information object) is named by its id (issue 10's wording)
    assert f"only through group membership (group {GROUP_ID})." in said[C.ROLE_VIA_GROUP]


def test_lapsed_assignment_message_gives_the_end_date() -> None:
    roles = RoleEvidence(active=(sr(end=NOW - timedelta(days=3)),), pim_available=True)
    said = messages(evaluate(snapshot(roles=roles), PINNED, NOW))
    assert f"A time-bound assignment ended on {NOW - timedelta(days=3):%Y-%m-%d}." in said[C.ROLE_MISSING]


def test_exchange_message_lists_unresolved_role_ids_and_the_consent_link() -> None:
    exchange = ExchangeAppRoles(unresolved_role_ids=("1111", "2222"))
    said = messages(evaluate(snapshot(exchange=exchange), PINNED, NOW))
    text = said[C.EXCHANGE_PERMISSION_MISSING]
    assert "(app role ids that could not be resolved: 1111, 2222)" in text
    assert f"/{TENANT_ID}/adminconsent?client_id={VENDOR_APP_ID}" in text
    plain = messages(evaluate(snapshot(exchange=ExchangeAppRoles()), PINNED, NOW))
    assert "could not be resolved" not in plain[C.EXCHANGE_PERMISSION_MISSING]


def test_mailbox_messages_list_five_then_count_the_rest() -> None:
    def signin_message(count: int) -> str:
        return messages(evaluate(snapshot(mailboxes=census(shared=count, enabled=True)), PINNED, NOW))[
            C.SHARED_MAILBOX_SIGNIN_ENABLED
        ]

    assert signin_message(5).endswith(
        "shared4@contoso.example. Nobody should sign in to a shared mailbox; Microsoft recommends blocking it. "
        "Fix: Microsoft 365 admin center > Users > Active users > select the mailbox > Block sign-in."
    )
    assert "and 1 more" in signin_message(6) and "shared5@" not in signin_message(6)
    assert "and 2 more" in signin_message(7)
    assert signin_message(7).startswith(f"7 shared mailbox(es) in tenant {TENANT} allow direct sign-in")


def test_mailbox_without_a_principal_name_is_listed_by_display_name_then_id() -> None:
    mailboxes = MailboxCensus(
        shared_mailboxes=(
            SharedMailbox("mb-1", "Sales desk", "", None, True, True),
            SharedMailbox("mb-2", "", "", None, True, True),
        ),
    )
    said = messages(evaluate(snapshot(mailboxes=mailboxes), PINNED, NOW))
    assert ": Sales desk, mb-2." in said[C.SHARED_MAILBOX_SIGNIN_ENABLED]
    assert ": Sales desk, mb-2." in said[C.SHARED_MAILBOX_LICENSED]


def test_incomplete_scan_message_gives_counts_and_reason() -> None:
    said = messages(evaluate(snapshot(mailboxes=census(shared=3, unclassified=2)), PINNED, NOW))
    assert said[C.MAILBOX_SCAN_INCOMPLETE].startswith(
        f"2 of 19 users in tenant {TENANT} could not be classified after retries (throttled); the 3 shared"
    )
    bare = MailboxCensus(user=1, unclassified=1)
    said = messages(evaluate(snapshot(mailboxes=bare), PINNED, NOW))
    assert "after retries; the 0 shared" in said[C.MAILBOX_SCAN_INCOMPLETE]


# --- identification messages ---------------------------------------------------------------------------


def lookalike(
    app_id: str = "other-app", owner: str | None = OTHER_ORG, sp_type: str | None = "Application"
) -> Any:
    return make_sp(id=f"sp-{app_id}-{owner}-{sp_type}", app_id=app_id, owner=owner, sp_type=sp_type)


@pytest.mark.parametrize(
    ("settings", "candidate", "reason", "pin_hint"),
    [
        (
            BY_NAME,
            lookalike(owner=TENANT_ID),
            "it is registered inside this tenant itself (appOwnerOrganizationId is this tenant)",
            False,
        ),
        (
            BY_NAME,
            lookalike(sp_type="ManagedIdentity"),
            "it is a ManagedIdentity service principal, not an application",
            False,
        ),
        (BY_PUBLISHER, lookalike(), f"it is not published by the vendor tenant {PUBLISHER}", True),
        (PINNED, lookalike(), f"its appId is not the pinned vendor.app_id {VENDOR_APP_ID}", False),
    ],
)
def test_lookalike_message_says_why_and_offers_a_pin_only_when_it_could_be_the_vendor(
    settings: EvaluationSettings, candidate: Any, reason: str, pin_hint: bool
) -> None:
    result = evaluate(snapshot(candidates=(make_sp(), candidate)), settings, NOW)
    [text] = [f.message for f in result.findings if f.code is C.SP_LOOKALIKE]
    assert "None" not in text
    assert f"in tenant {TENANT} is named like the vendor app but is not it: {reason}." in text
    assert (f'set vendor.app_id = "{candidate.app_id}"' in text) is pin_hint


def test_name_only_message_offers_both_pins() -> None:
    said = messages(evaluate(snapshot(), BY_NAME, NOW))
    text = said[C.SP_NAME_ONLY]
    assert f"The vendor app in tenant {TENANT} was recognised by display name only" in text
    assert f"published by tenant {PUBLISHER}." in text
    assert f'set vendor.app_id = "{VENDOR_APP_ID}" (or vendor.publisher_tenant_id = "{PUBLISHER}")' in text
    unknown = messages(evaluate(snapshot(candidates=(make_sp(owner=None),)), BY_NAME, NOW))[C.SP_NAME_ONLY]
    assert "published by tenant unknown." in unknown and "publisher_tenant_id" not in unknown


def test_ambiguous_message_lists_the_contenders_first() -> None:
    candidates = (make_sp(), make_sp(id="sp2", app_id="app2", owner=None), lookalike(owner=TENANT_ID))
    result = evaluate(snapshot(candidates=candidates, roles=None, exchange=None), BY_NAME, NOW)
    assert [f.code for f in result.findings] == [C.SP_AMBIGUOUS, C.SP_LOOKALIKE]
    text = result.findings[0].message
    assert f"2 service principals named 'USS AzureAD' match the config in tenant {TENANT}" in text
    assert "object id sp2, appId app2, published by unknown" in text
    pinned = (make_sp(), make_sp(id="sp2"))
    text = evaluate(snapshot(candidates=pinned, roles=None, exchange=None), PINNED, NOW).findings[0].message
    assert "named 'USS AzureAD' with the pinned appId in tenant" in text


@pytest.mark.parametrize(
    ("settings", "wanted", "absent"),
    [
        (BY_NAME, "('USS AzureAD')", "published by"),
        (BY_PUBLISHER, f"('USS AzureAD', published by {PUBLISHER})", "appId"),
        (PINNED, f"('USS AzureAD', appId {VENDOR_APP_ID})", "published by"),
    ],
)
def test_not_found_message_says_what_was_looked_for(
    settings: EvaluationSettings, wanted: str, absent: str
) -> None:
    said = messages(evaluate(snapshot(candidates=()), settings, NOW))
    text = said[C.SP_NOT_FOUND]
    assert f"No service principal of the vendor app {wanted} exists in tenant {TENANT}" in text
    assert absent not in text.split("exists")[0]
    assert "same-named" not in text


def test_not_found_message_counts_the_lookalikes() -> None:
    said = messages(evaluate(snapshot(candidates=(lookalike(owner=TENANT_ID),)), BY_NAME, NOW))
    assert "1 same-named service principal(s) exist but are not the vendor app" in said[C.SP_NOT_FOUND]


def test_a_tenant_without_a_name_is_labelled_by_its_id() -> None:
    result = evaluate(replace(snapshot(candidates=()), tenant_name=""), PINNED, NOW)
    assert f"exists in tenant {TENANT_ID}:" in result.findings[0].message


# --- sections that were not collected or failed -----------------------------------------------------------


def test_a_missing_service_principal_section_is_an_internal_error() -> None:
    result = evaluate(replace(snapshot(), service_principals=None), PINNED, NOW)
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.INTERNAL_ERROR
    assert "service principal lookup was not collected" in result.error.message


def test_missing_exchange_section_is_an_internal_error() -> None:
    result = evaluate(snapshot(exchange=None), PINNED, NOW)
    assert result.status is Status.ERROR
    assert result.error is not None and "Exchange app roles were not collected" in result.error.message


def test_an_error_keeps_the_census_and_the_findings_that_were_established() -> None:
    mailboxes = census(shared=2, enabled=True)
    failed = Failed(TenantError(ErrorCode.PERMISSION_DENIED, "403", "grant it"))
    result = evaluate(snapshot(roles=failed, mailboxes=mailboxes), PINNED, NOW)
    assert result.status is Status.ERROR and result.error is failed.error
    assert result.mailboxes == mailboxes
    assert C.SHARED_MAILBOX_SIGNIN_ENABLED in result.finding_codes()
    assert result.service_principal is not None


def test_admin_consent_url_escapes_and_joins() -> None:
    url = admin_consent_url("https://login.example/", "a/b c", "d/e")
    assert url == "https://login.example/a%2Fb%20c/adminconsent?client_id=d%2Fe"


def test_settings_for_a_tenant_come_from_the_config(tmp_path: Path) -> None:
    config = parse_config(
        {
            "vendor": {"app_id": VENDOR_APP_ID},
            "billing": {"price_per_mailbox": 2.5, "currency": "EUR"},
            "auth": {
                "client_id": "11111111-2222-3333-4444-555555555555",
                "client_secret_env": "X",
                "cloud": "usgov",
            },
            "tenants": [
                {"name": "A", "tenant_id": TENANT_ID, "tags": ["gold"], "price_per_mailbox": 4.0},
            ],
        },
        path=tmp_path / "audit.toml",
    )
    settings = EvaluationSettings.for_tenant(config, config.tenants[0])
    assert settings.vendor == config.vendor and settings.vendor.app_id == VENDOR_APP_ID
    assert (settings.price_per_mailbox, settings.currency, settings.tags) == (4.0, "EUR", ("gold",))
    assert settings.authority == config.tenants[0].auth.authority != EvaluationSettings().authority


@pytest.mark.parametrize(
    ("snap", "code", "severity"),
    [
        (snapshot(exchange=ExchangeAppRoles()), C.EXCHANGE_PERMISSION_MISSING, Severity.HIGH),
        (snapshot(mailboxes=census(unclassified=1)), C.MAILBOX_SCAN_INCOMPLETE, Severity.MEDIUM),
        (snapshot(mailboxes=census(enabled=True)), C.SHARED_MAILBOX_SIGNIN_ENABLED, Severity.MEDIUM),
        (snapshot(mailboxes=census(licensed=True)), C.SHARED_MAILBOX_LICENSED, Severity.LOW),
        (
            snapshot(roles=RoleEvidence(eligible=(sr(),), pim_available=True)),
            C.ROLE_ELIGIBLE_ONLY,
            Severity.HIGH,
        ),
        (snapshot(roles=RoleEvidence(pim_available=True)), C.ROLE_MISSING, Severity.HIGH),
        (snapshot(roles=RoleEvidence(active=(sr(scope="/x"),))), C.ROLE_SCOPED, Severity.HIGH),
        (snapshot(candidates=(make_sp(enabled=False),)), C.SP_DISABLED, Severity.CRITICAL),
        (snapshot(roles=RoleEvidence(active=(sr(),), pim_available=False)), C.PIM_UNAVAILABLE, Severity.INFO),
    ],
)
def test_each_finding_has_its_severity_and_a_message(
    snap: Any, code: FindingCode, severity: Severity
) -> None:
    [finding] = [f for f in evaluate(snap, PINNED, NOW).findings if f.code is code]
    assert finding.severity is severity
    assert TENANT in finding.message and "None" not in finding.message


def test_eligible_only_message_explains_why_it_does_not_count() -> None:
    said = messages(evaluate(snapshot(roles=RoleEvidence(eligible=(sr(),), pim_available=True)), PINNED, NOW))
    assert "is only PIM-eligible for Security Reader" in said[C.ROLE_ELIGIBLE_ONLY]
    assert "a service principal cannot activate an eligible role" in said[C.ROLE_ELIGIBLE_ONLY]


def test_not_found_without_a_display_name_names_only_the_app_id() -> None:
    settings = EvaluationSettings(vendor=VendorSettings(app_id=VENDOR_APP_ID, app_display_name=""))
    said = messages(evaluate(snapshot(candidates=()), settings, NOW))
    assert f"No service principal of the vendor app (appId {VENDOR_APP_ID}) exists" in said[C.SP_NOT_FOUND]


def test_unknown_billing_keeps_the_currency() -> None:
    billing = billing_for(Status.NON_COMPLIANT, None, 2.5, "EUR")
    assert billing.currency == "EUR" and billing.monthly_cost is None
