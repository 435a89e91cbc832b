"""audit.html in real headless Chromium (Debian's ``chromium``), driven over the DevTools protocol.

What a person relies on: the figures equal audit.json, sorting and filtering work with the keyboard
and the mouse, a tenant opens from a link, nothing is fetched from the network, tenant data that
attacks the page shows as text and runs nothing (with and without the page's CSP), and it prints.

Skipped only on a developer machine without ``/usr/bin/chromium`` (``$CHROMIUM`` overrides the path);
with ``CI`` set a missing browser fails the run instead, since ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.reporting.html import MAILBOXES_SHOWN
from tests.reporting.cdp import Browser, Page, chromium_path
from tests.reporting.sample import FORMULA_PAYLOADS, HOSTILE_TENANT_NAME, XSS_PAYLOADS

# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if not Path(executable).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{executable} is missing: CI must install Debian's chromium (see .ci/run)")
        pytest.skip(f"{executable} is not installed (apt-get install chromium); CI runs these tests")
    with Browser(executable) as running:
        yield running


@pytest.fixture
def page(browser: Browser, html_path: Path) -> Iterator[Page]:
    tab = browser.new_page(width=1280, height=900)
    tab.goto(html_path.as_uri())
    yield tab
    tab.close()


def _visible_rows(page: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate(
        """Array.from(document.querySelectorAll('#tenants-table tbody tr[data-tenant-id]'))
             .filter(r => !r.hidden)
             .map(r => ({id: r.dataset.tenantId, status: r.dataset.status,
                         name: r.querySelector('th').textContent,
                         cost: r.querySelector('[data-sort-value]') &&
                               r.cells[Array.from(document.querySelectorAll('#tenants-table thead th'))
                                 .findIndex(th => th.dataset.key === 'monthly_cost')].dataset.value}))"""
    )
    return rows


def _focus(page: Page, selector: str) -> None:
    page.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")


def _wait_until(page: Page, condition: str, timeout_ms: int = 3000) -> None:
    """Poll a JavaScript condition in the page (for effects of asynchronous events such as hashchange)."""
    met = page.evaluate(
        f"""new Promise(resolve => {{ const start = performance.now();
              (function check() {{ if ({condition}) resolve(true);
                else if (performance.now() - start > {timeout_ms}) resolve(false);
                else setTimeout(check, 10); }})(); }})"""
    )
    assert met, f"timed out waiting for: {condition}"


def _enter(page: Page) -> None:
    page.press("Enter", "Enter", 13, "\r")


def _no_trouble(page: Page, file_url: str) -> None:
    """Nothing fetched but the page itself, no dialog, no script error, no CSP violation."""
    requests = [e["params"]["request"]["url"] for e in page.events("Network.requestWillBeSent")]
    assert requests == [file_url]
    assert page.evaluate("performance.getEntriesByType('resource').length") == 0
    assert page.events("Page.javascriptDialogOpening") == []
    assert page.events("Runtime.exceptionThrown") == []
    problems = [e["params"]["entry"] for e in page.events("Log.entryAdded")]
    assert [p for p in problems if p.get("level") in ("error", "warning")] == []


# --- figures ---------------------------------------------------------------------------------------------


def test_figures_on_the_page_equal_audit_json(page: Page, audit_json: dict[str, Any]) -> None:
    figures = page.evaluate(
        """Object.fromEntries(Array.from(document.querySelectorAll('[data-figure]'))
             .map(e => [e.dataset.figure, {value: e.dataset.value ?? null, text: e.innerText.trim()}]))"""
    )
    summary = audit_json["summary"]
    cost = figures["summary.estimated_monthly_cost"]
    assert float(cost["value"]) == summary["estimated_monthly_cost"]
    assert cost["text"] == f"£{summary['estimated_monthly_cost']:,.2f}"
    for key in ("tenants", "shared_mailboxes", "billed_shared_mailboxes", "tenants_with_unknown_cost"):
        assert int(figures[f"summary.{key}"]["value"]) == summary[key]
        assert figures[f"summary.{key}"]["text"] == f"{summary[key]:,}"
    for status, count in summary["by_status"].items():
        assert figures[f"summary.by_status.{status}"]["text"] == str(count)
    assert figures["run.id"]["text"] == audit_json["run"]["id"]
    assert figures["scope"]["text"] == f"{summary['tenants']} tenants, mode {audit_json['run']['mode']}"

    rows = page.evaluate(
        """(() => { const keys = Array.from(document.querySelectorAll('#tenants-table thead th'))
                      .map(th => th.dataset.key);
             return Array.from(document.querySelectorAll('#tenants-table tbody tr[data-tenant-id]')).map(r =>
               Object.assign({_id: r.dataset.tenantId, _status: r.dataset.status},
                 Object.fromEntries(Array.from(r.cells).map((c, i) =>
                   [keys[i], {text: c.innerText.trim(), value: c.dataset.value ?? null}])))); })()"""
    )
    tenants = {t["tenant_id"]: t for t in audit_json["tenants"]}
    assert sorted(r["_id"] for r in rows) == sorted(tenants)
    for row in rows:
        tenant = tenants[row["_id"]]
        billing = tenant["billing"]
        assert row["_status"] == tenant["status"]
        assert (
            row["status"]["text"]
            == {
                "compliant": "Compliant",
                "non_compliant": "Non-compliant",
                "remediated": "Remediated",
                "not_connected": "Not connected",
                "ambiguous": "Ambiguous",
                "error": "Error",
            }[tenant["status"]]
        )
        assert row["name"]["text"] == tenant["name"]
        if billing["monthly_cost"] is None:
            assert row["monthly_cost"] == {"text": "unknown", "value": ""}
        else:
            assert float(row["monthly_cost"]["value"]) == billing["monthly_cost"]
            assert row["monthly_cost"]["text"] == f"£{billing['monthly_cost']:,.2f}"
        billed = billing["billed_shared_mailboxes"]
        assert row["billed_shared_mailboxes"]["text"] == ("unknown" if billed is None else f"{billed:,}")
        assert row["findings"]["text"] == str(len(tenant["findings"]))

    # The sum of the rows is the headline figure.
    known = [t["billing"]["monthly_cost"] for t in audit_json["tenants"] if t["billing"]["monthly_cost"]]
    assert round(sum(known), 2) == summary["estimated_monthly_cost"]


def test_a_tenants_detail_shows_its_figures(page: Page, audit_json: dict[str, Any]) -> None:
    fabrikam = next(t for t in audit_json["tenants"] if t["name"] == "Fabrikam Retail")
    anchor = f"tenant-{fabrikam['tenant_id']}"
    page.click(f'#tenants-table a[href="#{anchor}"]')
    _wait_until(page, f"document.getElementById({json.dumps(anchor)}).open")
    state = page.evaluate(
        f"""(() => {{ const d = document.getElementById({json.dumps(anchor)});
              return {{open: d.open, focused: document.activeElement === d.querySelector('summary'),
                       hash: location.hash, top: Math.round(d.getBoundingClientRect().top),
                       billing: d.querySelector('[data-figure=billing]').innerText,
                       census: Object.fromEntries(Array.from(d.querySelectorAll('[data-purpose]'))
                                 .map(c => [c.dataset.purpose, c.innerText])),
                       mailboxes: d.querySelectorAll('table.mailboxes tbody tr').length,
                       text: d.innerText}}; }})()"""
    )
    assert state["open"] and state["focused"]
    assert state["hash"] == f"#{anchor}"
    assert 0 <= state["top"] < 50  # scrolled to it
    billed = fabrikam["billing"]["billed_shared_mailboxes"]
    assert (
        state["billing"]
        == f"{billed} shared mailboxes billed as users × £2.50 = £{billed * 2.5:,.2f} a month"
    )
    assert {k: int(v) for k, v in state["census"].items()} == fabrikam["mailboxes"]
    # A long list is summarised in the page (every mailbox is in the workbook).
    assert state["mailboxes"] == min(len(fabrikam["shared_mailboxes"]), MAILBOXES_SHOWN)
    if len(fabrikam["shared_mailboxes"]) > MAILBOXES_SHOWN:
        assert f"And {len(fabrikam['shared_mailboxes']) - MAILBOXES_SHOWN} more" in state["text"]
    assert "<script>alert('owned')</script> Sales" in state["text"]
    for finding in fabrikam["findings"]:
        assert finding["code"] in state["text"]


def test_fragment_in_the_url_opens_that_tenant(browser: Browser, html_path: Path) -> None:
    tab = browser.new_page()
    try:
        anchor = "tenant-3c8f1e52-7a41-4d0b-9c6e-1f2a3b4c5d10"
        tab.goto(f"{html_path.as_uri()}#{anchor}")
        state = tab.evaluate(
            f"""(() => {{ const d = document.getElementById({json.dumps(anchor)});
                  return [d.open, window.scrollY > 0, document.querySelectorAll('details[open]').length,
                          d.querySelector('.consent a').href]; }})()"""
        )
        assert state[:3] == [True, True, 1]
        assert state[3].startswith(
            "https://login.microsoftonline.com/3c8f1e52-7a41-4d0b-9c6e-1f2a3b4c5d10/adminconsent"
        )
    finally:
        tab.close()


# --- sorting ---------------------------------------------------------------------------------------------


def test_sort_by_monthly_cost_with_the_keyboard(page: Page) -> None:
    _focus(page, 'th[data-key="monthly_cost"] button')
    _enter(page)
    costs = [r["cost"] for r in _visible_rows(page)]
    known = [float(c) for c in costs if c]
    assert known == sorted(known, reverse=True)
    assert costs[len(known) :] == [""] * (len(costs) - len(known)), "unknown cost sorts last"
    assert page.evaluate("document.querySelector('th[data-key=monthly_cost]').getAttribute('aria-sort')") == (
        "descending"
    )
    assert page.evaluate("document.getElementById('table-announcer').textContent") == (
        "Sorted by Monthly cost, descending."
    )
    page.press(" ", "Space", 32, " ")  # Space activates a button too
    costs = [r["cost"] for r in _visible_rows(page)]
    known = [float(c) for c in costs if c]
    assert known == sorted(known)
    assert costs[len(known) :] == [""] * (len(costs) - len(known)), "unknown cost stays last"
    headers = page.evaluate(
        "Array.from(document.querySelectorAll('#tenants-table thead th')).map(th => th.getAttribute('aria-sort'))"
    )
    assert headers.count("ascending") == 1 and headers.count("descending") == 0


def test_sort_by_name_with_the_mouse(page: Page, audit_json: dict[str, Any]) -> None:
    page.click('th[data-key="name"] button')
    names = [r["name"] for r in _visible_rows(page)]
    assert sorted(names) == sorted(t["name"] for t in audit_json["tenants"])
    plain = [n for n in names if n[0].isalpha()]
    assert plain == sorted(plain, key=str.casefold)
    page.click('th[data-key="name"] button')
    plain = [r["name"] for r in _visible_rows(page) if r["name"][0].isalpha()]
    assert plain == sorted(plain, key=str.casefold, reverse=True)


def test_sort_by_status_follows_urgency(page: Page) -> None:
    page.click('th[data-key="status"] button')
    statuses = [r["status"] for r in _visible_rows(page)]
    urgency = ["non_compliant", "error", "ambiguous", "remediated", "not_connected", "compliant"]
    assert statuses == sorted(statuses, key=urgency.index)


# --- filtering -------------------------------------------------------------------------------------------


def test_filter_by_status_with_the_keyboard(page: Page, audit_json: dict[str, Any]) -> None:
    _focus(page, "#filter-status")
    page.press("ArrowDown", "ArrowDown", 40)
    chosen = page.evaluate("document.getElementById('filter-status').value")
    assert chosen == "non_compliant"
    rows = _visible_rows(page)
    expected = [t for t in audit_json["tenants"] if t["status"] == chosen]
    assert sorted(r["id"] for r in rows) == sorted(t["tenant_id"] for t in expected)
    total = len(audit_json["tenants"])
    assert page.evaluate("document.getElementById('tenant-count').textContent") == (
        f"Showing {len(expected)} of {total} tenants."
    )


def test_filter_by_tag(page: Page, audit_json: dict[str, Any]) -> None:
    options = page.evaluate("Array.from(document.querySelectorAll('#filter-tag option')).map(o => o.value)")
    all_tags = sorted({tag for t in audit_json["tenants"] for tag in t["tags"]}, key=str.casefold)
    assert options == ["", *all_tags]
    for tag in ("gold", "<b>vip</b>"):
        page.evaluate(
            f"""(() => {{ const s = document.getElementById('filter-tag'); s.value = {json.dumps(tag)};
                  s.dispatchEvent(new Event('change')); }})()"""
        )
        rows = _visible_rows(page)
        expected = sorted(t["tenant_id"] for t in audit_json["tenants"] if tag in t["tags"])
        assert sorted(r["id"] for r in rows) == expected
        assert expected


def test_free_text_filter_and_clear(page: Page, audit_json: dict[str, Any]) -> None:
    _focus(page, "#filter-text")
    page.type_text("fabrikam")
    assert [r["name"] for r in _visible_rows(page)] == ["Fabrikam Retail"]
    page.type_text(" zzz-no-such-tenant")
    assert _visible_rows(page) == []
    assert page.evaluate("document.getElementById('tenants-empty').hidden") is False
    page.evaluate("document.getElementById('filter-text').value = ''")
    page.type_text("AUTH_FAILED")  # error codes are searchable, case-insensitively
    assert [r["name"] for r in _visible_rows(page)] == ["Relecloud"]
    page.click("#tenant-filters button[type=reset]")
    # A form's reset event fires before the fields are cleared: the page re-filters on the next tick.
    _wait_until(
        page, f"document.getElementById('tenant-count').dataset.shown === '{len(audit_json['tenants'])}'"
    )
    assert len(_visible_rows(page)) == len(audit_json["tenants"])
    assert page.evaluate("document.getElementById('tenants-empty').hidden") is True


def test_filters_combine(page: Page, audit_json: dict[str, Any]) -> None:
    page.evaluate(
        """(() => { const s = document.getElementById('filter-status'); s.value = 'compliant';
                    s.dispatchEvent(new Event('change'));
                    const t = document.getElementById('filter-tag'); t.value = 'gold';
                    t.dispatchEvent(new Event('change')); })()"""
    )
    expected = [
        t["name"] for t in audit_json["tenants"] if t["status"] == "compliant" and "gold" in t["tags"]
    ]
    assert sorted(r["name"] for r in _visible_rows(page)) == sorted(expected)


def test_status_card_filters_the_table(page: Page, audit_json: dict[str, Any]) -> None:
    page.click('button[data-filter-status="error"]')
    errors = sorted(t["tenant_id"] for t in audit_json["tenants"] if t["status"] == "error")
    assert sorted(r["id"] for r in _visible_rows(page)) == errors
    assert page.evaluate("document.activeElement.id") == "filter-status"


def test_sorting_keeps_the_filter(page: Page) -> None:
    page.evaluate(
        """(() => { const s = document.getElementById('filter-status'); s.value = 'non_compliant';
                    s.dispatchEvent(new Event('change')); })()"""
    )
    before = sorted(r["id"] for r in _visible_rows(page))
    page.click('th[data-key="name"] button')
    assert sorted(r["id"] for r in _visible_rows(page)) == before


# --- safety ----------------------------------------------------------------------------------------------


def test_the_page_makes_no_network_request(page: Page, html_path: Path) -> None:
    # Exercise everything that could load something: sorting, filtering, opening every tenant, printing.
    page.click('th[data-key="monthly_cost"] button')
    _focus(page, "#filter-text")
    page.type_text("a")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    page.send("Page.printToPDF", {})
    _no_trouble(page, html_path.as_uri())


def test_the_harness_does_see_dialogs_and_requests(browser: Browser, tmp_path: Path) -> None:
    # Positive control for the tests above: an unsafe page is caught.
    unsafe = tmp_path / "unsafe.html"
    unsafe.write_text('<p>x</p><img src="http://127.0.0.1:9/x.png"><script>alert(1)</script>')
    tab = browser.new_page()
    try:
        tab.goto(unsafe.as_uri())
        assert len(tab.events("Page.javascriptDialogOpening")) == 1
        urls = [e["params"]["request"]["url"] for e in tab.events("Network.requestWillBeSent")]
        assert "http://127.0.0.1:9/x.png" in urls
    finally:
        tab.close()


@pytest.mark.parametrize("bypass_csp", [False, True], ids=["with-csp", "escaping-alone"])
def test_hostile_tenant_data_shows_as_text_and_runs_nothing(
    browser: Browser, html_path: Path, bypass_csp: bool
) -> None:
    tab = browser.new_page()
    try:
        # With the CSP bypassed, only the escaping stands between the data and the page.
        tab.send("Page.setBypassCSP", {"enabled": bypass_csp})
        tab.goto(html_path.as_uri())
        tab.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        _focus(tab, "#filter-text")
        tab.type_text("hostile")
        state = tab.evaluate(
            """({images: document.images.length,
                 scripts: document.scripts.length,
                 handlers: Array.from(document.querySelectorAll('*')).filter(e =>
                   Array.from(e.attributes).some(a => a.name.startsWith('on'))).length,
                 jsLinks: Array.from(document.querySelectorAll('[href]')).filter(e =>
                   e.getAttribute('href').trim().toLowerCase().startsWith('javascript')).length,
                 text: document.body.innerText,
                 title: document.title})"""
        )
        assert state["images"] == 0
        assert state["scripts"] == 1
        assert state["handlers"] == 0
        assert state["jsLinks"] == 0
        for payload in (*XSS_PAYLOADS, *FORMULA_PAYLOADS, HOSTILE_TENANT_NAME):
            assert payload in state["text"], payload
        assert tab.events("Page.javascriptDialogOpening") == []
        assert tab.events("Runtime.exceptionThrown") == []
        assert [r["name"] for r in _visible_rows(tab)] == [HOSTILE_TENANT_NAME]
    finally:
        tab.close()


# --- accessibility and print -------------------------------------------------------------------------------


_CONTRAST_JS = """
(() => {
  const lum = c => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(v => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const background = e => { for (; e; e = e.parentElement) {
      const bg = getComputedStyle(e).backgroundColor;
      if (bg && !bg.startsWith('rgba(0, 0, 0, 0)') && bg !== 'transparent') return bg; }
    return 'rgb(255, 255, 255)'; };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const selector = '.badge, .status-card .label, .status-card .count, .muted, .note, caption, a, th, td, .run-meta dt, label';
  const checked = Array.from(document.querySelectorAll(selector))
    .filter(e => e instanceof HTMLElement && e.offsetParent !== null && e.innerText.trim())
    .map(e => ({what: e.className || e.tagName, ratio: ratio(getComputedStyle(e).color, background(e))}));
  return {checked: checked.length, failing: checked.filter(r => r.ratio < 4.5)};
})()
"""


def test_text_contrast_meets_wcag_aa(page: Page) -> None:
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    result = page.evaluate(_CONTRAST_JS)
    assert result["failing"] == []
    assert result["checked"] > 500


def test_keyboard_users_see_focus_and_can_skip_to_the_table(page: Page) -> None:
    page.press("Tab", "Tab", 9)
    first = page.evaluate("[document.activeElement.className, document.activeElement.getAttribute('href')]")
    assert first == ["skip-link", "#tenants"]
    assert page.evaluate("document.activeElement.getBoundingClientRect().left >= 0")  # visible when focused
    for _ in range(40):
        page.press("Tab", "Tab", 9)
        if page.evaluate("document.activeElement.classList.contains('sort')"):
            break
    else:
        pytest.fail("the sort buttons are not reachable with Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"


def test_print_opens_every_tenant_and_hides_the_controls(page: Page) -> None:
    page.evaluate(
        """window.addEventListener('beforeprint', () => {
             window.__openDuringPrint = document.querySelectorAll('details.tenant[open]').length; });"""
    )
    pdf = page.send("Page.printToPDF", {"printBackground": True})
    assert pdf["data"].startswith("JVBER")  # %PDF
    total = page.evaluate("document.querySelectorAll('details.tenant').length")
    assert page.evaluate("window.__openDuringPrint") == total
    assert page.evaluate("document.querySelectorAll('details.tenant[open]').length") == 0  # restored
    page.send("Emulation.setEmulatedMedia", {"media": "print"})
    assert page.evaluate("getComputedStyle(document.getElementById('tenant-filters')).display") == "none"
    page.send("Emulation.setEmulatedMedia", {"media": ""})


def test_the_page_works_without_javascript(browser: Browser, html_path: Path) -> None:
    tab = browser.new_page()
    try:
        tab.send("Emulation.setScriptExecutionDisabled", {"value": True})
        tab.goto(html_path.as_uri())
        state = tab.evaluate(
            "[document.querySelectorAll('#tenants-table tbody tr[data-tenant-id]').length,"
            " document.getElementById('tenant-filters').hidden]"
        )
        assert state[0] > 0
        assert state[1] is True  # controls that need scripts stay hidden
    finally:
        tab.close()
