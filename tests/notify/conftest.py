"""The sample run and small real report files the notification tests send (the SMTP server and the
webhook receiver are in tests/receivers.py, for every test directory)."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest

from auditor.model import RunResult
from tests.reporting.sample import sample_run


@pytest.fixture(scope="session")
def run() -> RunResult:
    """The demo-like sample run of the report tests (15 tenants, every status)."""
    return sample_run()


@pytest.fixture(scope="session")
def reports(run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Small real audit.json, audit.html and audit.xlsx files (a JSON document, an HTML page, a workbook
    that opens), in the order ``write_reports`` returns them. Made here rather than by the report writers,
    so these tests exercise only the notifications."""
    out = tmp_path_factory.mktemp("reports")
    json_path = out / "audit.json"
    json_path.write_text(json.dumps(run.to_dict(), indent=2))
    html_path = out / "audit.html"
    html_path.write_text(f"<!DOCTYPE html><html><body><h1>USS audit {run.run_id}</h1></body></html>\n")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["Tenant", "Status"])
    for tenant in run.tenants:
        sheet.append([tenant.name, tenant.status.value])
    xlsx_path = out / "audit.xlsx"
    workbook.save(xlsx_path)
    return [json_path, html_path, xlsx_path]
