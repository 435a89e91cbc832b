"""What history adds to a run's report: changes since the previous run, gap ages, accrued cost, trend.

Everything here is plain frozen data and pure functions over it; :mod:`auditor.history.store` loads the
:class:`Observation` sequences from the database and calls :func:`tenant_insight` / builds
:class:`RunInsights`. The reports render :class:`RunInsights` (or :class:`HistoryUnavailable`, which says
why there is none).

Definitions (the report's wording should follow them):

* **Gap**: a tenant whose status is ``non_compliant`` or ``ambiguous`` (the statuses that make
  ``auditor audit`` exit 1). ``error`` means *unknown*: it is never a gap, never a fix, and it neither
  breaks nor extends a gap's streak.
* **Baseline**: the tenant's last *known* (non-error) status before this run, in any earlier complete
  run that included the tenant (runs restricted with ``--tenant``/``--tag`` count for the tenants they
  audited). Changes compare the current status with the baseline:
  :class:`Change` ``new_gap`` (baseline not a gap, or none), ``fixed`` (baseline a gap, now
  ``compliant``/``remediated``), ``changed`` (any other difference, e.g. ``non_compliant`` ->
  ``ambiguous`` or a gap -> ``not_connected``), ``unchanged``, ``first_seen`` (no baseline, no gap) and
  ``unknown`` (this run could not audit the tenant).
* **First seen** (gap age): the start time of the earliest run in the current unbroken streak of gap
  observations, walking back from this run and skipping ``error`` runs; a known non-gap status ends it.
* **Accrued cost**: the streak's cost as a step function: each gap observation's ``monthly_cost`` (or,
  when that one is unknown, the last known one before it in the streak) holds until the next gap
  observation, and the last one until the end (this run for an open gap; the run that saw the fix for a
  closed one). ``accrued = sum(monthly_cost_i * seconds_i) / (30.4375 days)`` (30.4375 = 365.25 / 12,
  an average month), rounded half-up to cents at the end. Time with no known cost yet (an
  ``ambiguous`` start) adds nothing and marks the amount a lower bound (``cost_complete = False``); so
  does a cost in another currency than the current one. On the night a gap is first seen it is 0.
* **New shared mailboxes**: ids in this run's census that were not in the tenant's previous census
  (the latest earlier run that could read it). A tenant's first census is the baseline, not "new".
* **Trend**: the last :data:`TREND_RUNS` complete runs up to and including this one, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any, Final

from auditor.model import RunMode, Status, money

__all__ = [
    "DAYS_PER_MONTH",
    "FIXED_STATUSES",
    "GAP_STATUSES",
    "TREND_RUNS",
    "Change",
    "GapAge",
    "HistoryUnavailable",
    "MailboxRef",
    "Observation",
    "RunInsights",
    "TenantInsight",
    "TrendPoint",
    "accrued_cost",
    "gap_streak",
    "tenant_insight",
]

GAP_STATUSES: Final = frozenset({Status.NON_COMPLIANT, Status.AMBIGUOUS})
FIXED_STATUSES: Final = frozenset({Status.COMPLIANT, Status.REMEDIATED})
DAYS_PER_MONTH: Final = Decimal("30.4375")  # 365.25 / 12: the average month the prices are quoted for
TREND_RUNS: Final = 30
_SECONDS_PER_MONTH: Final = DAYS_PER_MONTH * 86400


class Change(StrEnum):
    """How a tenant's status compares with its baseline (its last known status before this run)."""

    FIRST_SEEN = "first_seen"  # no earlier known status, and no gap now
    NEW_GAP = "new_gap"  # a gap now; no gap (or nothing known) before
    FIXED = "fixed"  # a gap before; compliant or remediated now
    CHANGED = "changed"  # any other status difference (e.g. non_compliant -> ambiguous)
    UNCHANGED = "unchanged"
    UNKNOWN = "unknown"  # this run could not audit the tenant: never "fixed", never "new"


