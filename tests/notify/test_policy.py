"""always / on_gaps / on_change, table-driven over small runs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from auditor.errors import ErrorCode, TenantError
from auditor.model import Billing, RunMode, RunResult, Status, TenantResult
from auditor.notify import Policy, decide
from auditor.notify.policy import status_changes

T1 = "11111111-1111-1111-1111-111111111111"
T2 = "22222222-2222-2222-2222-222222222222"
NOW = datetime(2025, 1, 31, 2, 0, tzinfo=UTC)


def tenant(tenant_id: str, status: Status) -> TenantResult:
    error = TenantError(ErrorCode.AUTH_FAILED, "sign-in failed") if status is Status.ERROR else None
    return TenantResult(f"Tenant {tenant_id[0]}", tenant_id, status, Billing(0, 2.5, 0.0), error=error)


def run_of(*statuses: Status) -> RunResult:
    tenants = tuple(tenant(tid, s) for tid, s in zip((T1, T2), statuses, strict=False))
    return RunResult("run-1", NOW, NOW, "0.1.0", RunMode.AUDIT, tenants)


OK, GAP, ERR, AMB, NC = (
    Status.COMPLIANT,
    Status.NON_COMPLIANT,
    Status.ERROR,
    Status.AMBIGUOUS,
    Status.NOT_CONNECTED,
)


@pytest.mark.parametrize(
    ("policy", "statuses", "previous", "send"),
    [
        (Policy.ALWAYS, (OK, OK), None, True),
        (Policy.ALWAYS, (OK, OK), {T1: "compliant", T2: "compliant"}, True),
        (Policy.ON_GAPS, (OK, NC), None, False),
        (Policy.ON_GAPS, (OK, GAP), None, True),
        (Policy.ON_GAPS, (OK, AMB), None, True),
        (Policy.ON_GAPS, (OK, ERR), None, True),  # could not audit: worth a message, never called a gap
        (Policy.ON_GAPS, (Status.REMEDIATED, OK), None, False),
        (Policy.ON_CHANGE, (OK, OK), None, True),  # no previous run: treated as changed
        (Policy.ON_CHANGE, (OK, OK), {T1: "compliant", T2: "compliant"}, False),
        (Policy.ON_CHANGE, (OK, GAP), {T1: "compliant", T2: "compliant"}, True),
        (Policy.ON_CHANGE, (OK, GAP), {T1: Status.COMPLIANT, T2: Status.NON_COMPLIANT}, False),  # enum values
        (Policy.ON_CHANGE, (OK, OK), {T1: "compliant"}, True),  # T2 is new
        (Policy.ON_CHANGE, (OK,), {T1: "compliant", T2: "error"}, False),  # T2 not in this run
        (Policy.ON_CHANGE, (OK, OK), {T1.upper(): "compliant", T2: "compliant"}, False),  # ids ignore case
        (Policy.ON_CHANGE, (GAP, GAP), {}, True),  # an empty history: every tenant is new
    ],
)
def test_decide(
    policy: Policy, statuses: tuple[Status, ...], previous: dict[str, str] | None, send: bool
) -> None:
    decision = decide(policy, run_of(*statuses), previous)
    assert decision.send is send
    assert decision.reason


def test_status_changes_name_before_and_after() -> None:
    changes = status_changes(run_of(OK, GAP), {T1: "error", T2: "non_compliant"})
    assert changes is not None
    assert [(c.tenant_id, c.before, c.after) for c in changes] == [(T1, "error", "compliant")]
    assert status_changes(run_of(OK), None) is None


def test_an_empty_run_sends_only_when_always() -> None:
    empty = replace(run_of(OK), tenants=())
    assert decide(Policy.ALWAYS, empty, {}).send
    assert not decide(Policy.ON_GAPS, empty, None).send
    assert not decide(Policy.ON_CHANGE, empty, {}).send
