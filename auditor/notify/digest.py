"""What every notification says, computed once from the run: the "results -> rows" layer of messages.

E-mail (HTML and plain text) and each webhook format render the same :class:`RunDigest`, so they can
not disagree about a figure. Tenant names and finding texts are tenant data: the renderers escape them
for their own format (HTML autoescaping, Slack plain_text, Teams markdown escaping).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from auditor.model import RunResult, Severity, Status, TenantResult

from .policy import ATTENTION_STATUSES, StatusChange, status_changes

__all__ = ["AttentionRow", "RunDigest", "digest_run", "money_text"]

_STATUS_ORDER: Final = {status: i for i, status in enumerate(ATTENTION_STATUSES)}


@dataclass(frozen=True)
class AttentionRow:
    """One tenant that needs someone to act, with the short and the long form of why."""

    name: str
    tenant_id: str
    status: str
    codes: str  # finding codes, or the error code ("ROLE_MISSING, EXCHANGE_PERMISSION_MISSING")
    detail: str  # the most important finding's message, or the error's hint
    billed: int | None  # shared mailboxes billed (None: unknown)
    monthly_cost: float | None

    def short(self, currency: str) -> str:
        """``Fabrikam Retail: non_compliant (ROLE_MISSING), 25 billed, GBP 62.50/month``."""
        text = f"{self.name}: {self.status}"
        if self.codes:
            text += f" ({self.codes})"
        if self.billed:
            text += f", {self.billed} billed"
        if self.monthly_cost:
            text += f", {money_text(self.monthly_cost, currency)}/month"
        return text


@dataclass(frozen=True)
class RunDigest:
    """The run, reduced to what a message shows."""

    run_id: str
    mode: str
    tool_version: str
    started_at: str
    finished_at: str
    headline: str  # one line, no tenant data: safe for a subject line
    needs_attention: bool
    tenants: int
    counts: tuple[tuple[str, int], ...]  # (status, n) for the statuses present, in Status order
    shared_mailboxes: int
    billed_shared_mailboxes: int
    monthly_cost: float
    currency: str
    unknown_cost_tenants: int
    attention: tuple[AttentionRow, ...]  # at most max_listed rows, worst first
    attention_not_listed: int  # how many more need attention than are listed
    changes: tuple[StatusChange, ...] | None  # None: no previous run to compare with
    changes_not_listed: int
    report_url: str | None

    @property
    def cost_text(self) -> str:
        """``GBP 1,234.50 per month`` (+ that it is a lower bound when some tenants are unpriced)."""
        text = f"{money_text(self.monthly_cost, self.currency)} per month"
        if self.unknown_cost_tenants:
            text += f" (lower bound: {self.unknown_cost_tenants} tenant(s) could not be priced)"
        return text

    @property
    def counts_text(self) -> str:
        """``12 compliant, 2 non_compliant, 1 error``."""
        return ", ".join(f"{n} {status}" for status, n in self.counts) or "no tenants"


def money_text(amount: float, currency: str) -> str:
    """``GBP 1,234.50``."""
    return f"{currency} {amount:,.2f}"


def digest_run(
    run: RunResult,
    previous: Mapping[str, str] | None = None,
    *,
    max_listed: int = 20,
    report_url: str | None = None,
) -> RunDigest:
    """Reduce a run (and the previous run's statuses, when known) to a :class:`RunDigest`."""
    summary = run.summary()
    counts = tuple((status.value, n) for status, n in summary.by_status.items() if n)
    attention = sorted(
        (t for t in run.tenants if t.status in ATTENTION_STATUSES),
        key=lambda t: (_STATUS_ORDER[t.status], -(t.billing.monthly_cost or 0.0), t.name.casefold()),
    )
    changes = status_changes(run, previous)
    listed_changes = None if changes is None else tuple(changes[:max_listed])
    rows = [_row(t) for t in attention[:max_listed]]
    notice = run.vendor_nowhere_notice
    if notice:
        # Not one tenant's problem but the config's: listed first, in every channel, naming the search.
        rows.insert(0, _fleet_row(run, notice))
    return RunDigest(
        run_id=run.run_id,
        mode=run.mode.value,
        tool_version=run.tool_version,
        started_at=run.started_at.isoformat(timespec="seconds"),
        finished_at=run.finished_at.isoformat(timespec="seconds"),
        headline=_headline(run, len(attention)),
        needs_attention=bool(attention) or notice is not None,
        tenants=summary.tenants,
        counts=counts,
        shared_mailboxes=summary.shared_mailboxes,
        billed_shared_mailboxes=summary.billed_shared_mailboxes,
        monthly_cost=summary.estimated_monthly_cost,
        currency=summary.currency,
        unknown_cost_tenants=summary.tenants_with_unknown_cost,
        attention=tuple(rows),
        attention_not_listed=max(0, len(attention) - max_listed),
        changes=listed_changes,
        changes_not_listed=0 if changes is None else max(0, len(changes) - max_listed),
        report_url=report_url,
    )


def _headline(run: RunResult, attention: int) -> str:
    total = len(run.tenants)
    if not total:
        return "no tenants were audited"
    if run.vendor_nowhere_notice:
        audited = sum(1 for t in run.tenants if t.status is not Status.ERROR)
        return f"the vendor app was found in none of {audited} tenants: check [vendor] in the config"
    if not attention:
        return f"all {total} tenant(s) OK"
    statuses = [
        f"{n} {status.value}"
        for status in ATTENTION_STATUSES
        if (n := sum(1 for t in run.tenants if t.status is status))
    ]
    return f"{attention} of {total} tenant(s) need attention ({', '.join(statuses)})"


def _fleet_row(run: RunResult, notice: str) -> AttentionRow:
    audited = sum(1 for t in run.tenants if t.status is not Status.ERROR)
    return AttentionRow(
        name=f"All {audited} tenants audited",
        tenant_id="",
        # short() shows name, status and codes only (Slack): the search is named there too.
        status=f"vendor app not found (search: {run.vendor_search or 'see [vendor] in the config'})",
        codes="SP_NOT_FOUND",
        detail=notice,
        billed=None,
        monthly_cost=None,
    )


def _row(result: TenantResult) -> AttentionRow:
    if result.status is Status.ERROR and result.error is not None:
        codes = result.error.code.value
        detail = result.error.hint or result.error.message
    else:
        findings = sorted(result.findings, key=lambda f: f.severity.rank)
        codes = ", ".join(
            dict.fromkeys(f.code.value for f in findings if f.severity.rank <= Severity.MEDIUM.rank)
        )
        detail = findings[0].message if findings else ""
    return AttentionRow(
        name=result.name,
        tenant_id=result.tenant_id,
        status=result.status.value,
        codes=codes,
        detail=detail,
        billed=result.billing.billed_shared_mailboxes,
        monthly_cost=result.billing.monthly_cost,
    )
