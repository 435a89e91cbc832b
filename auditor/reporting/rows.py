"""Results -> rows: the one layer that turns a :class:`RunResult` into what the reports show.

Both the HTML page and the Excel workbook are drawn from these tables and figures, so a number, a label
or a piece of advice exists once and the two formats cannot disagree. Each :class:`Table` is a pandas
``DataFrame`` (object dtype: ``None`` stays ``None``, an int stays an int) plus the ordered
:class:`Column` specs a format uses for headers and number formats. Frames may carry extra helper
columns (an HTML anchor, tag lists) that are not in ``columns``.

Conventions every format follows: a ``None`` count or amount is *unknown* (never zero); a ``None`` text
is empty. Tenants are listed most urgent first: gaps that cost money, then errors and ambiguity, then
by monthly cost.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeAlias
from urllib.parse import quote

import pandas as pd

from auditor.constants import (
    CLOUDS,
    DEFAULT_CLOUD,
    EXCHANGE_MANAGE_AS_APP_ROLE_VALUE,
    SECURITY_READER_ROLE_NAME,
)
from auditor.evaluate import admin_consent_url
from auditor.history.insights import (
    Change,
    GapAge,
    HistoryUnavailable,
    RunInsights,
    TenantInsight,
)
from auditor.model import (
    ROLE_GAP_CODES,
    Finding,
    FindingCode,
    IdentificationMethod,
    RemediationAction,
    RunResult,
    Severity,
    Status,
    TenantResult,
    money,
)

__all__ = [
    "CHANGE_COLUMNS",
    "CHANGE_LABELS",
    "GAP_COLUMNS",
    "STATUS_INFO",
    "STATUS_ORDER",
    "TREND_COLUMNS",
    "Check",
    "CheckOutcome",
    "Column",
    "ColumnKind",
    "CostBar",
    "Figure",
    "Insights",
    "StatusInfo",
    "Table",
    "change_rows",
    "consent_link",
    "cost_by_tenant",
    "currency_symbol",
    "error_rows",
    "finding_rows",
    "format_count",
    "format_datetime",
    "format_days",
    "format_money",
    "gap_rows",
    "history_figures",
    "history_notice",
    "identification_text",
    "next_step",
    "ordered_tenants",
    "remediation_rows",
    "run_figures",
    "shared_mailbox_rows",
    "split_fix",
    "status_rows",
    "tenant_anchor",
    "tenant_checks",
    "tenant_rows",
    "trend_rows",
]

UNKNOWN: Final = "unknown"


# --- vocabulary -------------------------------------------------------------------------------------------


class ColumnKind(StrEnum):
    """How a column's values are shown and formatted (number format in Excel, text in HTML)."""

    TEXT = "text"
    COUNT = "count"  # an integer; None is unknown
    MONEY = "money"  # an amount in the row's (or run's) currency; None is unknown
    DATETIME = "datetime"  # timezone-aware, shown in UTC
    FLAG = "flag"  # a boolean, shown as Yes / No
    DAYS = "days"  # a duration in days (fractional, shown with one decimal); None is not applicable
    LINK = "link"  # a URL (text), clickable where the format allows


@dataclass(frozen=True)
class Column:
    """One column of a :class:`Table`: its frame key, header text and kind.

    ``wide`` marks prose (messages, hints) that Excel wraps in a wide column; ``overview`` marks the
    columns the HTML tenants overview shows (the workbook shows all of them).
    """

    key: str
    header: str
    kind: ColumnKind = ColumnKind.TEXT
    wide: bool = False
    overview: bool = False


