"""Flat memory and reports that scale (issue 13, goals 3-4): spooled tenant results, audit.json written
tenant by tenant, the workbook streamed, and the page fixes seen at 1,000 tenants."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Final

import openpyxl
import pytest

from auditor.constants import ExitCode
from auditor.model import Billing, RunResult, SharedMailbox, Status, TenantResult, money
from auditor.reporting import RunFileError, json_report, write_reports
from auditor.reporting.excel import _LINE_HEIGHT, _wrapped_lines, excel_text
from auditor.reporting.html import render_html_text
from auditor.reporting.json_report import json_chunks, read_run
from auditor.reporting.rows import shared_mailbox_records, shared_mailbox_rows
from auditor.reporting.spool import SPOOL_PREFIX, SpooledMailboxes, TenantSpool
from tests.reporting.sample import sample_run


def _spooled(run: RunResult, directory: Path) -> RunResult:
    spool = TenantSpool.create(directory)
    return replace(run, tenants=tuple(spool.add(t) for t in run.tenants))


# --- audit.json, streamed ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", [False, True])
def test_streamed_audit_json_is_exactly_the_documents_json(hostile: bool) -> None:
    run = sample_run(hostile=hostile)
    expected = json.dumps(run.to_dict(), indent=2, ensure_ascii=False) + "\n"
    assert "".join(json_chunks(run)) == expected
    empty = replace(run, tenants=())
    assert "".join(json_chunks(empty)) == json.dumps(empty.to_dict(), indent=2, ensure_ascii=False) + "\n"


# --- the spool --------------------------------------------------------------------------------------------


def test_a_spooled_result_keeps_its_count_and_reads_its_list_back(tmp_path: Path) -> None:
    run = sample_run(hostile=True)
    spooled = _spooled(run, tmp_path)
    for before, after in zip(run.tenants, spooled.tenants, strict=True):
        assert after.to_dict() == before.to_dict()  # hostile names survive the round trip
        if before.mailboxes is not None and before.mailboxes.shared_mailboxes:
            assert after.mailboxes is not None
            boxes = after.mailboxes.shared_mailboxes
            assert isinstance(boxes, SpooledMailboxes)
            assert len(boxes) == after.mailboxes.shared == len(before.mailboxes.shared_mailboxes)
            assert boxes[0] == before.mailboxes.shared_mailboxes[0]
            assert boxes == before.mailboxes.shared_mailboxes
    assert spooled.summary() == run.summary()
    # The spool is unlinked as soon as it is open: nothing is left in --out, even after a crash.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(SPOOL_PREFIX)]


def test_spooling_twice_or_nothing_changes_nothing(tmp_path: Path) -> None:
    spool = TenantSpool.create(tmp_path)
    once = [spool.add(t) for t in sample_run().tenants]
    assert [spool.add(t) for t in once] == once
    no_census = next(t for t in sample_run().tenants if t.mailboxes is None)
    assert spool.add(no_census) is no_census


def test_reports_from_a_spooled_run_are_those_of_the_run_in_memory(tmp_path: Path) -> None:
    run = sample_run(hostile=True)
    plain = write_reports(run, tmp_path / "plain")
    spooled = write_reports(_spooled(run, tmp_path), tmp_path / "spooled")
    for a, b in zip(plain, spooled, strict=True):
        if a.suffix == ".xlsx":
            continue
        assert a.read_bytes() == b.read_bytes(), a.name
    assert read_run(spooled[0]) == read_run(plain[0])
    books = [openpyxl.load_workbook(p[2]) for p in (plain, spooled)]
    for title in books[0].sheetnames:
        values = [[list(r) for r in book[title].iter_rows(values_only=True)] for book in books]
        assert values[0] == values[1], title
    assert sorted(p.name for p in (tmp_path / "spooled").iterdir()) == [
        "audit.html",
        "audit.json",
        "audit.xlsx",
    ]


def test_streamed_mailbox_records_are_the_tables_rows() -> None:
    run = sample_run(hostile=True)
    assert list(shared_mailbox_records(run)) == shared_mailbox_rows(run).records()


def test_the_workbook_lists_every_shared_mailbox(tmp_path: Path) -> None:
    run = sample_run(hostile=True)
    (xlsx,) = write_reports(run, tmp_path, ["xlsx"])
    sheet = openpyxl.load_workbook(xlsx)["Shared mailboxes"]
    ids = [row[-1] for row in sheet.iter_rows(min_row=2, values_only=True)]
    expected = [excel_text(m.id) for t in run.tenants if t.mailboxes for m in t.mailboxes.shared_mailboxes]
    assert sorted(ids) == sorted(expected)
    (table,) = sheet.tables.values()
    assert table.ref == f"A1:J{len(expected) + 1}"
    assert [c.name for c in table.tableColumns][:3] == ["Tenant", "Tenant ID", "Tenant status"]


# --- Summary sheet: wrapped prose has room when printed ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "width", "lines"),
    [
        ("", 60, 1),
        ("short", 60, 1),
        ("word " * 11, 60, 1),  # 55 characters fit in 58
        ("word " * 12, 60, 2),  # 59 do not
        ("x" * 120, 60, 3),  # one long word is broken at the width
        ("a\nb\nc", 60, 3),
        ("alpha beta gamma", 8, 3),
    ],
)
def test_wrapped_lines(text: str, width: int, lines: int) -> None:
    assert _wrapped_lines(text, width) == lines


def test_summary_status_rows_are_tall_enough_for_their_prose(tmp_path: Path) -> None:
    (xlsx,) = write_reports(sample_run(), tmp_path, ["xlsx"])
    sheet = openpyxl.load_workbook(xlsx)["Summary"]
    table = sheet.tables["StatusCounts"]
    first, last = (int(re.sub(r"[A-Z]", "", ref)) for ref in table.ref.split(":"))
    for row in range(first + 1, last + 1):
        prose = [str(sheet.cell(row=row, column=c).value or "") for c in (4, 5)]
        needed = max(_wrapped_lines(prose[0], 60), _wrapped_lines(prose[1], 80))
        assert needed >= 2  # the statuses' explanations do wrap
        assert sheet.row_dimensions[row].height >= _LINE_HEIGHT * needed
        assert sheet.cell(row=row, column=4).alignment.wrap_text


# --- the cost chart ------------------------------------------------------------------------------------------


def test_ten_equal_costs_are_full_bars_however_large_the_rest(tmp_path: Path) -> None:
    base = sample_run()
    template = next(t for t in base.tenants if t.status is Status.NON_COMPLIANT and t.mailboxes)
    tenants = []
    for i in range(200):
        billing = Billing(4, 2.5, money(Decimal("10.00")), "GBP")
        tenants.append(
            replace(
                template,
                name=f"Tenant {i:03d}",
                tenant_id=f"00000000-0000-0000-0000-{i:012d}",
                billing=billing,
            )
        )
    html = render_html_text(replace(base, tenants=tuple(tenants)))
    chart = html[html.index('data-chart="cost-chart"') :]
    chart = chart[: chart.index("</svg>")]
    widths = [float(w) for w in re.findall(r'<rect[^>]*\swidth="([0-9.]+)"', chart)]
    assert len(widths) == 11  # the top ten and "190 other tenant(s)"
    assert len(set(widths[:10])) == 1 and widths[0] > 100  # not hairlines
    assert widths[10] <= widths[0]  # the rest is drawn at most full width; its value is printed
    assert "190 other tenant(s)" in chart


def test_a_long_mailbox_list_is_summarised_in_the_page() -> None:
    run = sample_run()
    boxes = tuple(
        SharedMailbox(id=f"id-{i}", display_name=f"Box {i:03d}", user_principal_name=f"box{i}@x.example")
        for i in range(250)
    )
    tenant = next(t for t in run.tenants if t.mailboxes)
    assert tenant.mailboxes is not None
    big = replace(tenant, mailboxes=replace(tenant.mailboxes, shared_mailboxes=boxes))
    html = render_html_text(replace(run, tenants=(big,)))
    assert "Box 000" in html and "Box 009" in html and "Box 010" not in html
    assert 'data-mailboxes-more="240"' in html
    assert "250 shared mailboxes" in html


# --- reading a large audit.json tenant by tenant ------------------------------------------------------------


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_a_large_file_read_tenant_by_tenant_is_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(json_report, "_CHUNK", chunk)  # values cut across chunk ends
    path = tmp_path / "audit.json"
    write_reports(sample_run(hostile=True), tmp_path, ["json"])
    whole = read_run(path)
    streamed = read_run(path, stream_above=0)
    assert streamed == whole
    assert any(
        isinstance(t.mailboxes.shared_mailboxes, SpooledMailboxes) for t in streamed.tenants if t.mailboxes
    )
    # Any valid JSON layout, not only ours.
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8"))), encoding="utf-8")
    assert read_run(compact, stream_above=0) == whole


def _damaged(text: str) -> list[str]:
    def first(pattern: str, by: str, skip: int = 0) -> str:
        match = list(re.finditer(pattern, text))[skip]  # skip=1: past the summary's figure
        return text[: match.start()] + by + text[match.end() :]

    cost, billed = r'"monthly_cost": [0-9.]+', r'"billed_shared_mailboxes": [0-9]+'
    return [
        text[: len(text) // 2],  # cut short
        first(r'"schema_version": 1', '"schema_version": 7'),
        first(r'"schema_version": 1', '"schema_version": "1"'),
        first(cost, '"monthly_cost": NaN'),
        first(cost, '"monthly_cost": -30.0'),
        first(cost, '"monthly_cost": ' + "9" * 40),
        first(billed, '"billed_shared_mailboxes": "12"', skip=1),
        first(r'"tenants": \[\n    \{', '"tenants": [\n    7, {'),
        first(r'"tenants": \[', '"tenants": {"x": ['),
        first(r'"status": "non_compliant"', '"status": "great"'),
        text + "{}",
        first(r',\n  "summary"', '\n  "summary"'),
        first(r'"schema_version": 1,', ""),
        "[]",
        "",
    ]


def test_a_damaged_large_file_is_named_as_the_whole_file_reader_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_report, "_CHUNK", 50)
    text = "".join(json_chunks(sample_run()))
    for number, damaged in enumerate(_damaged(text)):
        path = tmp_path / f"{number}.json"
        path.write_text(damaged, encoding="utf-8")
        with pytest.raises(RunFileError) as whole:
            read_run(path)
        with pytest.raises(RunFileError) as streamed:
            read_run(path, stream_above=0)
        assert str(streamed.value).startswith(str(path)), number
        assert streamed.value.exit_code == whole.value.exit_code == ExitCode.USAGE
        if number not in STREAMED_WORDING:
            assert str(streamed.value) == str(whole.value), number


# Where the tenant-by-tenant reader says it differently (it stops at the first bad tenant, with its index).
STREAMED_WORDING: Final = {9}


# --- auditor audit spools each tenant as it finishes ------------------------------------------------------


def test_auditor_audit_keeps_mailbox_lists_on_disk_until_the_reports(tmp_path: Path) -> None:
    from auditor.app import AuditOptions, audit
    from auditor.config import AuditConfig, TenantConfig
    from auditor.runner import TenantAudit
    from tests.unit.test_cli import CONFIG, NoProgress

    config = tmp_path / "fleet.toml"
    config.write_text(CONFIG, encoding="utf-8")
    censuses = [t for t in sample_run(hostile=True).tenants if t.mailboxes and t.mailboxes.shared_mailboxes]

    async def fake(tenant: TenantConfig) -> TenantResult:
        like = censuses[int(tenant.tenant_id[-1]) % len(censuses)]
        return replace(like, name=tenant.name, tenant_id=tenant.tenant_id, tags=tenant.tags)

    def factory(_config: AuditConfig) -> TenantAudit:
        return fake

    out = tmp_path / "out"
    outcome = audit(
        AuditOptions(config=config, out_dir=out),
        auditor_factory=factory,
        progress=NoProgress(),
        stdout=io.StringIO(),
    )
    kept = [t.mailboxes.shared_mailboxes for t in outcome.run.tenants if t.mailboxes]
    assert len(kept) == 3 and all(isinstance(boxes, SpooledMailboxes) for boxes in kept)
    saved = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    for tenant in saved["tenants"]:
        like = censuses[int(tenant["tenant_id"][-1]) % len(censuses)]
        assert tenant["shared_mailboxes"] == [m.to_dict() for m in like.mailboxes.shared_mailboxes]  # type: ignore[union-attr]
    assert read_run(out / "audit.json") == outcome.run
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no spool, no staging left


def test_a_spool_that_cannot_be_made_keeps_results_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = TenantSpool.create(tmp_path / "missing")  # no such directory
    run = sample_run()
    assert [spool.add(t) for t in run.tenants] == list(run.tenants)
    assert all(
        not isinstance(t.mailboxes.shared_mailboxes, SpooledMailboxes) for t in run.tenants if t.mailboxes
    )
    assert "keeping them in memory" in caplog.text
