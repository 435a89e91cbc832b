"""The HTML report (``audit.html``): one self-contained page for the billing team and account managers.

Everything the page needs is inside it: the CSS and JavaScript are inlined from ``audit.css`` and
``audit.js`` beside the templates, the charts are inline SVG, and a Content-Security-Policy allows
exactly those two blocks (by hash) and nothing else, so the page fetches nothing, works offline and as
an e-mail attachment, and a tenant-supplied string that somehow escaped autoescaping still could not run.

All figures and rows come from :mod:`auditor.reporting.rows`; this module only lays them out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import jinja2
from markupsafe import Markup

from auditor.history.insights import Change, RunInsights
from auditor.model import RunResult, Severity, Status, TenantResult
from auditor.reporting import rows
from auditor.reporting.atomic import atomic_write_text
from auditor.reporting.rows import ColumnKind
from auditor.reporting.templates import (
    MAIN_TEMPLATE,
    TemplateDirectoryError,
    check_templates_dir,
    template_environment,
)

__all__ = ["COST_CHART_TOP", "MAILBOXES_SHOWN", "render_html", "render_html_text"]

# How many tenants the cost chart names before summing the rest into one bar.
COST_CHART_TOP: Final = 10
# Shared mailboxes listed in a tenant's details; a longer list is summarised (all are in audit.xlsx).
MAILBOXES_SHOWN: Final = 10

_STYLE_FILE: Final = "audit.css"
_SCRIPT_FILE: Final = "audit.js"

# Chart geometry (SVG user units; the SVG scales to the page width).
_CHART_WIDTH: Final = 560
_LABEL_WIDTH: Final = 190
_VALUE_WIDTH: Final = 90
_BAR_HEIGHT: Final = 22
_BAR_GAP: Final = 8
_LABEL_CHARS: Final = 24
_STATUS_LABEL_WIDTH: Final = 120
# Trend charts: a plot area inside margins for the axis labels.
_TREND_HEIGHT: Final = 200
_TREND_LEFT: Final = 110
_TREND_RIGHT: Final = 30
_TREND_TOP: Final = 16
_TREND_BOTTOM: Final = 36

_SEVERITY_LABELS: Final = {s: s.value.capitalize() for s in Severity}


def render_html(
    run: RunResult, out_path: Path, *, templates: Path | None = None, insights: rows.Insights = None
) -> Path:
    """Render ``run`` as a self-contained HTML page written atomically to ``out_path``; returns it.

    ``templates`` is a directory whose files override the built-in templates (branding).
    ``insights`` (from :mod:`auditor.history`) adds the "Changes since the previous run" and "Trend"
    sections and the gap ages and accrued costs; a ``HistoryUnavailable`` shows its reason there instead;
    None leaves them out (the page is then exactly as without history).
    Raises :class:`~auditor.reporting.templates.TemplateDirectoryError` for an unusable template set.
    """
    return atomic_write_text(Path(out_path), render_html_text(run, templates=templates, insights=insights))


@functools.lru_cache(maxsize=8)
def _environment(templates: Path | None) -> jinja2.Environment:
    # One environment per template directory, so a template is compiled once per process (jinja2 still
    # reloads a template file that changed on disk).
    env = template_environment(templates)
    env.filters.update(
        money=rows.format_money,
        count=rows.format_count,
        utc=rows.format_datetime,
        days=rows.format_days,
        status_label=_status_label,
        severity_label=_severity_label,
    )
    return env


def render_html_text(run: RunResult, *, templates: Path | None = None, insights: rows.Insights = None) -> str:
    """The HTML page for ``run`` as a string (what :func:`render_html` writes)."""
    env = _environment(None if templates is None else check_templates_dir(templates).resolve())
    style = _inline_asset(env, _STYLE_FILE, "</style")
    script = _inline_asset(env, _SCRIPT_FILE, "</script")
    # Static files from the template directory (not data), checked above to hold no closing tag.
    inline = {"style": Markup(style), "script": Markup(script)}  # noqa: S704
    try:
        return _compact(
            env.get_template(MAIN_TEMPLATE).render(
                **_context(run, insights), **inline, csp=_csp(style, script)
            )
        )
    except jinja2.TemplateError as exc:
        where = f" ({exc.filename}:{exc.lineno})" if isinstance(exc, jinja2.TemplateSyntaxError) else ""
        raise TemplateDirectoryError(
            f"the report template failed to render{where}: {exc}",
            hint="Fix the template (see the built-in ones for the variables available).",
        ) from exc


_RAW_BLOCK = re.compile(r"<(script|style)\b.*?</\1\s*>", re.S | re.I)
_INDENT = re.compile(r"\n[ \t]*(?:\n[ \t]*)*")


def _compact(html: str) -> str:
    """The page without the template's indentation and blank lines (a tenth of a 1,000-tenant page), which
    a browser collapses anyway: the page has no preformatted text. Script and style blocks are kept byte for
    byte (the Content-Security-Policy holds their hashes)."""
    out: list[str] = []
    end = 0
    for block in _RAW_BLOCK.finditer(html):
        out += [_INDENT.sub("\n", html[end : block.start()]), block.group(0)]
        end = block.end()
    out.append(_INDENT.sub("\n", html[end:]))
    return "".join(out)


# --- context ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bar:
    label: str  # possibly shortened, for the chart
    title: str  # full text, for the tooltip and screen readers
    value_text: str
    y: float
    width: float
    css_class: str
    href: str = ""


@dataclass(frozen=True)
class _Chart:
    id: str
    title: str
    description: str
    height: float
    bars: tuple[_Bar, ...]
    label_width: int = _LABEL_WIDTH
    width: int = _CHART_WIDTH
    bar_height: int = _BAR_HEIGHT


def _context(run: RunResult, insights: rows.Insights = None) -> dict[str, Any]:
    summary = run.summary()
    tenants = rows.tenant_rows(run, insights)
    findings = rows.finding_rows(run)
    remediation = rows.remediation_rows(run)
    errors = rows.error_rows(run)
    statuses = rows.status_rows(run)
    figures = {f.key: f for f in rows.run_figures(run)}

    by_anchor: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for name, table in (("findings", findings), ("remediation", remediation)):
        for record in table.records():
            by_anchor[record["anchor"]][name].append(record)

    ordered = rows.ordered_tenants(run)
    tenant_records = tenants.records()
    history = _history(insights, {r["tenant_id"]: r["anchor"] for r in tenant_records})
    closed = history["closed_gaps"] if history is not None else {}
    details = [
        _tenant_detail(tenant, record, by_anchor[record["anchor"]], closed.get(tenant.tenant_id))
        for tenant, record in zip(ordered, tenant_records, strict=True)
    ]
    overview = [c for c in tenants.columns if c.overview]
    tags = sorted({tag for tenant in run.tenants for tag in tenant.tags}, key=str.casefold)
    status_counts = {r["status"]: r["tenants"] for r in statuses.records()}
    return {
        "run": run,
        "summary": summary,
        "figures": figures,
        "duration": _duration(run.started_at, run.finished_at),
        "currency": run.currency,
        "tenants": tenants,
        "tenant_records": [_with_sort_values(record, overview) for record in tenant_records],
        "overview_columns": overview,
        "tag_options": tags,
        "status_options": [rows.STATUS_INFO[s] for s in rows.STATUS_ORDER if status_counts.get(s.value)],
        "status_table": statuses,
        "status_counts": status_counts,
        "details": details,
        "errors": errors,
        "remediation": remediation,
        "findings_total": len(findings),
        "remediation_total": len(remediation),
        "cost_chart": _cost_chart(run),
        "status_chart": _status_chart(statuses.records()),
        "kinds": ColumnKind,
        "status_info": rows.STATUS_INFO,
        "history": history,
    }


def _tenant_detail(
    tenant: TenantResult,
    record: dict[str, Any],
    related: dict[str, list[dict[str, Any]]],
    closed_gap: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sp = tenant.service_principal
    return {
        "closed_gap": closed_gap,
        "tenant": tenant,
        "row": record,
        "anchor": record["anchor"],
        "info": rows.STATUS_INFO[tenant.status],
        "next_step": record["next_step"],
        "identification": rows.identification_text(sp.identified_by) if sp is not None else "",
        "checks": rows.tenant_checks(tenant),
        "findings": related["findings"],
        "consent_link": rows.consent_link(tenant),
        "census": tenant.mailboxes.counts() if tenant.mailboxes is not None else None,
        # A long list is summarised: the first few here, every one in the workbook and audit.json.
        "mailboxes": list(rows.tenant_mailbox_records(tenant, record["anchor"], MAILBOXES_SHOWN)),
        "mailbox_total": len(tenant.mailboxes.shared_mailboxes) if tenant.mailboxes is not None else 0,
        "remediation": related["remediation"][0] if related["remediation"] else None,
    }


def _with_sort_values(record: dict[str, Any], columns: Sequence[rows.Column]) -> dict[str, Any]:
    """Add ``sort:<key>`` entries the table's sort script reads (numbers as numbers, unknown empty)."""
    status_rank = {status.value: i for i, status in enumerate(rows.STATUS_ORDER)}
    out = dict(record)
    for column in columns:
        value = record[column.key]
        if column.key == "status":
            sort: object = status_rank[value]
        elif column.key == "highest_severity":
            sort = record["severity_rank"]
        elif column.kind in (ColumnKind.COUNT, ColumnKind.MONEY, ColumnKind.DAYS):
            sort = "" if value is None else value
        else:
            sort = str(value).casefold()
        out[f"sort:{column.key}"] = sort
    return out