@dataclass(frozen=True)
class Table:
    """A named table of rows: ``frame`` holds the values, ``columns`` says what to show and how."""

    name: str
    columns: tuple[Column, ...]
    frame: pd.DataFrame
    empty_note: str = ""

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts (every frame column, helper columns included), in order."""
        return [{str(k): v for k, v in row.items()} for row in self.frame.to_dict("records")]

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class StatusInfo:
    """How a status is named and explained to a reader, and what to do about it."""

    status: Status
    label: str
    meaning: str
    next_step: str


STATUS_INFO: Final[Mapping[Status, StatusInfo]] = MappingProxyType(
    {
        Status.NON_COMPLIANT: StatusInfo(
            Status.NON_COMPLIANT,
            "Non-compliant",
            "USS is connected but lacks a permission it needs: its shared mailboxes are billed as users.",
            "Fix each finding (each one says how): run `auditor audit --remediate` for the Security Reader "
            "role, and have a Global Administrator open the admin-consent link for the Exchange Online "
            "permission. Then start a full sync in the USS dashboard: billing changes only after it.",
        ),
        Status.ERROR: StatusInfo(
            Status.ERROR,
            "Error",
            "The auditor could not find out; this is not a verdict on the tenant.",
            "Follow the hint in the Errors section (usually a permission to grant to the auditor app), "
            "then re-run the audit for this tenant.",
        ),
        Status.AMBIGUOUS: StatusInfo(
            Status.AMBIGUOUS,
            "Ambiguous",
            "Several apps look like the USS app and the config does not say which is the vendor's.",
            "Find the vendor's appId (in the USS portal, or ask the vendor), set vendor.app_id in the "
            "config, and re-run. Nothing was judged or changed in this tenant.",
        ),
        Status.REMEDIATED: StatusInfo(
            Status.REMEDIATED,
            "Remediated",
            "This run assigned the missing Security Reader role and read it back.",
            "Wait 15 minutes for the role to take effect, then start a full sync in the USS dashboard: "
            "shared mailboxes are billed as users until that sync has run.",
        ),
        Status.NOT_CONNECTED: StatusInfo(
            Status.NOT_CONNECTED,
            "Not connected",
            "USS is not connected to this tenant, so it neither syncs nor bills it.",
            "Nothing to do, unless this tenant should be protected by USS: then connect it from the USS "
            "portal and re-run.",
        ),
        Status.COMPLIANT: StatusInfo(
            Status.COMPLIANT,
            "Compliant",
            "USS holds everything it needs: shared mailboxes are recognised and not billed.",
            "Nothing to do.",
        ),
    }
)

# Most urgent first: what costs money now, then what nobody knows yet, then what was fixed.
STATUS_ORDER: Final = tuple(STATUS_INFO)

_IDENTIFICATION_TEXT: Final = MappingProxyType(
    {
        IdentificationMethod.APP_ID: "by its appId, pinned in the config (vendor.app_id)",
        IdentificationMethod.PUBLISHER: (
            "by display name and the vendor's publisher tenant (vendor.publisher_tenant_id)"
        ),
        IdentificationMethod.DISPLAY_NAME: "by display name only: not pinned in the config",
    }
)

_CURRENCY_SYMBOLS: Final = MappingProxyType({"GBP": "£", "EUR": "€", "USD": "$", "JPY": "¥", "INR": "₹"})

_ROLE_CODES: Final = frozenset(
    {
        FindingCode.ROLE_MISSING,
        FindingCode.ROLE_SCOPED,
        FindingCode.ROLE_ELIGIBLE_ONLY,
        FindingCode.ROLE_EXPIRING,
        FindingCode.ROLE_VIA_GROUP,
        FindingCode.PIM_UNAVAILABLE,
    }
)
_JUDGED: Final = frozenset({Status.COMPLIANT, Status.NON_COMPLIANT, Status.REMEDIATED})
_FIXED: Final = frozenset({RemediationAction.CREATED, RemediationAction.ALREADY_PRESENT})


# --- formatting shared by the formats ----------------------------------------------------------------------


def currency_symbol(currency: str) -> str | None:
    """The symbol for a currency code (``GBP`` -> ``£``), or None when it has no well-known one."""
    return _CURRENCY_SYMBOLS.get(currency.strip().upper())


def format_money(amount: float | None, currency: str) -> str:
    """``£1,234.50``; ``CHF 1,234.50`` without a known symbol; ``unknown`` for None."""
    if amount is None:
        return UNKNOWN
    symbol = currency_symbol(currency)
    sign = "-" if amount < 0 else ""
    if symbol is not None:
        return f"{sign}{symbol}{abs(amount):,.2f}"
    return f"{currency} {amount:,.2f}"


def format_count(value: int | None) -> str:
    """``1,234``, or ``unknown`` for None."""
    return UNKNOWN if value is None else f"{value:,}"


def format_datetime(value: datetime | None) -> str:
    """``2025-11-26 02:00 UTC`` (naive values are taken as UTC), or empty for None."""
    if value is None:
        return ""
    return f"{_utc(value):%Y-%m-%d %H:%M} UTC"


def format_days(value: float | None) -> str:
    """``3.5 days`` (one decimal), or empty for None."""
    return "" if value is None else f"{value:,.1f} day{'' if round(value, 1) == 1 else 's'}"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def split_fix(message: str) -> tuple[str, str]:
    """Split a finding message into (what was found, what to do) at its ``Fix:``; ``""`` if it has none."""
    what, marker, fix = message.partition(" Fix: ")
    if not marker:
        return message, ""
    return what, fix


def next_step(tenant: TenantResult) -> str:
    """What to do about this tenant: the status's advice, made specific to a non-compliant tenant's gaps."""
    if tenant.status is not Status.NON_COMPLIANT:
        return STATUS_INFO[tenant.status].next_step
    codes = tenant.finding_codes()
    steps: list[str] = []
    if FindingCode.SP_DISABLED in codes:
        steps.append("enable the USS AzureAD app for sign-in (Entra admin center > Enterprise applications)")
    if codes & ROLE_GAP_CODES and tenant.remediation.action is RemediationAction.CREATED_UNVERIFIED:
        steps.append(
            "re-run the audit to confirm the Security Reader assignment this run wrote (replicating)"
        )
    elif codes & ROLE_GAP_CODES and tenant.remediation.action not in _FIXED:
        steps.append("assign it Security Reader, active and tenant-wide (or run `auditor audit --remediate`)")
    if FindingCode.EXCHANGE_PERMISSION_MISSING in codes:
        steps.append(
            "have a Global Administrator open the admin-consent link for the Exchange Online permission"
        )
    if not steps:
        return STATUS_INFO[tenant.status].next_step
    listed = "; ".join(steps)
    return (
        f"{listed[0].upper()}{listed[1:]}. Then start a full sync in the USS dashboard: shared mailboxes "
        f"are billed as users until it has run."
    )


def identification_text(method: IdentificationMethod) -> str:
    """How the vendor app was recognised, in words."""
    return _IDENTIFICATION_TEXT[method]


def tenant_anchor(tenant: TenantResult) -> str:
    """A stable HTML id for the tenant's detail section (``tenant-<tenant id>``)."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", tenant.tenant_id.strip().lower()).strip("-")
    return f"tenant-{slug or 'unknown'}"


def _anchors(tenants: Sequence[TenantResult]) -> dict[int, str]:
    """Anchor per tenant position; duplicates (the same tenant listed twice) get a numeric suffix."""
    seen: dict[str, int] = {}
    anchors: dict[int, str] = {}
    for index, tenant in enumerate(tenants):
        base = tenant_anchor(tenant)
        seen[base] = seen.get(base, 0) + 1
        anchors[index] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return anchors


# --- tenants ----------------------------------------------------------------------------------------------


def ordered_tenants(run: RunResult) -> tuple[TenantResult, ...]:
    """The run's tenants, most urgent first: by status (:data:`STATUS_ORDER`), cost (highest first), name."""
    rank = {status: i for i, status in enumerate(STATUS_ORDER)}

    def key(tenant: TenantResult) -> tuple[int, float, str, str]:
        cost = tenant.billing.monthly_cost
        return (rank[tenant.status], -(cost or 0.0), tenant.name.casefold(), tenant.tenant_id)

    return tuple(sorted(run.tenants, key=key))


