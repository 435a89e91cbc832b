"""The history sections of audit.html in headless Chromium: the trend chart and the changes list render,
the gap columns sort, and the page still fetches nothing and runs nothing from tenant data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.history import RunInsights
from auditor.reporting.html import render_html
from tests.reporting.cdp import Browser, Page
from tests.reporting.history_sample import history_runs, record_history
from tests.reporting.test_html_browser import _no_trouble, browser

__all__ = ["browser"]


@pytest.fixture(scope="module")
def history_page_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunInsights]:
    out = tmp_path_factory.mktemp("history-browser")
    insights = record_history(out / "history.sqlite")
    return render_html(history_runs()[-1], out / "audit.html", insights=insights), insights


@pytest.fixture
def page(browser: Browser, history_page_path: tuple[Path, RunInsights]) -> Iterator[Page]:
    tab = browser.new_page(width=1280, height=900)
    tab.goto(history_page_path[0].as_uri())
    yield tab
    tab.close()


def test_trend_chart_and_changes_render(page: Page, history_page_path: tuple[Path, RunInsights]) -> None:
    path, insights = history_page_path
    state = page.evaluate(
        """({charts: Array.from(document.querySelectorAll('#trend svg[data-chart]')).map(svg => {
                const box = svg.getBoundingClientRect();
                return {id: svg.dataset.chart, width: box.width, height: box.height,
                        points: svg.querySelectorAll('circle').length,
                        line: svg.querySelector('polyline') !== null,
                        label: svg.getAttribute('aria-labelledby').split(' ')
                          .map(id => document.getElementById(id).textContent).join(' | ')}; }),
             changes: Array.from(document.querySelectorAll('#changes-table tbody tr'))
                .map(r => [r.dataset.change, r.querySelector('th').innerText]),
             heading: document.getElementById('trend-heading').innerText,
             accrued: document.querySelector('[data-figure="history.accrued_cost_total"]').dataset.value})"""
    )
    assert [c["id"] for c in state["charts"]] == ["trend-cost", "trend-gaps"]
    for chart in state["charts"]:
        assert chart["width"] > 200 and chart["height"] > 50
        assert chart["points"] == len(insights.trend) and chart["line"]
        assert "last 3 run(s)" in chart["label"]
    assert state["heading"] == "Trend over the last 3 runs"
    assert [c[0] for c in state["changes"]] == ["new_gap", "fixed"]
    assert float(state["accrued"]) == insights.accrued_cost_total
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    page.send("Page.printToPDF", {})
    _no_trouble(page, path.as_uri())
    assert page.evaluate("document.images.length") == 0
    assert page.evaluate("document.scripts.length") == 1


def test_sort_by_accrued_cost(page: Page) -> None:
    page.click('th[data-key="gap_accrued_cost"] button')
    values = page.evaluate(
        """(() => { const at = Array.from(document.querySelectorAll('#tenants-table thead th'))
                      .findIndex(th => th.dataset.key === 'gap_accrued_cost');
                    return Array.from(document.querySelectorAll('#tenants-table tbody tr[data-tenant-id]'))
                      .map(r => r.cells[at].dataset.value); })()"""
    )
    known = [float(v) for v in values if v]
    assert known == sorted(known, reverse=True) and known[0] > 0
    assert values[len(known) :] == [""] * (len(values) - len(known)), "unknown sorts last"


@pytest.mark.parametrize("width", [1400, 1280])
def test_the_tenants_table_fits_without_scrolling_sideways(
    browser: Browser, history_page_path: tuple[Path, RunInsights], width: int
) -> None:
    # With the history columns the table used to overflow its frame at 1,400 px.
    tab = browser.new_page(width=width, height=900)
    try:
        tab.goto(history_page_path[0].as_uri())
        scroll, client, columns = tab.evaluate(
            "(() => { const w = document.querySelector('#tenants .table-wrap');"
            " return [w.scrollWidth, w.clientWidth, document.querySelectorAll('#tenants-table thead th').length]; })()"
        )
    finally:
        tab.close()
    assert columns >= 10  # the history columns are there
    assert scroll <= client