@dataclass(frozen=True)
class Observation:
    """One tenant's verdict in one complete run, as history keeps it (``at``: the run's start)."""

    run_id: str
    at: datetime
    status: Status
    monthly_cost: float | None = None
    currency: str = "GBP"


@dataclass(frozen=True)
class MailboxRef:
    """A shared mailbox named in a change list (ids and display names only; no addresses)."""

    id: str
    display_name: str


@dataclass(frozen=True)
class GapAge:
    """How long a gap has been (or was) open and what it cost meanwhile (see the module docstring)."""

    first_seen: datetime  # start of the first run of the streak
    until: datetime  # this run's start (open gap) or the start of the run that saw it fixed
    runs: int  # runs that saw the gap (error runs inside the streak are not counted)
    accrued_cost: float | None  # None: no cost was known at any point of the streak
    currency: str
    cost_complete: bool = True  # False: part of the streak had no known cost, so the amount is a minimum

    @property
    def days_open(self) -> float:
        """``until - first_seen`` in days (fractional)."""
        return (self.until - self.first_seen) / timedelta(days=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "first_seen": self.first_seen.isoformat(),
            "until": self.until.isoformat(),
            "days_open": round(self.days_open, 3),
            "runs": self.runs,
            "accrued_cost": self.accrued_cost,
            "currency": self.currency,
            "cost_complete": self.cost_complete,
        }


@dataclass(frozen=True)
class TenantInsight:
    """What history says about one tenant of this run."""

    tenant_id: str
    name: str
    status: Status
    change: Change
    previous_status: Status | None = None  # the baseline: last known (non-error) status before this run
    previous_seen_at: datetime | None = None  # start of the run that saw the baseline
    new_shared_mailboxes: tuple[MailboxRef, ...] = ()
    open_gap: GapAge | None = None  # set when the tenant is a gap now
    closed_gap: GapAge | None = None  # set when this run ended a gap (fixed, or e.g. -> not_connected)
    # The status in the latest earlier run that had this tenant, `error` included (what `on_change`
    # notifications compare with); None when history has never seen the tenant.
    last_status: Status | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "tenant_id": self.tenant_id,
            "name": self.name,
            "status": self.status.value,
            "change": self.change.value,
            "previous_status": self.previous_status.value if self.previous_status else None,
            "previous_seen_at": self.previous_seen_at.isoformat() if self.previous_seen_at else None,
            "new_shared_mailboxes": [
                {"id": m.id, "display_name": m.display_name} for m in self.new_shared_mailboxes
            ],
            "open_gap": self.open_gap.to_dict() if self.open_gap else None,
            "closed_gap": self.closed_gap.to_dict() if self.closed_gap else None,
            "last_status": self.last_status.value if self.last_status else None,
        }


@dataclass(frozen=True)
class TrendPoint:
    """One complete run in the trend: its time and totals."""

    run_id: str
    started_at: datetime
    mode: RunMode | None  # None: a mode this version does not know (written by a newer one)
    tenants: int
    by_status: Mapping[Status, int]  # every status present, 0 when none
    billed_shared_mailboxes: int
    estimated_monthly_cost: float  # known costs only (see tenants_with_unknown_cost)
    currency: str
    tenants_with_unknown_cost: int = 0
    tenants_with_unknown_status: int = 0  # statuses this version does not know (counted in tenants)

    @property
    def gaps(self) -> int:
        """Tenants with a gap (non_compliant + ambiguous) in that run."""
        return sum(self.by_status.get(status, 0) for status in GAP_STATUSES)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "mode": self.mode.value if self.mode is not None else "unknown",
            "tenants": self.tenants,
            "by_status": {status.value: self.by_status.get(status, 0) for status in Status},
            "billed_shared_mailboxes": self.billed_shared_mailboxes,
            "estimated_monthly_cost": self.estimated_monthly_cost,
            "currency": self.currency,
            "tenants_with_unknown_cost": self.tenants_with_unknown_cost,
            "tenants_with_unknown_status": self.tenants_with_unknown_status,
        }