def _highest_severity(findings: Iterable[Finding]) -> Severity | None:
    severities = [f.severity for f in findings]
    return min(severities, key=lambda s: s.rank) if severities else None


# How the census count `on_premises` is shown (hybrid tenants: mailboxes Graph cannot classify).
ON_PREMISES_LABEL: Final = "Mailboxes hosted on-premises, not classified"

TENANT_COLUMNS: Final = (
    Column("name", "Tenant", overview=True),
    Column("tenant_id", "Tenant ID"),
    Column("status", "Status", overview=True),
    Column("monthly_cost", "Monthly cost", ColumnKind.MONEY, overview=True),
    Column("billed_shared_mailboxes", "Billed shared mailboxes", ColumnKind.COUNT, overview=True),
    Column("price_per_mailbox", "Price per mailbox", ColumnKind.MONEY),
    Column("currency", "Currency"),
    Column("shared_mailboxes", "Shared mailboxes found", ColumnKind.COUNT),
    Column("on_premises_mailboxes", ON_PREMISES_LABEL, ColumnKind.COUNT),
    # Incremental census (auditor.census): age of the oldest classification relied on; empty: read in full.
    Column("census_age_days", "Census age (days)", ColumnKind.DAYS),
    Column("findings", "Findings", ColumnKind.COUNT, overview=True),
    Column("highest_severity", "Highest severity", overview=True),
    Column("finding_codes", "Finding codes", wide=True),
    Column("remediation", "Remediation", overview=True),
    Column("error_code", "Error"),
    Column("tags", "Tags", overview=True),
    Column("vendor_app", "Vendor app"),
    Column("vendor_app_id", "Vendor appId"),
    Column("identified_by", "Identified by"),
    Column("next_step", "What to do next", wide=True),
)


def tenant_rows(run: RunResult, insights: Insights = None) -> Table:
    """One row per tenant (the HTML overview table and the workbook's Tenants sheet).

    Helper columns besides :data:`TENANT_COLUMNS`: ``anchor`` (detail section id), ``status_label``,
    ``tag_list`` (tuple), ``search_text`` (lower-cased text the HTML free-text filter matches).

    With :class:`RunInsights`, the :data:`GAP_COLUMNS` of :func:`gap_rows` are merged in (change since
    the previous run, gap first seen, days open, runs, accrued cost); without (None, or history
    unavailable) the table is exactly as before.
    """
    tenants = ordered_tenants(run)
    anchors = _anchors(tenants)
    rows: list[dict[str, Any]] = []
    for index, tenant in enumerate(tenants):
        sp = tenant.service_principal
        severity = _highest_severity(tenant.findings)
        codes = ", ".join(dict.fromkeys(f.code.value for f in tenant.findings))
        row = {
            "name": tenant.name,
            "tenant_id": tenant.tenant_id,
            "status": tenant.status.value,
            "tags": ", ".join(tenant.tags),
            "billed_shared_mailboxes": tenant.billing.billed_shared_mailboxes,
            "monthly_cost": tenant.billing.monthly_cost,
            "price_per_mailbox": tenant.billing.price_per_mailbox,
            "currency": tenant.billing.currency,
            "shared_mailboxes": tenant.mailboxes.shared if tenant.mailboxes is not None else None,
            "on_premises_mailboxes": tenant.mailboxes.on_premises if tenant.mailboxes is not None else None,
            "census_age_days": tenant.mailboxes.age_days if tenant.mailboxes is not None else None,
            "findings": len(tenant.findings),
            "highest_severity": severity.value if severity is not None else "",
            "finding_codes": codes,
            "vendor_app": sp.record.display_name if sp is not None else "",
            "vendor_app_id": sp.record.app_id if sp is not None else "",
            "identified_by": sp.identified_by.value if sp is not None else "",
            "remediation": tenant.remediation.action.value,
            "error_code": tenant.error.code.value if tenant.error is not None else "",
            "next_step": next_step(tenant),
            # helpers
            "anchor": anchors[index],
            "status_label": STATUS_INFO[tenant.status].label,
            "tag_list": tuple(tenant.tags),
            "severity_rank": severity.rank if severity is not None else len(Severity),
        }
        row["search_text"] = " ".join(
            str(row[k])
            for k in (
                "name",
                "tenant_id",
                "status_label",
                "tags",
                "finding_codes",
                "vendor_app",
                "error_code",
            )
        ).casefold()
        rows.append(row)
    table = _table("Tenants", TENANT_COLUMNS, rows, "No tenants were audited in this run.")
    if not isinstance(insights, RunInsights):
        return table
    gaps = gap_rows(insights).frame[["tenant_id", *(c.key for c in GAP_COLUMNS)]]
    frame = table.frame.merge(gaps, on="tenant_id", how="left", sort=False, validate="many_to_one")
    frame.index = table.frame.index
    for column in GAP_COLUMNS:
        frame[column.key] = pd.Series([_plain(v) for v in frame[column.key]], index=frame.index, dtype=object)
    # The history columns follow the verdict and cost, before the evidence columns.
    at = next(i for i, c in enumerate(TENANT_COLUMNS) if c.key == "shared_mailboxes")
    columns = (*TENANT_COLUMNS[:at], *GAP_COLUMNS, *TENANT_COLUMNS[at:])
    return Table(table.name, columns, frame, table.empty_note)


# --- findings, mailboxes, remediation, errors ----------------------------------------------------------------


FINDING_COLUMNS: Final = (
    Column("tenant", "Tenant"),
    Column("tenant_id", "Tenant ID"),
    Column("status", "Status"),
    Column("severity", "Severity"),
    Column("code", "Code"),
    Column("message", "Finding and what to do", wide=True),
    Column("consent_link", "Admin-consent link", ColumnKind.LINK),
)


