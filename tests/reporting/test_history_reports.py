"""History in the reports: the HTML sections and the Excel sheets, rendered from insights read back from a
real history database (tests/reporting/history_sample.py), compared with those insights figure by figure
and cell by cell; and what the reports show without history, or when it is unavailable."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.worksheet.worksheet import Worksheet

from auditor.history import Change, HistoryUnavailable, RunInsights
from auditor.model import RunResult, Status
from auditor.reporting import rows
from auditor.reporting.excel import HISTORY_SHEETS, SHEETS, excel_text, render_excel, sheet_names
from auditor.reporting.html import render_html, render_html_text
from auditor.reporting.text import mark_controls
from tests.reporting.history_sample import ADATUM, KEPT_MAILBOXES, NORTHWIND, history_runs, record_history
from tests.reporting.sample import HOSTILE_TENANT_ID, HOSTILE_TENANT_NAME, XSS_PAYLOADS, sample_run
from tests.reporting.test_html import _Tree


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, RunInsights, Path]:
    out = tmp_path_factory.mktemp("history-report")
    insights = record_history(out / "history.sqlite")
    run = history_runs()[-1]
    render_html(run, out / "audit.html", insights=insights)
    render_excel(run, out / "audit.xlsx", insights=insights)
    return run, insights, out


@pytest.fixture(scope="module")
def insights(history: tuple[RunResult, RunInsights, Path]) -> RunInsights:
    return history[1]


@pytest.fixture(scope="module")
def tree(history: tuple[RunResult, RunInsights, Path]) -> _Tree:
    return _Tree((history[2] / "audit.html").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workbook(history: tuple[RunResult, RunInsights, Path]) -> openpyxl.Workbook:
    return openpyxl.load_workbook(history[2] / "audit.xlsx")


def _figure(tree: _Tree, key: str) -> Any:
    (element,) = [e for e in tree.with_attr("data-figure") if e.attrs["data-figure"] == key]
    return element


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


# --- the sample history is what the tests assume --------------------------------------------------------------


def test_the_sample_history(insights: RunInsights) -> None:
    assert [t.name for t in insights.new_gaps] == [HOSTILE_TENANT_NAME]
    assert [t.name for t in insights.fixed_gaps] == [ADATUM]
    assert insights.status_changes == ()
    assert len(insights.trend) == 3
    assert insights.accrued_cost_total > 0


# --- HTML ------------------------------------------------------------------------------------------------


def test_changes_section_lists_exactly_the_changes(tree: _Tree, insights: RunInsights) -> None:
    (section,) = tree.all("section", id="changes")
    assert "Changes since the previous run" in section.text()
    assert insights.previous_run_at is not None
    assert _figure(tree, "history.previous_run_at").attrs["datetime"] == insights.previous_run_at.isoformat()
    rows_ = [e for e in section.iter() if e.tag == "tr" and "data-change" in e.attrs]
    assert {(r.attrs["data-tenant-id"], r.attrs["data-change"]) for r in rows_} == {
        (HOSTILE_TENANT_ID, Change.NEW_GAP.value),
        (insights.fixed_gaps[0].tenant_id, Change.FIXED.value),
    }
    for key, expected in (
        ("history.new_gaps", 1),
        ("history.fixed_gaps", 1),
        ("history.status_changes", 0),
        ("history.new_shared_mailboxes", len(insights.new_gaps[0].new_shared_mailboxes)),
        ("history.unknown", len(insights.unknown)),
    ):
        assert int(_figure(tree, key).attrs["data-value"]) == expected, key


def test_hostile_mailbox_names_in_the_changes_are_text(tree: _Tree, insights: RunInsights) -> None:
    (section,) = tree.all("section", id="changes")
    names = [e.text() for e in section.iter() if e.tag == "li"]
    # Control characters are shown as visible [U+XXXX] markers (auditor.reporting.text).
    expected = [mark_controls(m.display_name) for m in insights.new_gaps[0].new_shared_mailboxes]
    assert names == expected
    assert all(p in names for p in XSS_PAYLOADS[KEPT_MAILBOXES:])
    assert not [e for e in section.iter() if e.tag in ("img", "script", "svg")]
    assert HOSTILE_TENANT_NAME in section.text()


def test_accrued_total_and_gap_ages_equal_the_insights(tree: _Tree, insights: RunInsights) -> None:
    total = _figure(tree, "history.accrued_cost_total")
    assert float(total.attrs["data-value"]) == insights.accrued_cost_total
    assert total.text() == rows.format_money(insights.accrued_cost_total, "GBP")
    cells = {
        row.attrs["data-tenant-id"]: {c.attrs["data-key"]: c for c in row.children if "data-key" in c.attrs}
        for row in tree.all("tr")
        if "data-tenant-id" in row.attrs and row.parent is not None
    }
    table = {e.attrs["data-tenant-id"]: e for e in tree.all("tr") if e.attrs.get("data-status")}
    headers = [th.attrs["data-key"] for th in tree.all("th") if "data-key" in th.attrs]
    assert "gap_days" in headers and "gap_accrued_cost" in headers
    days_at, cost_at = headers.index("gap_days"), headers.index("gap_accrued_cost")
    for tenant in insights.open_gaps:
        assert tenant.open_gap is not None
        row = [c for c in table[tenant.tenant_id].children if c.tag in ("th", "td")]
        assert float(row[days_at].attrs["data-value"]) == round(tenant.open_gap.days_open, 2)
        accrued = row[cost_at].attrs["data-value"]
        assert (None if accrued == "" else float(accrued)) == tenant.open_gap.accrued_cost
    assert cells is not None
    # Northwind's gap is six days old, and its detail says since when.
    northwind = next(t for t in insights.open_gaps if t.name == NORTHWIND)
    assert northwind.open_gap is not None
    (detail,) = tree.all("details", data_tenant_id=northwind.tenant_id)
    (gap,) = [e for e in detail.iter() if e.attrs.get("data-figure") == "gap"]
    assert northwind.open_gap.first_seen.isoformat() in [e.attrs.get("datetime") for e in gap.iter()]
    assert rows.format_money(northwind.open_gap.accrued_cost, "GBP") in gap.text()


def test_the_gap_columns_sort_as_numbers(tree: _Tree) -> None:
    for key in ("gap_days", "gap_accrued_cost"):
        (th,) = tree.all("th", data_key=key)
        assert th.attrs["data-sort-type"] == "number"


def test_trend_chart_and_its_table(tree: _Tree, insights: RunInsights) -> None:
    (section,) = tree.all("section", id="trend")
    assert "Trend over the last 3 runs" in section.text()
    charts = [e for e in section.iter() if e.tag == "svg"]
    assert [c.attrs["data-chart"] for c in charts] == ["trend-cost", "trend-gaps"]
    for chart in charts:
        assert chart.attrs["role"] == "img"
        assert [e.tag for e in chart.children[:2]] == ["title", "desc"]
        points = [e for e in chart.iter() if e.tag == "circle"]
        assert len(points) == len(insights.trend)
    (table,) = tree.all("table", id="trend-table")
    assert "visually-hidden" in table.attrs["class"]
    run_rows = [e for e in table.iter() if e.tag == "tr" and "data-run-id" in e.attrs]
    assert [r.attrs["data-run-id"] for r in run_rows] == [p.run_id for p in insights.trend]
    for row, point in zip(run_rows, insights.trend, strict=True):
        values = [c.attrs["data-value"] for c in row.children if "data-value" in c.attrs]
        assert [int(values[0]), float(values[1])] == [point.gaps, point.estimated_monthly_cost]


def test_the_page_stays_self_contained_with_history(tree: _Tree) -> None:
    assert len(tree.all("script")) == 1 and len(tree.all("style")) == 1
    assert not tree.all("img")
    for element in tree.root.iter():
        href = element.attrs.get("href")
        assert href is None or href.startswith("#") or href.startswith("https://login.microsoftonline.com/")


def test_first_run_says_there_is_nothing_to_compare(tmp_path: Path) -> None:
    first = history_runs()[0]
    insights = record_history(tmp_path / "h.sqlite", (first,))
    tree = _Tree(render_html_text(first, insights=insights))
    (section,) = tree.all("section", id="changes")
    assert "first run: nothing to compare" in section.text()
    assert section.text().casefold().count("nothing to compare") == 1  # said once, not twice
    assert not tree.all("table", id="changes-table")
    assert "Trend over the last 1 run" in tree.all("section", id="trend")[0].text()


def test_without_history_the_page_is_as_before(hostile_run: RunResult, html_text: str) -> None:
    assert render_html_text(hostile_run, insights=None) == render_html_text(hostile_run)
    tree = _Tree(html_text)
    assert not tree.all("section", id="changes") and not tree.all("section", id="trend")
    assert not [th for th in tree.all("th") if th.attrs.get("data-key", "").startswith("gap_")]


def test_history_unavailable_shows_the_reason(hostile_run: RunResult) -> None:
    text = render_html_text(hostile_run, insights=HistoryUnavailable("the history database is locked <b>"))
    tree = _Tree(text)
    notices = [e.text() for e in tree.with_attr("data-history-notice")]
    assert notices == ["history unavailable: the history database is locked <b>"] * 2
    assert "&lt;b&gt;" in text
    assert not [th for th in tree.all("th") if th.attrs.get("data-key", "").startswith("gap_")]


# --- Excel ------------------------------------------------------------------------------------------------


def _records(sheet: Worksheet) -> list[dict[str, Any]]:
    values = list(sheet.iter_rows(values_only=True))
    header = [str(h) for h in values[0]]
    return [dict(zip(header, row, strict=True)) for row in values[1:]]


def _text(value: object) -> str | None:
    return excel_text(value) or None


def _money(value: float | None) -> float | str:
    return "unknown" if value is None else value


def test_sheets_with_history(workbook: openpyxl.Workbook) -> None:
    assert workbook.sheetnames == ["Summary", "Changes", *SHEETS[1:], "Trend"]
    assert tuple(workbook.sheetnames) == sheet_names(RunInsights("r", datetime.now(UTC), "GBP", (), ()))
    for title in HISTORY_SHEETS:
        sheet = workbook[title]
        assert sheet.freeze_panes in ("A2", "B2")
        assert len(sheet.tables) == 1
        assert sheet["A1"].font.bold


def test_changes_sheet_matches_the_insights(workbook: openpyxl.Workbook, insights: RunInsights) -> None:
    sheet = workbook["Changes"]
    assert [c.value for c in sheet[1]] == [c.header for c in rows.CHANGE_COLUMNS]
    records = _records(sheet)
    expected = [*insights.new_gaps, *insights.fixed_gaps]
    assert [r["Tenant ID"] for r in records] == [t.tenant_id for t in expected]
    for record, tenant in zip(records, expected, strict=True):
        gap = tenant.open_gap if tenant.change is Change.NEW_GAP else tenant.closed_gap
        assert gap is not None
        names = "; ".join(m.display_name for m in tenant.new_shared_mailboxes)
        assert record == {
            "Tenant": _text(tenant.name),
            "Tenant ID": tenant.tenant_id,
            "Change": rows.CHANGE_LABELS[tenant.change],
            "Previous status": tenant.previous_status.value if tenant.previous_status else None,
            "Status": tenant.status.value,
            "Previous status seen (UTC)": _naive(tenant.previous_seen_at)
            if tenant.previous_seen_at
            else None,
            "New shared mailboxes": len(tenant.new_shared_mailboxes),
            "New shared mailbox names": _text(names),
            "Gap first seen (UTC)": _naive(gap.first_seen),
            "Gap open (days)": round(gap.days_open, 2),
            "Accrued while open": _money(gap.accrued_cost),
            "Accrued cost is a minimum": "No" if gap.cost_complete else "Yes",
        }
    # Hostile names stay text: never a formula.
    for row in sheet.iter_rows(min_row=2):
        for cell in row:
            assert cell.data_type != "f"


def test_trend_sheet_matches_the_insights(workbook: openpyxl.Workbook, insights: RunInsights) -> None:
    sheet = workbook["Trend"]
    assert [c.value for c in sheet[1]] == [c.header for c in rows.TREND_COLUMNS]
    records = _records(sheet)
    assert len(records) == len(insights.trend)
    for record, point in zip(records, insights.trend, strict=True):
        assert record["Run started (UTC)"] == _naive(point.started_at)
        assert record["Run ID"] == point.run_id
        assert record["Tenants"] == point.tenants
        for status in Status:
            assert record[rows.STATUS_INFO[status].label] == point.by_status.get(status, 0)
        assert record["Tenants with a gap"] == point.gaps
        assert record["Shared mailboxes billed"] == point.billed_shared_mailboxes
        assert record["Estimated monthly cost"] == point.estimated_monthly_cost
    assert sheet["A2"].number_format == "yyyy-mm-dd hh:mm:ss"
    cost_column = [c.header for c in rows.TREND_COLUMNS].index("Estimated monthly cost") + 1
    assert sheet.cell(row=2, column=cost_column).number_format == '"£"#,##0.00'


def test_tenants_sheet_has_the_gap_columns(workbook: openpyxl.Workbook, insights: RunInsights) -> None:
    sheet = workbook["Tenants"]
    headers = [c.value for c in sheet[1]]
    for column in rows.GAP_COLUMNS:
        assert column.header in headers
    records = {r["Tenant ID"]: r for r in _records(sheet)}
    for tenant in insights.tenants:
        record = records[tenant.tenant_id]
        gap = tenant.open_gap
        if gap is None:
            assert record["Gap first seen (UTC)"] is None
            assert record["Accrued since the gap opened"] == (
                "unknown" if tenant.change is Change.UNKNOWN else 0
            )
            continue
        assert record["Gap first seen (UTC)"] == _naive(gap.first_seen)
        assert record["Gap open (days)"] == round(gap.days_open, 2)
        assert record["Runs with the gap"] == gap.runs
        assert record["Accrued since the gap opened"] == _money(gap.accrued_cost)


def test_summary_sheet_has_the_accrued_total(workbook: openpyxl.Workbook, insights: RunInsights) -> None:
    figures = {
        row[0]: row[1] for row in workbook["Summary"].iter_rows(min_row=4, max_col=2, values_only=True)
    }
    assert figures["Accrued since the gaps opened"] == insights.accrued_cost_total
    assert figures["New gaps"] == 1 and figures["Gaps fixed"] == 1


def test_excel_without_history_and_with_history_unavailable(tmp_path: Path) -> None:
    run = sample_run()
    render_excel(run, tmp_path / "plain.xlsx")
    assert openpyxl.load_workbook(tmp_path / "plain.xlsx").sheetnames == list(SHEETS)
    render_excel(run, tmp_path / "off.xlsx", insights=HistoryUnavailable("=disabled in the config"))
    book = openpyxl.load_workbook(tmp_path / "off.xlsx")
    assert book.sheetnames == ["Summary", "Changes", *SHEETS[1:], "Trend"]
    for title in HISTORY_SHEETS:
        assert book[title]["A1"].value == "history unavailable: =disabled in the config"
        assert book[title]["A1"].data_type == "s"
    assert not re.search("gap", " ".join(str(c.value) for c in book["Tenants"][1]), re.IGNORECASE)
