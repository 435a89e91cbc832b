"""`--workers N` (auditor.workers): disjoint subsets audited in forked processes, merged into one run."""

from __future__ import annotations

import os
from typing import Any

import pytest

from auditor.config import TenantConfig
from auditor.errors import ErrorCode
from auditor.model import RunMode, Status, TenantResult
from auditor.workers import MIN_TENANTS_PER_WORKER, run_fleet_in_workers, share, split, workers_for
from tests.unit.test_runner import FakeAuditor, fleet, raises, result


@pytest.mark.parametrize(
    ("requested", "tenants", "remediate", "capture", "expected"),
    [
        (1, 1000, False, False, 1),  # --workers 1: in-process
        (4, 1000, False, False, 4),
        (4, 1000, True, False, 1),  # remediation confirms and applies in one process
        (4, 1000, False, True, 1),  # one capture directory, one process
        (4, 2 * MIN_TENANTS_PER_WORKER - 1, False, False, 1),  # a small fleet does not pay the start-up
        (4, 2 * MIN_TENANTS_PER_WORKER, False, False, 2),  # at most one worker per MIN_TENANTS_PER_WORKER
        (8, 3 * MIN_TENANTS_PER_WORKER, False, False, 3),
    ],
)
def test_how_many_workers(
    requested: int, tenants: int, remediate: bool, capture: bool, expected: int
) -> None:
    assert workers_for(requested, tenants, remediate=remediate, capture=capture) == expected


def test_the_default_is_the_cores_capped() -> None:
    assert 1 <= workers_for(None, 10_000, remediate=False, capture=False) <= 8


@pytest.mark.parametrize(
    ("count", "workers", "expected"),
    [
        (5, 2, [[0, 2, 4], [1, 3]]),
        (2, 4, [[0], [1]]),
        (0, 2, []),
    ],
)
def test_split_is_disjoint_and_complete(count: int, workers: int, expected: list[list[int]]) -> None:
    assert split(count, workers) == expected


@pytest.mark.parametrize(
    ("total", "parts", "expected"), [(8, 2, [4, 4]), (9, 2, [5, 4]), (1, 2, [1, 1]), (16, 3, [6, 5, 5])]
)
def test_concurrency_is_shared_not_multiplied(total: int, parts: int, expected: list[int]) -> None:
    assert share(total, parts) == expected


class Recorder:
    """Progress in the parent: every tenant reported once, with the child's result."""

    def __init__(self) -> None:
        self.total = -1
        self.done: list[TenantResult] = []
        self.finished = 0

    def start(self, total: int) -> None:
        self.total = total

    def tenant_done(self, result: TenantResult, seconds: float) -> None:
        self.done.append(result)

    def finish(self) -> None:
        self.finished += 1


def stamped_with_pid(tenant: TenantConfig) -> TenantResult:
    """A result whose billed count is the auditing process's id (to see who audited what)."""
    return result(tenant, Status.COMPLIANT, billed=os.getpid())


def audit_in(auditor: Any, tenants: int, workers: int, progress: Recorder | None = None) -> Any:
    config = fleet(*(f"T{i:02d}" for i in range(tenants)))
    return config, run_fleet_in_workers(
        config.tenants,
        auditor,
        workers,
        concurrency=4,
        tenant_timeout=5.0,
        mode=RunMode.AUDIT,
        currency="EUR",
        progress=progress,
    )


def test_workers_audit_disjoint_subsets_in_other_processes_into_one_run_in_config_order() -> None:
    names = [f"T{i:02d}" for i in range(20)]
    auditor = FakeAuditor({name: stamped_with_pid for name in names}, delay=0.01)
    progress = Recorder()
    _, run = audit_in(auditor, 20, 2, progress)
    assert [t.name for t in run.tenants] == names
    pids = {t.billing.billed_shared_mailboxes for t in run.tenants}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(t.status is Status.COMPLIANT for t in run.tenants)
    assert progress.total == 20 and progress.finished == 1
    assert sorted(r.name for r in progress.done) == names  # one progress, fed by both children
    assert run.mode is RunMode.AUDIT and run.currency == "EUR"


def test_a_failing_tenant_in_a_worker_is_an_error_result_as_in_one_process() -> None:
    auditor = FakeAuditor({"T03": raises(RuntimeError("boom"))})
    _, run = audit_in(auditor, 20, 2)
    t03 = run.tenants[3]
    assert t03.status is Status.ERROR and t03.error is not None
    assert t03.error.code is ErrorCode.INTERNAL_ERROR and "boom" in t03.error.message
    assert sum(t.status is Status.ERROR for t in run.tenants) == 1


def test_a_worker_that_dies_leaves_its_unfinished_tenants_as_errors_never_missing() -> None:
    def die(tenant: TenantConfig) -> TenantResult:
        os._exit(9)

    auditor = FakeAuditor({"T05": die})
    _, run = audit_in(auditor, 20, 2)
    assert len(run.tenants) == 20
    t05 = run.tenants[5]
    assert t05.status is Status.ERROR and t05.error is not None
    assert t05.error.code is ErrorCode.INTERNAL_ERROR and "exit code 9" in t05.error.message
    # The other worker's tenants (even positions) were all audited.
    assert all(run.tenants[i].status is Status.COMPLIANT for i in range(0, 20, 2))


def test_one_worker_runs_in_process() -> None:
    auditor = FakeAuditor({f"T{i:02d}": stamped_with_pid for i in range(3)})
    _, run = audit_in(auditor, 3, 1)
    assert {t.billing.billed_shared_mailboxes for t in run.tenants} == {os.getpid()}