def finding_rows(run: RunResult) -> Table:
    """One row per finding, tenants in :func:`ordered_tenants` order, most severe first within a tenant.

    Helper columns: ``what`` and ``fix`` (the message split at ``Fix:``), ``anchor``.
    """
    rows: list[dict[str, Any]] = []
    for tenant, anchor in _with_anchors(run):
        link = consent_link(tenant)
        for finding in sorted(tenant.findings, key=lambda f: f.severity.rank):
            what, fix = split_fix(finding.message)
            rows.append(
                {
                    "tenant": tenant.name,
                    "tenant_id": tenant.tenant_id,
                    "status": tenant.status.value,
                    "severity": finding.severity.value,
                    "code": finding.code.value,
                    "message": finding.message,
                    "consent_link": (
                        link if finding.code is FindingCode.EXCHANGE_PERMISSION_MISSING and link else ""
                    ),
                    "what": what,
                    "fix": fix,
                    "anchor": anchor,
                }
            )
    return _table("Findings", FINDING_COLUMNS, rows, "No findings in this run.")


SHARED_MAILBOX_COLUMNS: Final = (
    Column("tenant", "Tenant"),
    Column("tenant_id", "Tenant ID"),
    Column("status", "Tenant status"),
    Column("display_name", "Display name"),
    Column("user_principal_name", "User principal name"),
    Column("mail", "Mail"),
    Column("billed", "Billed as a user", ColumnKind.FLAG),
    Column("account_enabled", "Sign-in allowed", ColumnKind.FLAG),
    Column("licensed", "Licensed", ColumnKind.FLAG),
    Column("id", "Object ID"),
)


SHARED_MAILBOX_EMPTY_NOTE: Final = "No shared mailboxes were found."


def shared_mailbox_rows(run: RunResult) -> Table:
    """One row per shared mailbox found; ``billed`` is True while the tenant's gap makes USS bill it.

    Holds every mailbox of the run: the reports stream :func:`shared_mailbox_records` instead."""
    return _table(
        "Shared mailboxes",
        SHARED_MAILBOX_COLUMNS,
        list(shared_mailbox_records(run)),
        SHARED_MAILBOX_EMPTY_NOTE,
    )


def shared_mailbox_records(run: RunResult) -> Iterator[dict[str, Any]]:
    """The rows of :func:`shared_mailbox_rows`, produced one tenant at a time (a tenant's spooled list is
    read back only while its rows are being consumed), in the tenants' report order."""
    for tenant, anchor in _with_anchors(run):
        yield from tenant_mailbox_records(tenant, anchor)