def _history(insights: rows.Insights, anchors: dict[str, str]) -> dict[str, Any] | None:
    """What the history sections show: None without history; the notice when it is unavailable."""
    if insights is None:
        return None
    notice = rows.history_notice(insights)
    if not isinstance(insights, RunInsights):
        return {"notice": notice, "closed_gaps": {}}
    changes = rows.change_rows(insights)
    change_records = [dict(r, anchor=anchors.get(r["tenant_id"], "")) for r in changes.records()]
    trend = rows.trend_rows(insights)
    trend_records = trend.records()
    unknown = [
        {"name": t.name, "anchor": anchors.get(t.tenant_id, ""), "previous_status": t.previous_status}
        for t in insights.unknown
    ]
    return {
        "notice": None,
        "insights": insights,
        "figures": {f.key: f for f in rows.history_figures(insights)},
        "changes": changes,
        "change_records": change_records,
        "closed_gaps": {r["tenant_id"]: r for r in change_records if r["change_kind"] == Change.FIXED.value},
        "unknown": unknown,
        "trend": trend,
        "trend_records": trend_records,
        "trend_charts": (
            _trend_chart(
                "trend-cost",
                f"Estimated monthly cost, last {len(trend_records)} run(s)",
                trend_records,
                "estimated_monthly_cost",
                lambda v, r: rows.format_money(v, str(r["currency"])),
                "trend-cost",
            ),
            _trend_chart(
                "trend-gaps",
                f"Tenants with a gap, last {len(trend_records)} run(s)",
                trend_records,
                "gaps",
                lambda v, r: f"{int(v):,} tenant(s)",
                "trend-gaps",
            ),
        ),
    }


