"""Boundaries of the evaluator that a wrong verdict would slip through: the 30-day expiry warning, lapsed
eligibility and assignments, group-held roles, billing arithmetic and the exit code (issue 14)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from auditor.constants import ROLE_EXPIRY_WARNING_DAYS
from auditor.evaluate import apply_remediation, billing_for, evaluate, exit_code
from auditor.model import (
    FindingCode,
    GroupRecord,
    MailboxCensus,
    Remediation,
    RemediationAction,
    RoleEvidence,
    Severity,
    Status,
)
from tests.unit.test_evaluate import GROUP_ID, NOW, PINNED, census, make_sp, snapshot, sr

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