def tenant_mailbox_records(
    tenant: TenantResult, anchor: str, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """One tenant's shared-mailbox rows (the first ``limit`` of them when given)."""
    if tenant.mailboxes is None:
        return
    billed = bool(tenant.billing.billed_shared_mailboxes)
    for index, mailbox in enumerate(tenant.mailboxes.shared_mailboxes):
        if limit is not None and index >= limit:
            return
        yield {
            "tenant": tenant.name,
            "tenant_id": tenant.tenant_id,
            "status": tenant.status.value,
            "display_name": mailbox.display_name,
            "user_principal_name": mailbox.user_principal_name,
            "mail": mailbox.mail or "",
            "billed": billed,
            "account_enabled": mailbox.account_enabled,
            "licensed": mailbox.licensed,
            "id": mailbox.id,
            "anchor": anchor,
        }


def shared_mailbox_count(run: RunResult) -> int:
    """How many rows :func:`shared_mailbox_records` yields (without reading any list back)."""
    return sum(len(t.mailboxes.shared_mailboxes) for t in run.tenants if t.mailboxes is not None)


REMEDIATION_COLUMNS: Final = (
    Column("tenant", "Tenant"),
    Column("tenant_id", "Tenant ID"),
    Column("status", "Status"),
    Column("action", "Outcome"),
    Column("detail", "Detail", wide=True),
    Column("at", "At (UTC)", ColumnKind.DATETIME),
    Column("role_assignment_id", "Role assignment ID"),
    Column("request_id", "Graph request-id"),
)


def remediation_rows(run: RunResult) -> Table:
    """One row per tenant where remediation did (or planned, or refused) something (action is not none)."""
    rows: list[dict[str, Any]] = []
    for tenant, anchor in _with_anchors(run):
        remediation = tenant.remediation
        if remediation.action is RemediationAction.NONE:
            continue
        rows.append(
            {
                "tenant": tenant.name,
                "tenant_id": tenant.tenant_id,
                "status": tenant.status.value,
                "action": remediation.action.value,
                "detail": remediation.detail,
                "at": remediation.at,
                "role_assignment_id": remediation.role_assignment_id or "",
                "request_id": remediation.request_id or "",
                "anchor": anchor,
            }
        )
    note = f"No remediation in this run (mode: {run.mode.value})."
    return _table("Remediation", REMEDIATION_COLUMNS, rows, note)


ERROR_COLUMNS: Final = (
    Column("tenant", "Tenant"),
    Column("tenant_id", "Tenant ID"),
    Column("code", "Error"),
    Column("message", "What happened", wide=True),
    Column("hint", "What to do", wide=True),
)


def error_rows(run: RunResult) -> Table:
    """One row per tenant that carries an error (whatever its status)."""
    rows: list[dict[str, Any]] = []
    for tenant, anchor in _with_anchors(run):
        if tenant.error is None:
            continue
        rows.append(
            {
                "tenant": tenant.name,
                "tenant_id": tenant.tenant_id,
                "code": tenant.error.code.value,
                "message": tenant.error.message,
                "hint": tenant.error.hint,
                "anchor": anchor,
            }
        )
    return _table("Errors", ERROR_COLUMNS, rows, "Every tenant could be audited: no errors.")


# --- summary -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A headline figure; ``key`` is its audit.json name (``run.<key>`` or ``summary.<key>``)."""

    key: str
    label: str
    value: str | int | float | datetime | None
    kind: ColumnKind = ColumnKind.TEXT
    note: str = ""


def run_figures(run: RunResult) -> tuple[Figure, ...]:
    """The run's identity and headline totals, in reading order."""
    summary = run.summary()
    unknown = summary.tenants_with_unknown_cost
    cost_note = f"at least: the cost of {unknown} tenant(s) is unknown (errors, ambiguous)" if unknown else ""
    notice = run.vendor_nowhere_notice
    return (
        *((Figure("run.vendor_not_found", "WARNING: vendor app found nowhere", notice),) if notice else ()),
        Figure("run.id", "Run ID", run.run_id),
        Figure("run.started_at", "Started (UTC)", run.started_at, ColumnKind.DATETIME),
        Figure("run.finished_at", "Finished (UTC)", run.finished_at, ColumnKind.DATETIME),
        Figure("run.tool_version", "Tool version", run.tool_version),
        Figure("run.mode", "Mode", run.mode.value),
        Figure("summary.tenants", "Tenants audited", summary.tenants, ColumnKind.COUNT),
        Figure(
            "summary.shared_mailboxes", "Shared mailboxes found", summary.shared_mailboxes, ColumnKind.COUNT
        ),
        Figure(
            "summary.billed_shared_mailboxes",
            "Shared mailboxes billed as users",
            summary.billed_shared_mailboxes,
            ColumnKind.COUNT,
        ),
        Figure(
            "summary.estimated_monthly_cost",
            "Estimated monthly cost",
            summary.estimated_monthly_cost,
            ColumnKind.MONEY,
            cost_note,
        ),
        Figure("summary.currency", "Currency", summary.currency),
        Figure(
            "summary.tenants_with_unknown_cost",
            "Tenants with unknown cost",
            summary.tenants_with_unknown_cost,
            ColumnKind.COUNT,
        ),
        *(
            (Figure("summary.remediation", "Remediation in this run", remediation),)
            if (remediation := ", ".join(f"{n} {a.value}" for a, n in sorted(summary.remediation.items())))
            else ()
        ),
    )


STATUS_COLUMNS: Final = (
    Column("status", "Status"),
    Column("label", "Meaning"),
    Column("tenants", "Tenants", ColumnKind.COUNT),
    Column("meaning", "What it means", wide=True),
    Column("next_step", "What to do next", wide=True),
)


def status_rows(run: RunResult) -> Table:
    """Tenants per status, every status listed (most urgent first), with its meaning and next step."""
    counts = pd.Series([t.status.value for t in run.tenants], dtype=object).value_counts()
    rows = [
        {
            "status": info.status.value,
            "label": info.label,
            "tenants": int(counts.get(info.status.value, 0)),
            "meaning": info.meaning,
            "next_step": info.next_step,
        }
        for info in STATUS_INFO.values()
    ]
    return _table("Tenants by status", STATUS_COLUMNS, rows)


@dataclass(frozen=True)
class CostBar:
    """One bar of the cost chart: a tenant (or "N other tenants") and its monthly cost."""

    label: str
    value: float
    anchor: str = ""


def cost_by_tenant(run: RunResult, top: int = 10) -> tuple[CostBar, ...]:
    """The ``top`` tenants by monthly cost (known, above zero), plus one bar summing the rest."""
    frame = tenant_rows(run).frame
    costly = frame[frame["monthly_cost"].map(lambda v: v is not None and v > 0)]
    if costly.empty:
        return ()
    costly = costly.assign(cost=costly["monthly_cost"].astype(float))
    ranked = costly.sort_values(["cost", "name"], ascending=[False, True], kind="stable")
    records = ranked.to_dict("records")
    bars = [CostBar(str(r["name"]), float(r["cost"]), str(r["anchor"])) for r in records[:top]]
    rest = records[top:]
    if rest:
        total = money(sum((Decimal(str(r["cost"])) for r in rest), Decimal(0)))
        bars.append(CostBar(f"{len(rest)} other tenant(s)", total))
    return tuple(bars)


# --- per-tenant evidence --------------------------------------------------------------------------------------


class CheckOutcome(StrEnum):
    """Outcome of one prerequisite check in a tenant's detail."""

    OK = "ok"
    WARNING = "warning"
    GAP = "gap"
    UNKNOWN = "unknown"
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class Check:
    """One prerequisite of DESIGN §3.4 for one tenant, what was found, and the findings behind it."""

    name: str
    outcome: CheckOutcome
    evidence: str
    findings: tuple[Finding, ...] = ()


def tenant_checks(tenant: TenantResult) -> tuple[Check, ...]:
    """The evidence behind a tenant's verdict, one check per prerequisite (identification, enabled,
    Security Reader, Exchange permission, mailbox census)."""
    sp = tenant.service_principal
    status = tenant.status
    codes = tenant.finding_codes()
    failed_note = "Not confirmed: the audit of this tenant failed (see the error)."
    checks: list[Check] = []

    lookalikes = tuple(f for f in tenant.findings if f.code is FindingCode.SP_LOOKALIKE)
    ignored = f" {len(lookalikes)} look-alike app(s) were ignored." if lookalikes else ""
    if sp is not None:
        checks.append(
            Check(
                "Vendor app identified",
                CheckOutcome.WARNING if FindingCode.SP_NAME_ONLY in codes else CheckOutcome.OK,
                f"{sp.record.display_name} (object id {sp.record.id}, appId {sp.record.app_id}, published "
                f"by {sp.record.app_owner_organization_id or 'unknown'}), identified "
                f"{identification_text(sp.identified_by)}.{ignored}",
                _having(tenant, {FindingCode.SP_NAME_ONLY, FindingCode.SP_LOOKALIKE}),
            )
        )
        checks.append(
            Check(
                "Vendor app enabled",
                CheckOutcome.OK if sp.record.account_enabled else CheckOutcome.GAP,
                "Enabled for sign-in." if sp.record.account_enabled else "Disabled: USS cannot sign in.",
                _having(tenant, {FindingCode.SP_DISABLED}),
            )
        )
    else:
        outcome, text = {
            Status.NOT_CONNECTED: (CheckOutcome.NOT_APPLICABLE, "No vendor app: USS is not connected."),
            Status.AMBIGUOUS: (CheckOutcome.UNKNOWN, "Several candidate apps; the config must say which."),
        }.get(status, (CheckOutcome.UNKNOWN, failed_note))
        checks.append(
            Check(
                "Vendor app identified",
                outcome,
                text + ignored,
                _having(
                    tenant, {FindingCode.SP_NOT_FOUND, FindingCode.SP_AMBIGUOUS, FindingCode.SP_LOOKALIKE}
                ),
            )
        )

    role_findings = _having(tenant, _ROLE_CODES)
    role_name = f"{SECURITY_READER_ROLE_NAME}, active, tenant-wide"
    if sp is None:
        checks.append(Check(role_name, CheckOutcome.NOT_APPLICABLE, "Not checked: no vendor app."))
    elif codes & ROLE_GAP_CODES and tenant.remediation.action in _FIXED:
        checks.append(
            Check(
                role_name,
                CheckOutcome.OK,
                (
                    "Was missing; this run assigned it and read it back."
                    if tenant.remediation.action is RemediationAction.CREATED
                    else "Was missing; found assigned when re-read before writing (already present)."
                ),
                role_findings,
            )
        )
    elif codes & ROLE_GAP_CODES and tenant.remediation.action is RemediationAction.CREATED_UNVERIFIED:
        checks.append(
            Check(
                role_name,
                CheckOutcome.WARNING,
                "Was missing; this run assigned it, but it was not yet visible (directory replication). "
                "The next run confirms it.",
                role_findings,
            )
        )
    elif codes & ROLE_GAP_CODES:
        checks.append(Check(role_name, CheckOutcome.GAP, "Not held as required.", role_findings))
    elif status in _JUDGED:
        warn = codes & {FindingCode.ROLE_VIA_GROUP, FindingCode.ROLE_EXPIRING}
        checks.append(
            Check(
                role_name,
                CheckOutcome.WARNING if warn else CheckOutcome.OK,
                "Held, with a caveat (see below)." if warn else "Held: active, at scope '/'.",
                role_findings,
            )
        )
    else:
        checks.append(Check(role_name, CheckOutcome.UNKNOWN, failed_note, role_findings))

    exchange_name = f"Exchange Online permission {EXCHANGE_MANAGE_AS_APP_ROLE_VALUE}"
    exchange_findings = _having(tenant, {FindingCode.EXCHANGE_PERMISSION_MISSING})
    if sp is None:
        checks.append(Check(exchange_name, CheckOutcome.NOT_APPLICABLE, "Not checked: no vendor app."))
    elif exchange_findings:
        checks.append(
            Check(
                exchange_name,
                CheckOutcome.GAP,
                "Missing: a Global Administrator must grant admin consent (link below).",
                exchange_findings,
            )
        )
    elif status in _JUDGED:
        checks.append(
            Check(exchange_name, CheckOutcome.OK, "No finding: granted (or the check is off in the config).")
        )
    else:
        checks.append(Check(exchange_name, CheckOutcome.UNKNOWN, failed_note))

    census = tenant.mailboxes
    census_findings = _having(
        tenant,
        {
            FindingCode.MAILBOX_SCAN_INCOMPLETE,
            FindingCode.SHARED_MAILBOX_SIGNIN_ENABLED,
            FindingCode.SHARED_MAILBOX_LICENSED,
        },
    )
    if census is None:
        outcome = CheckOutcome.UNKNOWN if status is Status.ERROR else CheckOutcome.NOT_APPLICABLE
        checks.append(Check("Mailbox census", outcome, "Mailboxes were not classified.", census_findings))
    else:
        incomplete = not census.complete
        checks.append(
            Check(
                "Mailbox census",
                CheckOutcome.WARNING if census_findings else CheckOutcome.OK,
                f"{census.total_users:,} users examined: {census.shared:,} shared mailbox(es)"
                + (
                    f"; {census.on_premises:,} mailbox(es) hosted on-premises, not classified"
                    if census.on_premises
                    else ""
                )
                + (
                    f"; {census.unclassified:,} could not be classified (a lower bound)."
                    if incomplete
                    else "."
                )
                + (
                    # An incremental census (auditor.census): how old its oldest classification is.
                    f" Incremental census: the oldest mailbox classification is {census.age_days:.1f} "
                    "day(s) old."
                    if census.age_days is not None
                    else ""
                ),
                census_findings,
            )
        )
    return tuple(checks)


def _having(tenant: TenantResult, codes: Iterable[FindingCode]) -> tuple[Finding, ...]:
    wanted = frozenset(codes)
    return tuple(f for f in tenant.findings if f.code in wanted)


def consent_link(tenant: TenantResult) -> str | None:
    """The admin-consent link for the vendor app's Exchange Online permission, when it is missing.

    The evaluator writes the link (built for the tenant's cloud) at the end of the finding's message;
    the last such link for this tenant and app is taken, so a link-like text planted earlier in the
    message (a display name is tenant data) is never the one used. Without one, the global-cloud link
    is built.
    """
    sp = tenant.service_principal
    if sp is None or FindingCode.EXCHANGE_PERMISSION_MISSING not in tenant.finding_codes():
        return None
    suffix = f"/{quote(tenant.tenant_id, safe='')}/adminconsent?client_id={quote(sp.record.app_id, safe='')}"
    pattern = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~-]+)*?" + re.escape(suffix))
    for finding in reversed(tenant.findings):
        if finding.code is FindingCode.EXCHANGE_PERMISSION_MISSING:
            matches = pattern.findall(finding.message)
            if matches:
                return str(matches[-1])
    return admin_consent_url(CLOUDS[DEFAULT_CLOUD].authority, tenant.tenant_id, sp.record.app_id)