@dataclass(frozen=True)
class _Point:
    x: float
    y: float
    title: str
    current: bool


@dataclass(frozen=True)
class _TrendChart:
    id: str
    title: str
    description: str
    points: tuple[_Point, ...]
    polyline: str
    y_ticks: tuple[tuple[float, str], ...]  # (y, label)
    x_ticks: tuple[tuple[float, str], ...]  # (x, label)
    css_class: str
    width: int = _CHART_WIDTH
    height: int = _TREND_HEIGHT
    left: int = _TREND_LEFT
    top: int = _TREND_TOP
    bottom: int = _TREND_HEIGHT - _TREND_BOTTOM


def _trend_chart(
    chart_id: str,
    title: str,
    records: Sequence[dict[str, Any]],
    key: str,
    text: Callable[[float, dict[str, Any]], str],
    css_class: str,
) -> _TrendChart:
    """A line chart of ``records[key]`` per run, oldest on the left; every point has a tooltip title."""
    values = [float(r[key] or 0) for r in records]
    top_value = max(values, default=0.0) or 1.0
    plot_width = _CHART_WIDTH - _TREND_LEFT - _TREND_RIGHT
    plot_height = _TREND_HEIGHT - _TREND_TOP - _TREND_BOTTOM
    base = _TREND_HEIGHT - _TREND_BOTTOM
    step = plot_width / (len(values) - 1) if len(values) > 1 else 0.0
    points = []
    for i, (value, record) in enumerate(zip(values, records, strict=True)):
        x = _TREND_LEFT + (i * step if len(values) > 1 else plot_width / 2)
        y = base - plot_height * value / top_value
        label = f"{rows.format_datetime(record['started_at'])}: {text(value, record)}"
        points.append(_Point(round(x, 1), round(y, 1), label, bool(record["this_run"])))
    ticks_x: list[tuple[float, str]] = []
    if points:
        ticks_x.append((points[0].x, rows.format_datetime(records[0]["started_at"])[:10]))
        if len(points) > 1:
            ticks_x.append((points[-1].x, rows.format_datetime(records[-1]["started_at"])[:10]))
    zero_label = text(0.0, records[-1]) if records else ""
    top_label = text(top_value, records[-1]) if records else ""
    description = "; ".join(p.title for p in points) or "No runs yet."
    return _TrendChart(
        id=chart_id,
        title=title,
        description=description,
        points=tuple(points),
        polyline=" ".join(f"{p.x},{p.y}" for p in points),
        y_ticks=((float(_TREND_TOP), top_label), (float(base), zero_label)),
        x_ticks=tuple(ticks_x),
        css_class=css_class,
    )


