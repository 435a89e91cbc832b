"""`auditor history` as plain code: the run list and one tenant's timeline, as fixed-width text.

Plain text (no colours, no terminal tricks) so that the output reads the same in a terminal, a log file
or an e-mail from the scheduler. Tenant names are tenant data and are printed as they are.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from auditor.config import load_config
from auditor.errors import UsageError
from auditor.history.insights import GapAge, TenantInsight
from auditor.history.lock import HistoryError, RunLock
from auditor.history.settings import history_settings
from auditor.history.store import HistoryStore, RunRecord, TenantRef, TimelineEntry
from auditor.model import Status
from auditor.reporting.text import terminal_text

__all__ = ["DEFAULT_RUNS", "HistoryQuery", "runs_text", "show_history", "timeline_text"]

DEFAULT_RUNS: Final = 20
_NONE: Final = "-"
_UNKNOWN: Final = "unknown"  # a value written by a newer auditor


@dataclass(frozen=True)
class HistoryQuery:
    """What `auditor history` was asked to show."""

    config: Path
    tenant: str | None = None  # --tenant NAME_OR_ID: that tenant's timeline instead of the run list
    runs: int = DEFAULT_RUNS  # --runs N: the latest N runs


def show_history(query: HistoryQuery) -> str:
    """The text `auditor history` prints. Raises :class:`~auditor.errors.ConfigError`,
    :class:`HistoryError` or :class:`UsageError` (exit code 2) for a bad config, a disabled or unusable
    history, or an unknown tenant."""
    if query.runs < 1:
        raise UsageError("--runs must be 1 or more", hint="e.g. --runs 30")
    config = load_config(query.config)
    settings = history_settings(config)
    if not settings.enabled:
        raise HistoryError(
            f"history is turned off in {config.path} ([history] enabled = false)",
            hint="Set [history] enabled = true; runs from then on are recorded.",
        )
    if not settings.path.exists():
        return f"No runs recorded yet: {settings.path} does not exist (`auditor audit` creates it).\n"
    running = RunLock.is_held_elsewhere(settings.path)  # asked before the database is opened here
    with HistoryStore.open(settings.path, create=False) as store:
        if query.tenant is not None:
            return timeline_text(store, _one_tenant(store, query.tenant), query.runs)
        return runs_text(store, query.runs, running=running)


def runs_text(store: HistoryStore, limit: int, *, running: bool = False) -> str:
    """The latest ``limit`` runs, newest first. ``running``: a run holds the lock now, so the newest
    incomplete run is in progress rather than interrupted."""
    runs = store.runs(limit)
    complete, incomplete = store.run_count()
    head = f"History {store.path}: {_plural(complete, 'run')}"
    if incomplete:
        head += f" (and {incomplete} that never finished)"
    if not runs:
        return head + ".\n"
    head += f"; the latest {len(runs)}, newest first.\n\n"
    newest_incomplete = next((r.seq for r in runs if not r.complete), None)
    rows = [_run_row(r, running and r.seq == newest_incomplete) for r in runs]
    return head + _table(
        ("Run", "Started (UTC)", "Mode", "Tenants", "Billed", "Monthly cost", "By status"),
        rows,
        right={3, 4, 5},
    )


def _run_row(run: RunRecord, in_progress: bool) -> tuple[str, ...]:
    totals = run.totals
    if totals is None:
        state = "in progress" if in_progress else "interrupted: never recorded (killed or crashed)"
        return (_NONE, _when(run.started_at), _NONE, _NONE, _NONE, _NONE, state)
    counts = [f"{n} {status.value}" for status, n in totals.by_status.items() if n]
    if totals.tenants_with_unknown_status:
        counts.append(f"{totals.tenants_with_unknown_status} unknown")
    by_status = ", ".join(counts) or "no tenants"
    cost = _money(totals.estimated_monthly_cost, totals.currency)
    if totals.tenants_with_unknown_cost:
        cost = "at least " + cost  # some tenants' cost is unknown (errors, ambiguous)
    return (
        (run.run_id or _NONE)[:8],
        _when(run.started_at),
        totals.mode.value if totals.mode is not None else _UNKNOWN,
        str(totals.tenants),
        str(totals.billed_shared_mailboxes),
        cost,
        by_status,
    )


def timeline_text(store: HistoryStore, tenant: TenantRef, limit: int) -> str:
    """One tenant's latest ``limit`` runs, oldest first, and where its gap stands now."""
    entries = store.timeline(tenant.tenant_id, limit)
    shown = f"the latest {len(entries)}, oldest first" if len(entries) < tenant.runs else "oldest first"
    head = f"{terminal_text(tenant.name)} ({tenant.tenant_id}): {_plural(tenant.runs, 'run')}; {shown}.\n\n"
    rows = [_timeline_row(e) for e in entries]
    table = _table(
        ("Started (UTC)", "Run", "Mode", "Status", "Billed", "Monthly cost", "Remediation", "Findings"),
        rows,
        right={4, 5},
    )
    latest = store.latest_run_id(tenant.tenant_id)
    now = store.insights(latest).for_tenant(tenant.tenant_id) if latest else None
    return head + table + ("\n" + _now_line(now) + "\n" if now else "")