# --- history: changes since the previous run, gap ages, accrued cost, trend ---------------------------------

# What a report is given about history (auditor.history): the insights, why there are none, or nothing at
# all (history not asked for: the reports look as they did before history existed).
Insights: TypeAlias = RunInsights | HistoryUnavailable | None

CHANGE_LABELS: Final[Mapping[Change, str]] = MappingProxyType(
    {
        Change.NEW_GAP: "New gap",
        Change.FIXED: "Gap fixed",
        Change.CHANGED: "Status changed",
        Change.FIRST_SEEN: "New tenant",
        Change.UNCHANGED: "Unchanged",
        Change.UNKNOWN: "Unknown: not audited this run",
    }
)
_NEW_MAILBOXES_LABEL: Final = "New shared mailboxes"
# The order of the changes list: what costs money first.
_CHANGE_ORDER: Final = (Change.NEW_GAP, Change.CHANGED, Change.FIXED, Change.FIRST_SEEN, Change.UNCHANGED)

GAP_COLUMNS: Final = (
    Column("change", "Change since the previous run"),
    Column("gap_first_seen", "Gap first seen (UTC)", ColumnKind.DATETIME),
    Column("gap_days", "Gap open (days)", ColumnKind.DAYS, overview=True),
    Column("gap_runs", "Runs with the gap", ColumnKind.COUNT),
    Column("gap_accrued_cost", "Accrued since the gap opened", ColumnKind.MONEY, overview=True),
    Column("gap_cost_minimum", "Accrued cost is a minimum", ColumnKind.FLAG),
)