def _duration(started: datetime, finished: datetime) -> str:
    seconds = max(0, round((finished - started).total_seconds()))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


def _cost_chart(run: RunResult) -> _Chart:
    bars = rows.cost_by_tenant(run, COST_CHART_TOP)
    # The scale comes from the tenants' own bars: the "N other tenants" bar sums hundreds of tenants and
    # would squash ten equal costs to hairlines. That bar is drawn at most full width (its value is printed).
    top = max((b.value for b in bars if b.anchor), default=0.0) or max((b.value for b in bars), default=0.0)
    drawn = []
    for i, bar in enumerate(bars):
        text = rows.format_money(bar.value, run.currency)
        drawn.append(
            _Bar(
                label=_shorten(bar.label),
                title=f"{bar.label}: {text} a month",
                value_text=text,
                y=i * (_BAR_HEIGHT + _BAR_GAP),
                width=_bar_width(bar.value, top),
                css_class="bar-cost" if bar.anchor else "bar-other",
                href=f"#{bar.anchor}" if bar.anchor else "",
            )
        )
    description = "; ".join(b.title for b in drawn) or "No tenant costs anything this month."
    return _Chart(
        "cost-chart",
        f"Monthly cost of shared mailboxes billed as users, top {COST_CHART_TOP} tenants",
        description,
        _chart_height(len(drawn)),
        tuple(drawn),
    )


def _status_chart(status_records: Sequence[dict[str, Any]]) -> _Chart:
    top = max((r["tenants"] for r in status_records), default=0)
    drawn = tuple(
        _Bar(
            label=r["label"],
            title=f"{r['label']}: {r['tenants']} tenant(s)",
            value_text=str(r["tenants"]),
            y=i * (_BAR_HEIGHT + _BAR_GAP),
            width=_bar_width(r["tenants"], top, _STATUS_LABEL_WIDTH),
            css_class=f"bar-status status-{r['status']}",
        )
        for i, r in enumerate(status_records)
    )
    return _Chart(
        "status-chart",
        "Tenants by status",
        "; ".join(b.title for b in drawn),
        _chart_height(len(drawn)),
        drawn,
        label_width=_STATUS_LABEL_WIDTH,
    )


def _bar_width(value: float, top: float, label_width: int = _LABEL_WIDTH) -> float:
    room = _CHART_WIDTH - label_width - _VALUE_WIDTH
    if top <= 0 or value <= 0:
        return 0.0
    return round(min(float(room), max(2.0, room * value / top)), 1)


def _chart_height(bars: int) -> float:
    return max(1, bars) * (_BAR_HEIGHT + _BAR_GAP)


def _shorten(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1].rstrip() + "…"


# --- filters, assets, CSP ---------------------------------------------------------------------------------


def _status_label(status: str | Status) -> str:
    return rows.STATUS_INFO[Status(status)].label


def _severity_label(severity: str | Severity) -> str:
    return _SEVERITY_LABELS[Severity(severity)] if severity else ""


def _inline_asset(env: jinja2.Environment, name: str, forbidden: str) -> str:
    """The raw text of ``audit.css`` / ``audit.js`` (not rendered: they are static), checked to be safe
    to inline: a closing tag inside would end the element early."""
    assert env.loader is not None
    try:
        source, _filename, _uptodate = env.loader.get_source(env, name)
    except jinja2.TemplateNotFound as exc:
        raise TemplateDirectoryError(f"the report asset {name} is missing") from exc
    if forbidden in source.lower():
        raise TemplateDirectoryError(f"{name} must not contain {forbidden}>: it is inlined into the page")
    return source


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


def _csp(style: str, script: str) -> str:
    """Allow only the page's own inline style and script; no fetches, frames, forms or plugins.

    (``frame-ancestors`` is not listed: a ``<meta>`` policy cannot carry it.)
    """
    return "; ".join(
        (
            "default-src 'none'",
            f"style-src {_sha256(style)}",
            f"script-src {_sha256(script)}",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
        )
    )