@dataclass(frozen=True)
class RunInsights:
    """History's view of one recorded run: per-tenant changes and gap ages, and the trend."""

    run_id: str
    as_of: datetime  # this run's start: gap ages and accrued costs are measured up to here
    currency: str
    tenants: tuple[TenantInsight, ...]  # in the run's tenant order
    trend: tuple[TrendPoint, ...]  # oldest first, ending with this run
    previous_run_id: str | None = None  # the latest complete run before this one (any tenants)
    previous_run_at: datetime | None = None

    @cached_property
    def _by_id(self) -> dict[str, TenantInsight]:
        # Not a field, so dataclasses.asdict() and equality see only the data above.
        return {t.tenant_id: t for t in self.tenants}

    def for_tenant(self, tenant_id: str) -> TenantInsight | None:
        """The insight for one tenant of the run, by tenant id."""
        return self._by_id.get(tenant_id)

    def _with(self, change: Change) -> tuple[TenantInsight, ...]:
        return tuple(t for t in self.tenants if t.change is change)

    @property
    def new_gaps(self) -> tuple[TenantInsight, ...]:
        """Tenants with a gap now that had none (or were unknown to history) before."""
        return self._with(Change.NEW_GAP)

    @property
    def fixed_gaps(self) -> tuple[TenantInsight, ...]:
        """Tenants whose gap is fixed (compliant or remediated now); ``closed_gap`` says for how long."""
        return self._with(Change.FIXED)

    @property
    def status_changes(self) -> tuple[TenantInsight, ...]:
        """Other status changes (neither a new gap nor a fix)."""
        return self._with(Change.CHANGED)

    @property
    def unknown(self) -> tuple[TenantInsight, ...]:
        """Tenants this run could not audit (their baseline is in ``previous_status``)."""
        return self._with(Change.UNKNOWN)

    @property
    def new_shared_mailboxes(self) -> tuple[TenantInsight, ...]:
        """Tenants with shared mailboxes that were not in their previous census."""
        return tuple(t for t in self.tenants if t.new_shared_mailboxes)

    @property
    def open_gaps(self) -> tuple[TenantInsight, ...]:
        """Tenants with a gap now, oldest gap first."""
        gaps = [t for t in self.tenants if t.open_gap is not None]
        return tuple(
            sorted(gaps, key=lambda t: (t.open_gap.first_seen if t.open_gap else self.as_of, t.name))
        )

    @property
    def accrued_cost_total(self) -> float:
        """Sum of the open gaps' accrued cost in the run's currency (known amounts only)."""
        total = sum(
            (
                Decimal(str(t.open_gap.accrued_cost))
                for t in self.tenants
                if t.open_gap is not None
                and t.open_gap.accrued_cost is not None
                and t.open_gap.currency == self.currency
            ),
            Decimal(0),
        )
        return money(total)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (e.g. for a ``history`` key in audit.json)."""
        return {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "currency": self.currency,
            "previous_run_id": self.previous_run_id,
            "previous_run_at": self.previous_run_at.isoformat() if self.previous_run_at else None,
            "accrued_cost_total": self.accrued_cost_total,
            "tenants": [t.to_dict() for t in self.tenants],
            "trend": [p.to_dict() for p in self.trend],
        }


@dataclass(frozen=True)
class HistoryUnavailable:
    """There are no insights for this run, and why (history disabled, or it could not be recorded).

    A report shows the reason instead of empty change lists, so "no history" never reads as "no changes".
    """

    reason: str


# --- pure computation -----------------------------------------------------------------------------------


def gap_streak(history: Sequence[Observation]) -> tuple[Observation, ...]:
    """The gap observations of the streak that ``history`` (chronological) ends with, oldest first.

    ``error`` observations are skipped (they neither break nor extend a streak); the first known
    non-gap status walking backwards ends it. Empty when the last known status is not a gap.
    """
    streak: list[Observation] = []
    for observation in reversed(history):
        if observation.status is Status.ERROR:
            continue
        if observation.status not in GAP_STATUSES:
            break
        streak.append(observation)
    streak.reverse()
    return tuple(streak)


def accrued_cost(streak: Sequence[Observation], until: datetime, currency: str) -> tuple[float | None, bool]:
    """``(amount, complete)`` for a gap streak up to ``until`` (module docstring: "Accrued cost").

    ``amount`` is None when no cost in ``currency`` was known anywhere in the streak.
    """
    if not streak:
        return None, True
    total = Decimal(0)
    complete = True
    known = False
    rate: Decimal | None = None
    for index, observation in enumerate(streak):
        if observation.monthly_cost is not None and observation.currency == currency:
            rate = Decimal(str(observation.monthly_cost))
            known = True
        elif observation.monthly_cost is not None:
            complete = False  # a cost in another currency: not added, so the amount is a minimum
        end = streak[index + 1].at if index + 1 < len(streak) else until
        seconds = Decimal(str(max(0.0, (end - observation.at).total_seconds())))
        if rate is None:
            if seconds > 0:
                complete = False
            continue
        total += rate * seconds / _SECONDS_PER_MONTH
    if not known:
        return None, False
    return money(total), complete


def _gap_age(streak: Sequence[Observation], until: datetime, currency: str) -> GapAge | None:
    if not streak:
        return None
    amount, complete = accrued_cost(streak, until, currency)
    return GapAge(
        first_seen=streak[0].at,
        until=until,
        runs=len(streak),
        accrued_cost=amount,
        currency=currency,
        cost_complete=complete,
    )


def tenant_insight(
    *,
    tenant_id: str,
    name: str,
    current: Observation,
    earlier: Sequence[Observation],
    shared_mailboxes: Iterable[MailboxRef] | None = None,
    previous_mailbox_ids: Iterable[str] | None = None,
) -> TenantInsight:
    """The insight for one tenant from its current observation and its ``earlier`` ones (chronological).

    ``shared_mailboxes``: this run's census (None when it could not be read); ``previous_mailbox_ids``:
    the ids of the tenant's previous census (None when history has none, which makes this run the
    baseline and reports no "new" mailboxes).
    """
    baseline = next((o for o in reversed(earlier) if o.status is not Status.ERROR), None)
    status = current.status
    before = baseline.status if baseline else None

    if status is Status.ERROR:
        change = Change.UNKNOWN
    elif status in GAP_STATUSES:
        if before is None or before not in GAP_STATUSES:
            change = Change.NEW_GAP
        else:
            change = Change.CHANGED if before is not status else Change.UNCHANGED
    elif before is None:
        change = Change.FIRST_SEEN
    elif before in GAP_STATUSES and status in FIXED_STATUSES:
        change = Change.FIXED
    else:
        change = Change.CHANGED if before is not status else Change.UNCHANGED

    open_gap = closed_gap = None
    if status in GAP_STATUSES:
        open_gap = _gap_age(gap_streak([*earlier, current]), current.at, current.currency)
    elif status is not Status.ERROR and before in GAP_STATUSES:
        # The streak that ended with this run, counted up to this run (when exactly it closed in between
        # is unknown, and a fixed role is billed until the vendor's next full sync anyway).
        closed_gap = _gap_age(gap_streak(earlier), current.at, current.currency)

    new_mailboxes: tuple[MailboxRef, ...] = ()
    if shared_mailboxes is not None and previous_mailbox_ids is not None:
        seen = set(previous_mailbox_ids)
        new_mailboxes = tuple(
            sorted(
                (m for m in shared_mailboxes if m.id not in seen),
                key=lambda m: (m.display_name.casefold(), m.id),
            )
        )
    return TenantInsight(
        tenant_id=tenant_id,
        name=name,
        status=status,
        change=change,
        previous_status=before,
        previous_seen_at=baseline.at if baseline else None,
        new_shared_mailboxes=new_mailboxes,
        open_gap=open_gap,
        closed_gap=closed_gap,
        last_status=earlier[-1].status if earlier else None,
    )