def history_notice(insights: Insights) -> str | None:
    """``history unavailable: <reason>`` when history could not say anything about this run, else None."""
    if isinstance(insights, HistoryUnavailable):
        return f"history unavailable: {insights.reason}"
    return None


def _change_label(insight: TenantInsight) -> str:
    if insight.change is Change.UNCHANGED and insight.new_shared_mailboxes:
        return _NEW_MAILBOXES_LABEL
    return CHANGE_LABELS[insight.change]


def _gap_values(insight: TenantInsight, gap: GapAge | None) -> dict[str, Any]:
    """Gap age and accrued cost; a tenant with no gap accrued nothing (0), an unaudited one is unknown."""
    known = insight.change is not Change.UNKNOWN
    if gap is None:
        return {
            "gap_first_seen": None,
            "gap_days": None,
            "gap_runs": 0 if known else None,
            "gap_accrued_cost": 0.0 if known else None,
            "gap_cost_minimum": False,
        }
    return {
        "gap_first_seen": gap.first_seen,
        "gap_days": round(gap.days_open, 2),
        "gap_runs": gap.runs,
        "gap_accrued_cost": gap.accrued_cost,
        "gap_cost_minimum": not gap.cost_complete,
    }


def gap_rows(insights: RunInsights) -> Table:
    """One row per tenant of the run: its change since the previous run and its open gap's age and accrued
    cost (:data:`GAP_COLUMNS`); :func:`tenant_rows` merges these into the tenants table."""
    rows = [
        {
            "tenant": t.name,
            "tenant_id": t.tenant_id,
            "change": _change_label(t),
            **_gap_values(t, t.open_gap),
        }
        for t in insights.tenants
    ]
    frame = pd.DataFrame(rows, columns=["tenant", "tenant_id", *(c.key for c in GAP_COLUMNS)], dtype=object)
    frame = frame.drop_duplicates("tenant_id", keep="first")
    columns = (Column("tenant", "Tenant"), Column("tenant_id", "Tenant ID"), *GAP_COLUMNS)
    return Table("Gap ages", columns, frame.reset_index(drop=True))


CHANGE_COLUMNS: Final = (
    Column("tenant", "Tenant"),
    Column("tenant_id", "Tenant ID"),
    Column("change", "Change"),
    Column("previous_status", "Previous status"),
    Column("status", "Status"),
    Column("previous_seen_at", "Previous status seen (UTC)", ColumnKind.DATETIME),
    Column("new_shared_mailboxes", "New shared mailboxes", ColumnKind.COUNT),
    Column("new_shared_mailbox_names", "New shared mailbox names", wide=True),
    Column("gap_first_seen", "Gap first seen (UTC)", ColumnKind.DATETIME),
    Column("gap_days", "Gap open (days)", ColumnKind.DAYS),
    Column("gap_accrued_cost", "Accrued while open", ColumnKind.MONEY),
    Column("gap_cost_minimum", "Accrued cost is a minimum", ColumnKind.FLAG),
)


def _is_listed_change(insight: TenantInsight, compared: bool) -> bool:
    if not compared:
        return False  # the first run: every gap is "new" to history, which says nothing
    if insight.change in (Change.NEW_GAP, Change.FIXED, Change.CHANGED):
        return True
    if insight.change is Change.FIRST_SEEN:
        return True  # a tenant added to the config since the previous run
    return bool(insight.new_shared_mailboxes)


def change_rows(insights: RunInsights) -> Table:
    """What changed since the previous run, one row per changed tenant: new gaps, status changes, fixed
    gaps (with how long they were open and what they cost), tenants new to history, and tenants with new
    shared mailboxes. Unchanged tenants are not listed, nor tenants this run could not audit (``error`` is
    unknown, never a fix: see :func:`history_figures`). On the first run nothing is compared and nothing
    is listed.

    Helper columns: ``change_kind`` (the :class:`Change` value), ``mailbox_names`` (tuple).
    """
    compared = insights.previous_run_id is not None
    order = {change: i for i, change in enumerate(_CHANGE_ORDER)}
    listed = [t for t in insights.tenants if _is_listed_change(t, compared)]
    listed.sort(key=lambda t: (order.get(t.change, len(order)), t.name.casefold(), t.tenant_id))
    rows: list[dict[str, Any]] = []
    for t in listed:
        gap = t.closed_gap if t.change is Change.FIXED or t.open_gap is None else t.open_gap
        names = tuple(m.display_name for m in t.new_shared_mailboxes)
        rows.append(
            {
                "tenant": t.name,
                "tenant_id": t.tenant_id,
                "change": _change_label(t),
                "previous_status": t.previous_status.value if t.previous_status is not None else "",
                "status": t.status.value,
                "previous_seen_at": t.previous_seen_at,
                "new_shared_mailboxes": len(names),
                "new_shared_mailbox_names": "; ".join(names),
                **_gap_values(t, gap),
                "change_kind": t.change.value,
                "mailbox_names": names,
            }
        )
    note = (
        "Nothing changed since the previous run."
        if compared
        else "First run: nothing to compare (history starts with this run)."
    )
    return _table("Changes", CHANGE_COLUMNS, rows, note)