def _timeline_row(entry: TimelineEntry) -> tuple[str, ...]:
    findings = ", ".join(entry.finding_codes)
    if entry.error_code:
        findings = f"error {entry.error_code}" + (f"; {findings}" if findings else "")
    return (
        _when(entry.started_at),
        entry.run_id[:8],
        entry.mode.value if entry.mode is not None else _UNKNOWN,
        entry.status.value if entry.status is not None else _UNKNOWN,
        _NONE if entry.billed_shared_mailboxes is None else str(entry.billed_shared_mailboxes),
        _NONE if entry.monthly_cost is None else _money(entry.monthly_cost, entry.currency),
        entry.remediation_action,
        findings or _NONE,
    )


def _now_line(insight: TenantInsight) -> str:
    if insight.status is Status.ERROR:
        known = (
            f"; last known: {insight.previous_status.value} on {_when(insight.previous_seen_at)}"
            if insight.previous_status and insight.previous_seen_at
            else ""
        )
        return f"Now: could not be audited in its latest run{known}."
    if insight.open_gap is not None:
        return f"Now: {insight.status.value}; gap open since {_gap(insight.open_gap)}."
    if insight.closed_gap is not None:
        gap = _gap(insight.closed_gap)
        return f"Now: {insight.status.value}; the gap open since {gap} ended in the latest run."
    return f"Now: {insight.status.value}."


def _gap(gap: GapAge) -> str:
    """``2024-05-02 01:00 (2.0 days, 2 runs; accrued 0.49 GBP)``."""
    if gap.accrued_cost is None:
        cost = "cost unknown"
    else:
        cost = f"accrued {'' if gap.cost_complete else 'at least '}{_money(gap.accrued_cost, gap.currency)}"
    return f"{_when(gap.first_seen)} ({gap.days_open:.1f} days, {_plural(gap.runs, 'run')}; {cost})"


def _one_tenant(store: HistoryStore, name_or_id: str) -> TenantRef:
    matches = store.find_tenants(name_or_id)
    if len(matches) == 1:
        return matches[0]
    known = store.tenants()
    if not matches:
        names = [t.name for t in known]
        close = difflib.get_close_matches(
            name_or_id.casefold(), [n.casefold() for n in names], n=1, cutoff=0.6
        )
        suggestion = next(
            (f" (did you mean {n!r}?)" for n in names if close and n.casefold() == close[0]), ""
        )
        listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise UsageError(
            f"--tenant {name_or_id!r} is not in the history{suggestion}",
            hint=f"use a tenant name or tenant id from the history: {listed}"
            if names
            else "no runs recorded yet",
        )
    raise UsageError(
        f"--tenant {name_or_id!r} names {len(matches)} tenants in the history",
        hint="use the tenant id: " + ", ".join(f"{t.tenant_id} ({t.name})" for t in matches),
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]) -> str:
    # Names and finding codes come from earlier runs: control characters are shown, never sent.
    rows = [[terminal_text(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)]) + "\n"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else _NONE


def _money(amount: float, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
