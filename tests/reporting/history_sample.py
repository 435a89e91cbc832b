"""History for the sample run: two earlier nights recorded in a real history database, then the sample run.

What changed on the sample's night (so the report tests know what to expect):

* Adatum Corporation was ``non_compliant`` both earlier nights and is ``remediated`` now: a fixed gap.
* The hostile tenant was ``compliant`` with only its first two shared mailboxes; now it is
  ``non_compliant`` with the rest, whose display names are attack strings: a new gap with new mailboxes.
* Every other tenant is as it is now on both nights; Northwind's gap is six days old.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Final

from auditor.history import HistoryStore, RunInsights
from auditor.model import Billing, MailboxCensus, RunResult, Status, TenantResult
from tests.reporting.sample import HOSTILE_TENANT_ID, sample_run

ADATUM: Final = "Adatum Corporation"
NORTHWIND: Final = "Northwind Traders"
EARLIER_DAYS: Final = (6, 3)  # the two earlier nights, days before the sample run
KEPT_MAILBOXES: Final = 2  # the hostile tenant's mailboxes that existed before


def _before(tenant: TenantResult) -> TenantResult:
    if tenant.name == ADATUM:
        return replace(tenant, status=Status.NON_COMPLIANT)
    if tenant.tenant_id == HOSTILE_TENANT_ID:
        assert tenant.mailboxes is not None
        census = MailboxCensus(tenant.mailboxes.shared_mailboxes[:KEPT_MAILBOXES], user=5)
        billing = Billing(0, tenant.billing.price_per_mailbox, 0.0, tenant.billing.currency)
        return replace(tenant, status=Status.COMPLIANT, mailboxes=census, billing=billing, findings=())
    return tenant


def history_runs() -> tuple[RunResult, ...]:
    """The two earlier runs and the hostile sample run, oldest first."""
    current = sample_run(hostile=True)
    earlier = tuple(
        replace(
            current,
            run_id=f"00000000-0000-4000-8000-00000000000{i}",
            started_at=current.started_at - timedelta(days=days),
            finished_at=current.finished_at - timedelta(days=days),
            tenants=tuple(_before(t) for t in current.tenants),
        )
        for i, days in enumerate(EARLIER_DAYS)
    )
    return (*earlier, current)


def record_history(path: Path, runs: tuple[RunResult, ...] | None = None) -> RunInsights:
    """Record ``runs`` (default :func:`history_runs`) into a new history at ``path``; the last run's
    insights."""
    runs = runs or history_runs()
    with HistoryStore.open(path) as store:
        for run in runs:
            store.record(run, ())
        return store.insights(runs[-1].run_id)