def _trend_columns() -> tuple[Column, ...]:
    """The Trend table's columns: the run, its tenants by status, gaps, billed mailboxes and cost."""
    return (
        Column("started_at", "Run started (UTC)", ColumnKind.DATETIME),
        Column("run_id", "Run ID"),
        Column("mode", "Mode"),
        Column("tenants", "Tenants", ColumnKind.COUNT),
        *(Column(f"status_{s.value}", STATUS_INFO[s].label, ColumnKind.COUNT) for s in STATUS_ORDER),
        Column("gaps", "Tenants with a gap", ColumnKind.COUNT),
        Column("billed_shared_mailboxes", "Shared mailboxes billed", ColumnKind.COUNT),
        Column("estimated_monthly_cost", "Estimated monthly cost", ColumnKind.MONEY),
        Column("tenants_with_unknown_cost", "Tenants with unknown cost", ColumnKind.COUNT),
    )


TREND_COLUMNS: Final = _trend_columns()


def trend_rows(insights: RunInsights) -> Table:
    """One row per run of the trend (up to the last 30 complete runs), oldest first, ending with this run.

    Helper columns: ``currency``, ``this_run`` (True for the run the report is about).
    """
    rows = [
        {
            "started_at": p.started_at,
            "run_id": p.run_id,
            "mode": p.mode.value if p.mode is not None else "unknown",
            "tenants": p.tenants,
            **{f"status_{s.value}": int(p.by_status.get(s, 0)) for s in STATUS_ORDER},
            "gaps": p.gaps,
            "billed_shared_mailboxes": p.billed_shared_mailboxes,
            "estimated_monthly_cost": p.estimated_monthly_cost,
            "tenants_with_unknown_cost": p.tenants_with_unknown_cost,
            "currency": p.currency,
            "this_run": p.run_id == insights.run_id,
        }
        for p in insights.trend
    ]
    return _table("Trend", TREND_COLUMNS, rows, "No complete run in the history yet.")


def history_figures(insights: Insights) -> tuple[Figure, ...]:
    """The history's headline figures (keys ``history.*``): the previous run, how many tenants changed
    which way, the accrued cost of the open gaps and the trend's length. One figure with the reason when
    history is unavailable; none without history."""
    if insights is None:
        return ()
    if isinstance(insights, HistoryUnavailable):
        return (Figure("history.unavailable", "History", history_notice(insights)),)
    open_gaps = insights.open_gaps
    partial = sum(
        1
        for t in open_gaps
        if t.open_gap is not None
        and (
            t.open_gap.accrued_cost is None
            or not t.open_gap.cost_complete
            or t.open_gap.currency != insights.currency
        )
    )
    accrued_note = (
        f"at least: {partial} open gap(s) have an unknown or partly unknown cost" if partial else ""
    )
    new_mailboxes = sum(len(t.new_shared_mailboxes) for t in insights.tenants)
    previous = Figure(
        "history.previous_run_at",
        "Previous run (UTC)",
        insights.previous_run_at,
        ColumnKind.DATETIME,
        "first run: nothing to compare" if insights.previous_run_at is None else "",
    )
    totals = (
        Figure("history.open_gaps", "Open gaps", len(open_gaps), ColumnKind.COUNT),
        Figure(
            "history.accrued_cost_total",
            "Accrued since the gaps opened",
            insights.accrued_cost_total,
            ColumnKind.MONEY,
            accrued_note,
        ),
        Figure("history.trend_runs", "Runs in the trend", len(insights.trend), ColumnKind.COUNT),
    )
    if insights.previous_run_id is None:
        return (previous, *totals)  # no change counts: there is nothing to compare with
    return (
        previous,
        Figure("history.new_gaps", "New gaps", len(insights.new_gaps), ColumnKind.COUNT),
        Figure("history.fixed_gaps", "Gaps fixed", len(insights.fixed_gaps), ColumnKind.COUNT),
        Figure(
            "history.status_changes", "Other status changes", len(insights.status_changes), ColumnKind.COUNT
        ),
        Figure("history.new_shared_mailboxes", "New shared mailboxes", new_mailboxes, ColumnKind.COUNT),
        Figure(
            "history.unknown",
            "Tenants not audited this run",
            len(insights.unknown),
            ColumnKind.COUNT,
            "errors: whether they changed is unknown" if insights.unknown else "",
        ),
        *totals,
    )


def _plain(value: object) -> object:
    """A merged cell back in the rows' conventions: pandas fills missing cells with NaN / NaT (here:
    None) and may turn datetimes into Timestamps (here: datetime)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value


# --- helpers -------------------------------------------------------------------------------------------------


def _with_anchors(run: RunResult) -> list[tuple[TenantResult, str]]:
    tenants = ordered_tenants(run)
    anchors = _anchors(tenants)
    return [(tenant, anchors[i]) for i, tenant in enumerate(tenants)]


def _table(name: str, columns: tuple[Column, ...], rows: list[dict[str, Any]], empty_note: str = "") -> Table:
    keys = [c.key for c in columns]
    extra = [k for k in (rows[0] if rows else {}) if k not in keys]
    frame = pd.DataFrame(rows, columns=[*keys, *extra], dtype=object)
    return Table(name, columns, frame, empty_note)
