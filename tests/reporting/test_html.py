"""The HTML report, checked as a document (no browser): self-contained, escaped, figures from audit.json,
accessible structure, custom templates, atomic writes. The browser tests are in test_html_browser.py."""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from auditor.model import RunResult
from auditor.reporting.html import MAILBOXES_SHOWN, render_html, render_html_text
from auditor.reporting.templates import TemplateDirectoryError, builtin_templates_dir
from auditor.reporting.text import mark_controls
from tests.reporting.disk_full import write_with_a_full_disk
from tests.reporting.sample import FORMULA_PAYLOADS, HOSTILE_TENANT_NAME, XSS_PAYLOADS, sample_run


class _Element:
    def __init__(self, tag: str, attrs: dict[str, str], parent: _Element | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[_Element] = []
        self.text_parts: list[str] = []

    def text(self) -> str:
        return "".join(self.text_parts) + "".join(c.text() for c in self.children)

    def iter(self) -> list[_Element]:
        out = [self]
        for child in self.children:
            out.extend(child.iter())
        return out


_VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr", "area", "col", "embed"}


class _Tree(HTMLParser):
    """A tiny DOM: enough to find elements by tag / attribute and read their text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Element("#root", {}, None)
        self.current = self.root
        self.raw_blocks: dict[str, list[str]] = {"script": [], "style": []}
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = _Element(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(element)
        if tag not in _VOID:
            self.current = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(_Element(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node: _Element | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        if self.current.tag in self.raw_blocks:
            self.raw_blocks[self.current.tag].append(data)
        self.current.text_parts.append(data)

    def all(self, tag: str | None = None, **attrs: str) -> list[_Element]:
        found = []
        for element in self.root.iter():
            if tag is not None and element.tag != tag:
                continue
            if all(element.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()):
                found.append(element)
        return found

    def with_attr(self, name: str) -> list[_Element]:
        return [e for e in self.root.iter() if name in e.attrs]


@pytest.fixture(scope="module")
def tree(html_text: str) -> _Tree:
    return _Tree(html_text)


# --- self-contained --------------------------------------------------------------------------------------


def test_one_inline_style_and_one_inline_script(tree: _Tree, html_text: str) -> None:
    assert len(tree.all("script")) == 1
    assert len(tree.all("style")) == 1
    assert html_text.lower().count("<script") == 1
    assert not tree.all("link")


def test_nothing_is_fetched(tree: _Tree) -> None:
    for element in tree.root.iter():
        for name in ("src", "srcset", "poster", "data", "action", "formaction", "background", "ping"):
            assert name not in element.attrs, (element.tag, name)
        href = element.attrs.get("href")
        if href is not None:
            assert href.startswith("#") or re.match(
                r"https://login\.microsoftonline\.com/[^/]+/adminconsent\?", href
            )
    css = re.sub(r"/\*.*?\*/", "", "".join(tree.raw_blocks["style"]), flags=re.DOTALL)
    assert "@import" not in css
    assert "url(" not in css
    assert "@font-face" not in css


def test_csp_allows_exactly_the_inline_blocks(tree: _Tree) -> None:
    (meta,) = tree.all("meta", http_equiv="Content-Security-Policy")
    policy = dict(p.strip().split(" ", 1) for p in meta.attrs["content"].split(";"))
    assert policy["default-src"] == "'none'"

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert policy["style-src"] == digest("".join(tree.raw_blocks["style"]))
    assert policy["script-src"] == digest("".join(tree.raw_blocks["script"]))
    assert "unsafe-inline" not in meta.attrs["content"]


def test_the_page_carries_no_template_indentation(tree: _Tree, html_text: str) -> None:
    # A tenth of a 1,000-tenant page was the template's indentation, which the browser collapses anyway
    # (the page has no preformatted text); the inline script and style keep theirs (test above: CSP hashes).
    outside = re.sub(r"<(script|style)\b.*?</\1\s*>", "<block/>", html_text, flags=re.DOTALL | re.IGNORECASE)
    assert not re.search(r"\n[ \t]", outside)
    assert "\n\n" not in outside
    assert re.search(r"\n[ \t]+\S", "".join(tree.raw_blocks["script"])), "the script is still indented"


# --- tenant data is text ---------------------------------------------------------------------------------


def test_no_markup_from_tenant_data(tree: _Tree, html_text: str) -> None:
    assert not tree.all("img")
    assert len(tree.all("svg")) == 2  # the two charts
    handlers = [(e.tag, a) for e in tree.root.iter() for a in e.attrs if a.startswith("on")]
    assert handlers == []
    assert "javascript:" not in "".join(e.attrs.get("href", "") for e in tree.root.iter())
    assert "<script>alert" not in html_text
    assert "<img src=x" not in html_text
    assert "<b>vip</b>" not in html_text


@pytest.mark.parametrize("payload", [*XSS_PAYLOADS, *FORMULA_PAYLOADS, HOSTILE_TENANT_NAME])
def test_hostile_strings_are_shown_as_text(tree: _Tree, payload: str) -> None:
    body = tree.all("body")[0].text()
    assert payload in body


def test_template_syntax_in_data_is_not_evaluated(html_text: str) -> None:
    assert "{{ 7*7 }}" in html_text


# --- figures ---------------------------------------------------------------------------------------------


def test_summary_figures_equal_audit_json(tree: _Tree, audit_json: dict[str, Any]) -> None:
    summary = audit_json["summary"]
    figures = {e.attrs["data-figure"]: e for e in tree.with_attr("data-figure")}
    for key in ("tenants", "shared_mailboxes", "billed_shared_mailboxes", "tenants_with_unknown_cost"):
        assert int(figures[f"summary.{key}"].attrs["data-value"]) == summary[key]
        assert figures[f"summary.{key}"].text().strip() == f"{summary[key]:,}"
    cost = figures["summary.estimated_monthly_cost"]
    assert float(cost.attrs["data-value"]) == summary["estimated_monthly_cost"]
    assert cost.attrs["data-currency"] == summary["currency"] == "GBP"
    assert cost.text().strip() == f"£{summary['estimated_monthly_cost']:,.2f}"
    for status, count in summary["by_status"].items():
        assert int(figures[f"summary.by_status.{status}"].attrs["data-value"]) == count
    assert figures["run.id"].text() == audit_json["run"]["id"]
    assert audit_json["run"]["tool_version"] in figures["run.tool_version"].text()


def test_tenant_rows_equal_audit_json(tree: _Tree, audit_json: dict[str, Any]) -> None:
    (table,) = tree.all("table", id="tenants-table")
    rows = [r for r in table.iter() if r.tag == "tr" and "data-tenant-id" in r.attrs]
    tenants = {t["tenant_id"]: t for t in audit_json["tenants"]}
    assert sorted(r.attrs["data-tenant-id"] for r in rows) == sorted(tenants)
    headers = [th.attrs["data-key"] for th in table.iter() if th.tag == "th" and "data-key" in th.attrs]
    for row in rows:
        tenant = tenants[row.attrs["data-tenant-id"]]
        assert row.attrs["data-status"] == tenant["status"]
        cells = [c for c in row.children if c.tag in ("td", "th")]
        by_key = dict(zip(headers, cells, strict=True))
        assert by_key["name"].text() == tenant["name"]
        cost = tenant["billing"]["monthly_cost"]
        assert by_key["monthly_cost"].attrs["data-value"] == ("" if cost is None else str(cost))
        assert by_key["monthly_cost"].text() == ("unknown" if cost is None else f"£{cost:,.2f}")
        billed = tenant["billing"]["billed_shared_mailboxes"]
        assert by_key["billed_shared_mailboxes"].attrs["data-value"] == (
            "" if billed is None else str(billed)
        )
        assert by_key["findings"].text() == str(len(tenant["findings"]))


def test_every_tenant_has_a_detail_section(tree: _Tree, audit_json: dict[str, Any]) -> None:
    details = {d.attrs["data-tenant-id"]: d for d in tree.all("details")}
    assert len(details) == len(audit_json["tenants"])
    for tenant in audit_json["tenants"]:
        section = details[tenant["tenant_id"]]
        text = section.text()
        assert tenant["name"] in text
        for finding in tenant["findings"]:
            assert finding["code"] in text
        listed = tenant["shared_mailboxes"] or []
        for mailbox in listed[:MAILBOXES_SHOWN]:
            assert mark_controls(mailbox["display_name"]) in text  # controls shown as [U+XXXX]
        more = [e for e in section.iter() if "data-mailboxes-more" in e.attrs]
        if len(listed) > MAILBOXES_SHOWN:  # a long list is summarised: the rest are in the workbook
            body = [
                e
                for e in section.iter()
                if e.tag == "tbody" and e.parent and "mailboxes" in e.parent.attrs.get("class", "")
            ]
            assert len([e for e in body[0].iter() if e.tag == "tr"]) == MAILBOXES_SHOWN
            assert more[0].attrs["data-mailboxes-more"] == str(len(listed) - MAILBOXES_SHOWN)
            assert "audit.xlsx" in more[0].text()
        else:
            assert not more
        if tenant["error"]:
            assert tenant["error"]["hint"] in text
        if tenant["remediation"]["action"] != "none":
            assert tenant["remediation"]["detail"] in text
        anchors = [a.attrs["href"] for a in tree.all("a") if a.attrs.get("href") == "#" + section.attrs["id"]]
        assert anchors, "the tenants table links to the detail"


def test_consent_link_where_exchange_permission_is_missing(tree: _Tree, audit_json: dict[str, Any]) -> None:
    consent = [a for a in tree.all("a") if "adminconsent" in a.attrs.get("href", "")]
    missing = [
        t
        for t in audit_json["tenants"]
        if any(f["code"] == "EXCHANGE_PERMISSION_MISSING" for f in t["findings"])
    ]
    assert len(consent) == len(missing) == 2
    for link in consent:
        assert link.attrs["href"].startswith("https://login.microsoftonline.com/")
        assert link.attrs["rel"] == "noreferrer noopener"


def test_errors_section_lists_each_hint(tree: _Tree, audit_json: dict[str, Any]) -> None:
    (table,) = tree.all("table", id="errors-table")
    text = table.text()
    errors = [t for t in audit_json["tenants"] if t["error"]]
    assert len([r for r in table.iter() if r.tag == "tr" and "data-tenant-id" in r.attrs]) == len(errors)
    for tenant in errors:
        assert tenant["error"]["hint"] in text
        assert tenant["error"]["code"] in text


def test_remediation_section_equals_audit_json(tree: _Tree, audit_json: dict[str, Any]) -> None:
    (table,) = tree.all("table", id="remediation-table")
    rows = {
        r.attrs["data-tenant-id"]: r for r in table.iter() if r.tag == "tr" and "data-tenant-id" in r.attrs
    }
    acted = {t["tenant_id"]: t for t in audit_json["tenants"] if t["remediation"]["action"] != "none"}
    assert sorted(rows) == sorted(acted)
    for tenant_id, row in rows.items():
        assert row.attrs["data-action"] == acted[tenant_id]["remediation"]["action"]
        assert acted[tenant_id]["remediation"]["detail"] in row.text()
    (figure,) = [e for e in tree.with_attr("data-figure") if e.attrs["data-figure"] == "summary.remediation"]
    expected = ", ".join(f"{n} {action}" for action, n in audit_json["summary"]["remediation"].items())
    assert figure.text() == expected.replace("_", " ")


def test_no_remediation_section_when_it_did_not_run() -> None:
    from auditor.model import Remediation

    run = sample_run()
    quiet = replace(run, tenants=tuple(replace(t, remediation=Remediation()) for t in run.tenants))
    text = render_html_text(quiet)
    assert 'id="remediation-table"' not in text
    assert 'href="#remediation"' not in text


def test_what_to_do_next_per_status_present(tree: _Tree, audit_json: dict[str, Any]) -> None:
    (section,) = tree.all("section", id="next-steps")
    text = section.text()
    assert "start a full sync in the USS dashboard" in text
    present = [s for s, n in audit_json["summary"]["by_status"].items() if n]
    assert len([e for e in section.iter() if e.tag == "dt"]) == len(present)


# --- accessibility structure -------------------------------------------------------------------------------


def test_document_structure_is_accessible(tree: _Tree) -> None:
    assert tree.all("html")[0].attrs["lang"] == "en"
    assert len(tree.all("h1")) == 1
    assert tree.all("main")
    levels = [int(e.tag[1]) for e in tree.root.iter() if re.fullmatch(r"h[1-6]", e.tag)]
    assert levels[0] == 1
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), "no skipped heading level"
    for table in tree.all("table"):
        assert any(c.tag == "caption" for c in table.children), "every table has a caption"
        for th in (e for e in table.iter() if e.tag == "th"):
            assert th.attrs.get("scope") in ("col", "row")
    labels = {e.attrs["for"] for e in tree.all("label")}
    for control in [*tree.all("input"), *tree.all("select")]:
        assert control.attrs["id"] in labels
    sortable = [th for th in tree.all("th") if "data-key" in th.attrs]
    assert sortable
    assert all(any(c.tag == "button" for c in th.children) for th in sortable)
    for svg in tree.all("svg"):
        assert svg.attrs["role"] == "img"
        assert svg.attrs["aria-labelledby"]


def test_ids_are_unique(tree: _Tree) -> None:
    ids = [e.attrs["id"] for e in tree.with_attr("id")]
    assert len(ids) == len(set(ids))


# --- rendering -------------------------------------------------------------------------------------------


def test_rendering_is_deterministic(hostile_run: RunResult) -> None:
    assert render_html_text(hostile_run) == render_html_text(hostile_run)


def test_an_empty_run_renders() -> None:
    text = render_html_text(replace(sample_run(), tenants=()))
    assert "Showing 0 of 0 tenants." in text
    assert "No tenant costs anything this month." in text


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path, hostile_run: RunResult) -> None:
    target = tmp_path / "audit.html"
    target.write_text("previous report")
    broken = tmp_path / "templates"
    broken.mkdir()
    (broken / "audit.html.j2").write_text("{{ no_such_variable }}")
    with pytest.raises(TemplateDirectoryError, match="no_such_variable"):
        render_html(hostile_run, target, templates=broken)
    assert target.read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html", "templates"]
    render_html(hostile_run, target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html", "templates"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_write_that_fails_half_way_keeps_the_old_report(tmp_path: Path) -> None:
    """A full disk half-way through the new page: the old report is intact, no temporary file is left."""
    target = tmp_path / "audit.html"
    target.write_text("previous report")
    child = write_with_a_full_disk("auditor.reporting.html:render_html", target)
    assert child.returncode != 0 and "File too large" in child.stderr, child.stderr[-2000:]
    assert target.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["audit.html"]


def test_templates_are_found_from_another_directory(tmp_path: Path, hostile_run: RunResult) -> None:
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert builtin_templates_dir().is_absolute()
        render_html(hostile_run, Path("out.html"))
    finally:
        os.chdir(cwd)
    assert (tmp_path / "out.html").stat().st_size > 10_000


# --- custom templates (branding) -----------------------------------------------------------------------------


def test_user_css_replaces_the_builtin_and_is_allowed_by_the_csp(
    tmp_path: Path, hostile_run: RunResult
) -> None:
    (tmp_path / "audit.css").write_text("body { color: #123456; }")
    tree = _Tree(render_html_text(hostile_run, templates=tmp_path))
    assert "".join(tree.raw_blocks["style"]) == "body { color: #123456; }"
    digest = base64.b64encode(hashlib.sha256(b"body { color: #123456; }").digest()).decode()
    assert f"'sha256-{digest}'" in tree.all("meta", http_equiv="Content-Security-Policy")[0].attrs["content"]


def test_user_template_extends_the_builtin_one(tmp_path: Path, hostile_run: RunResult) -> None:
    (tmp_path / "audit.html.j2").write_text(
        '{% extends "builtin/audit.html.j2" %}{% block brand %}<p class="brand">{{ "Contoso <MSP>" }}</p>{% endblock %}'
    )
    text = render_html_text(hostile_run, templates=tmp_path)
    assert '<p class="brand">Contoso &lt;MSP&gt;</p>' in text
    assert 'id="tenants-table"' in text


def test_user_template_errors_are_reported(tmp_path: Path, hostile_run: RunResult) -> None:
    (tmp_path / "audit.html.j2").write_text("{% if %}")
    with pytest.raises(TemplateDirectoryError, match=r"audit\.html\.j2"):
        render_html_text(hostile_run, templates=tmp_path)


def test_assets_that_would_break_out_are_refused(tmp_path: Path, hostile_run: RunResult) -> None:
    (tmp_path / "audit.js").write_text("var x = '</script><script>alert(1)</script>';")
    with pytest.raises(TemplateDirectoryError, match=r"audit\.js"):
        render_html_text(hostile_run, templates=tmp_path)


def test_templates_dir_must_exist(tmp_path: Path, hostile_run: RunResult) -> None:
    with pytest.raises(TemplateDirectoryError, match="not a directory"):
        render_html_text(hostile_run, templates=tmp_path / "missing")
