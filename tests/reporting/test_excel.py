"""The Excel workbook, read back with openpyxl and compared with audit.json cell by cell.

The expected values are taken from the saved audit.json document itself, not from the rows layer, so
a mistake in that layer cannot hide here.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.worksheet.worksheet import Worksheet

from auditor.reporting.excel import SHEETS, excel_text, render_excel
from auditor.reporting.rows import (
    ERROR_COLUMNS,
    FINDING_COLUMNS,
    REMEDIATION_COLUMNS,
    SHARED_MAILBOX_COLUMNS,
    TENANT_COLUMNS,
)
from tests.reporting.disk_full import write_with_a_full_disk
from tests.reporting.sample import FORMULA_PAYLOADS, sample_run

Row = dict[str, Any]


@pytest.fixture(scope="module")
def workbook(xlsx_path: Path) -> openpyxl.Workbook:
    return openpyxl.load_workbook(xlsx_path)


def _records(sheet: Worksheet) -> list[Row]:
    rows = list(sheet.iter_rows(values_only=True))
    header = [str(h) for h in rows[0]]
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]


def _count(value: int | None) -> int | str:
    return "unknown" if value is None else value


def _text(value: object) -> str | None:
    """A text cell as read back: as stored by the writer; an empty text is an empty cell."""
    return excel_text(value) or None


def _flag(value: bool) -> str:
    return "Yes" if value else "No"


def test_sheets_in_order(workbook: openpyxl.Workbook) -> None:
    assert workbook.sheetnames == list(SHEETS)


def test_tenants_sheet_matches_audit_json(workbook: openpyxl.Workbook, audit_json: dict[str, Any]) -> None:
    sheet = workbook["Tenants"]
    assert [c.value for c in sheet[1]] == [c.header for c in TENANT_COLUMNS]
    records = {r["Tenant ID"]: r for r in _records(sheet)}
    assert len(records) == len(audit_json["tenants"])
    for tenant in audit_json["tenants"]:
        row = records[tenant["tenant_id"]]
        billing = tenant["billing"]
        sp = tenant["service_principal"]
        expected = {
            "Tenant": _text(tenant["name"]),
            "Tenant ID": tenant["tenant_id"],
            "Status": tenant["status"],
            "Monthly cost": _count(billing["monthly_cost"]),
            "Billed shared mailboxes": _count(billing["billed_shared_mailboxes"]),
            "Price per mailbox": billing["price_per_mailbox"],
            "Currency": billing["currency"],
            "Shared mailboxes found": _count(
                None if tenant["shared_mailboxes"] is None else len(tenant["shared_mailboxes"])
            ),
            "Findings": len(tenant["findings"]),
            "Highest severity": _text(_highest(tenant["findings"])),
            "Finding codes": _text(", ".join(dict.fromkeys(f["code"] for f in tenant["findings"]))),
            "Remediation": tenant["remediation"]["action"],
            "Error": tenant["error"]["code"] if tenant["error"] else None,
            "Tags": _text(", ".join(tenant["tags"])),
            "Vendor app": _text(sp["display_name"]) if sp else None,
            "Vendor appId": sp["app_id"] if sp else None,
            "Identified by": sp["identified_by"] if sp else None,
        }
        for header, value in expected.items():
            assert row[header] == value, (tenant["name"], header)
        assert row["What to do next"]


def _highest(findings: list[dict[str, Any]]) -> str:
    order = ["critical", "high", "medium", "low", "info"]
    return min((f["severity"] for f in findings), key=order.index, default="")


def test_findings_sheet_matches_audit_json(workbook: openpyxl.Workbook, audit_json: dict[str, Any]) -> None:
    sheet = workbook["Findings"]
    assert [c.value for c in sheet[1]] == [c.header for c in FINDING_COLUMNS]
    got = Counter(
        (r["Tenant ID"], r["Tenant"], r["Status"], r["Severity"], r["Code"], r["Finding and what to do"])
        for r in _records(sheet)
    )
    want = Counter(
        (t["tenant_id"], _text(t["name"]), t["status"], f["severity"], f["code"], _text(f["message"]))
        for t in audit_json["tenants"]
        for f in t["findings"]
    )
    assert got == want
    links = [r for r in _records(sheet) if r["Admin-consent link"] is not None]
    assert {r["Code"] for r in links} == {"EXCHANGE_PERMISSION_MISSING"}
    for record in links:
        url = record["Admin-consent link"]
        assert url.startswith("https://login.microsoftonline.com/")
        assert url.endswith("/adminconsent?client_id=7e1b3f0c-2d54-4c8e-9a61-5f0c3b2a9d17")
        assert record["Tenant ID"] in url


def test_shared_mailboxes_sheet_matches_audit_json(
    workbook: openpyxl.Workbook, audit_json: dict[str, Any]
) -> None:
    sheet = workbook["Shared mailboxes"]
    assert [c.value for c in sheet[1]] == [c.header for c in SHARED_MAILBOX_COLUMNS]
    got = {(r["Tenant ID"], r["Object ID"]): r for r in _records(sheet)}
    expected_count = 0
    for tenant in audit_json["tenants"]:
        billed = bool(tenant["billing"]["billed_shared_mailboxes"])
        for mailbox in tenant["shared_mailboxes"] or ():
            expected_count += 1
            row = got[(tenant["tenant_id"], mailbox["id"])]
            assert row == {
                "Tenant": _text(tenant["name"]),
                "Tenant ID": tenant["tenant_id"],
                "Tenant status": tenant["status"],
                "Display name": _text(mailbox["display_name"]),
                "User principal name": _text(mailbox["user_principal_name"]),
                "Mail": _text(mailbox["mail"] or ""),
                "Billed as a user": _flag(billed),
                "Sign-in allowed": _flag(mailbox["account_enabled"]),
                "Licensed": _flag(mailbox["licensed"]),
                "Object ID": mailbox["id"],
            }
    assert len(got) == expected_count


def test_remediation_sheet_matches_audit_json(
    workbook: openpyxl.Workbook, audit_json: dict[str, Any]
) -> None:
    sheet = workbook["Remediation"]
    assert [c.value for c in sheet[1]] == [c.header for c in REMEDIATION_COLUMNS]
    got = {r["Tenant ID"]: r for r in _records(sheet)}
    acted = [t for t in audit_json["tenants"] if t["remediation"]["action"] != "none"]
    assert sorted(got) == sorted(t["tenant_id"] for t in acted)
    for tenant in acted:
        remediation = tenant["remediation"]
        at = remediation["at"]
        assert got[tenant["tenant_id"]] == {
            "Tenant": _text(tenant["name"]),
            "Tenant ID": tenant["tenant_id"],
            "Status": tenant["status"],
            "Outcome": remediation["action"],
            "Detail": _text(remediation["detail"]),
            "At (UTC)": datetime.fromisoformat(at).replace(tzinfo=None) if at else None,
            "Role assignment ID": _text(remediation["role_assignment_id"] or ""),
            "Graph request-id": _text(remediation["request_id"] or ""),
        }


def test_errors_sheet_matches_audit_json(workbook: openpyxl.Workbook, audit_json: dict[str, Any]) -> None:
    sheet = workbook["Errors"]
    assert [c.value for c in sheet[1]] == [c.header for c in ERROR_COLUMNS]
    got = {r["Tenant ID"]: r for r in _records(sheet)}
    errors = [t for t in audit_json["tenants"] if t["error"]]
    assert sorted(got) == sorted(t["tenant_id"] for t in errors)
    for tenant in errors:
        assert got[tenant["tenant_id"]] == {
            "Tenant": _text(tenant["name"]),
            "Tenant ID": tenant["tenant_id"],
            "Error": tenant["error"]["code"],
            "What happened": _text(tenant["error"]["message"]),
            "What to do": _text(tenant["error"]["hint"]),
        }


def test_summary_sheet_matches_audit_json(workbook: openpyxl.Workbook, audit_json: dict[str, Any]) -> None:
    sheet = workbook["Summary"]
    values = {row[0]: row[1] for row in sheet.iter_rows(min_row=4, max_col=2, values_only=True) if row[0]}
    summary, run = audit_json["summary"], audit_json["run"]
    assert values["Run ID"] == run["id"]
    assert values["Started (UTC)"] == datetime.fromisoformat(run["started_at"]).replace(tzinfo=None)
    assert values["Finished (UTC)"] == datetime.fromisoformat(run["finished_at"]).replace(tzinfo=None)
    assert values["Tool version"] == run["tool_version"]
    assert values["Mode"] == run["mode"]
    assert values["Tenants audited"] == summary["tenants"]
    assert values["Shared mailboxes found"] == summary["shared_mailboxes"]
    assert values["Shared mailboxes billed as users"] == summary["billed_shared_mailboxes"]
    assert values["Estimated monthly cost"] == summary["estimated_monthly_cost"]
    assert values["Currency"] == summary["currency"]
    assert values["Tenants with unknown cost"] == summary["tenants_with_unknown_cost"]
    actions = ", ".join(f"{n} {action}" for action, n in summary["remediation"].items())
    assert values["Remediation in this run"] == actions
    table = sheet.tables["StatusCounts"]
    first, last = table.ref.split(":")
    status_rows = list(sheet[f"{first}:{last}"])[1:]
    assert {r[0].value: r[2].value for r in status_rows} == summary["by_status"]


# --- formulas stay inert -----------------------------------------------------------------------------------


def test_formula_payloads_are_stored_as_strings(workbook: openpyxl.Workbook) -> None:
    seen: set[str] = set()
    for sheet in workbook.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                if isinstance(cell.value, str) and cell.value.startswith(("=", "+", "-", "@")):
                    assert cell.data_type == "s", cell.coordinate
                    assert cell.quotePrefix, cell.coordinate
                    seen.add(cell.value)
    assert set(FORMULA_PAYLOADS) <= seen
    assert '=HYPERLINK("http://x.example","click me")' in seen  # Fabrikam's, from the demo fleet


def test_no_formula_anywhere_in_the_file(xlsx_path: Path) -> None:
    with zipfile.ZipFile(xlsx_path) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/sheet")]
        assert len(sheets) == len(SHEETS)
        for name in sheets:
            xml = archive.read(name).decode("utf-8")
            assert "<f>" not in xml and "<f " not in xml, name
        assert not [n for n in archive.namelist() if "externalLink" in n]


def test_control_characters_do_not_break_the_workbook(workbook: openpyxl.Workbook) -> None:
    names = [r["Display name"] for r in _records(workbook["Shared mailboxes"])]
    assert "bell[U+0007]char" in names  # marked visibly (auditor.reporting.text), not lost as U+FFFD


# --- presentation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("title", SHEETS[1:])
def test_data_sheets_have_a_styled_frozen_header_and_a_table(workbook: openpyxl.Workbook, title: str) -> None:
    sheet = workbook[title]
    header = sheet[1]
    assert all(c.font.bold for c in header)
    assert all(c.fill.fgColor.rgb.endswith("1F3A5F") for c in header)
    assert sheet.freeze_panes in ("A2", "B2")
    (table,) = sheet.tables.values()
    assert table.ref == f"A1:{sheet.cell(row=1, column=sheet.max_column).column_letter}{sheet.max_row}"
    assert table.autoFilter is not None
    for column in range(1, sheet.max_column + 1):
        width = sheet.column_dimensions[sheet.cell(row=1, column=column).column_letter].width
        assert 8 <= width <= 80


def test_number_formats(workbook: openpyxl.Workbook) -> None:
    sheet = workbook["Tenants"]
    headers = [c.value for c in sheet[1]]
    cost = headers.index("Monthly cost") + 1
    billed = headers.index("Billed shared mailboxes") + 1
    for row in range(2, sheet.max_row + 1):
        cell = sheet.cell(row=row, column=cost)
        if isinstance(cell.value, int | float):
            assert cell.number_format == '"£"#,##0.00'
        else:
            assert cell.value == "unknown"
            assert cell.font.italic
        count = sheet.cell(row=row, column=billed)
        if isinstance(count.value, int):
            assert count.number_format == "#,##0"
    stamps = [c for c in workbook["Remediation"]["F"][1:] if c.value is not None]
    assert stamps
    assert all(isinstance(c.value, datetime) and c.number_format == "yyyy-mm-dd hh:mm:ss" for c in stamps)


def test_status_colours_by_conditional_formatting(workbook: openpyxl.Workbook) -> None:
    sheet = workbook["Tenants"]
    ranges = {str(cf.sqref): [r.formula[0] for r in cf.rules] for cf in sheet.conditional_formatting}
    assert ranges == {
        f"C2:C{sheet.max_row}": [
            '"compliant"',
            '"non_compliant"',
            '"remediated"',
            '"not_connected"',
            '"ambiguous"',
            '"error"',
        ]
    }
    findings = workbook["Findings"]
    assert len(list(findings.conditional_formatting)) == 2  # status and severity


def test_wide_text_wraps(workbook: openpyxl.Workbook) -> None:
    sheet = workbook["Findings"]
    assert sheet.column_dimensions["F"].width == 80
    assert sheet["F2"].alignment.wrap_text


def test_consent_link_cells_are_hyperlinks(workbook: openpyxl.Workbook) -> None:
    sheet = workbook["Findings"]
    links = [c for c in sheet["G"][1:] if c.value]
    assert links
    assert all(c.hyperlink is not None and c.hyperlink.target == c.value for c in links)


def test_empty_run(tmp_path: Path) -> None:
    path = render_excel(replace(sample_run(), tenants=()), tmp_path / "audit.xlsx")
    workbook = openpyxl.load_workbook(path)
    assert workbook.sheetnames == list(SHEETS)
    for title in SHEETS[1:]:
        sheet = workbook[title]
        assert sheet.max_row == 2
        assert sheet["A2"].value
        assert not sheet.tables
    assert [p.name for p in tmp_path.iterdir()] == ["audit.xlsx"]


def test_atomic_write_replaces_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "audit.xlsx"
    target.write_bytes(b"old")
    render_excel(sample_run(), target)
    assert zipfile.is_zipfile(target)
    assert [p.name for p in tmp_path.iterdir()] == ["audit.xlsx"]


def test_a_write_that_fails_half_way_keeps_the_old_workbook(tmp_path: Path) -> None:
    """A full disk half-way through the new workbook: the old one is intact, no temporary file is left."""
    target = tmp_path / "audit.xlsx"
    render_excel(replace(sample_run(), tenants=()), target)
    before = target.read_bytes()
    child = write_with_a_full_disk("auditor.reporting.excel:render_excel", target)
    assert child.returncode != 0 and "File too large" in child.stderr, child.stderr[-2000:]
    assert target.read_bytes() == before
    assert openpyxl.load_workbook(target).sheetnames == list(SHEETS)
    assert [p.name for p in tmp_path.iterdir()] == ["audit.xlsx"]
