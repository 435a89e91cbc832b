"""Fixtures for the report tests: a hostile demo-like run, its audit.json, and the rendered reports.

The run is built from the model directly (``tests/reporting/sample.py``), so these tests need neither
the simulator nor Graph. Reports are rendered from the *saved* audit.json read back, the path
``auditor report`` takes, so what the tests compare against is exactly what the file says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor.model import RunResult
from auditor.reporting.excel import render_excel
from auditor.reporting.html import render_html
from tests.reporting.sample import sample_run


@pytest.fixture(scope="session")
def hostile_run() -> RunResult:
    """Every status, finding kind, remediation outcome and error, plus tenants full of attack strings."""
    return sample_run(hostile=True)


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory: pytest.TempPathFactory, hostile_run: RunResult) -> Path:
    """A directory with audit.json (the hostile run) and the audit.html / audit.xlsx rendered from it."""
    out = tmp_path_factory.mktemp("report")
    (out / "audit.json").write_text(json.dumps(hostile_run.to_dict(), indent=2), encoding="utf-8")
    saved = RunResult.from_dict(json.loads((out / "audit.json").read_text(encoding="utf-8")))
    render_html(saved, out / "audit.html")
    render_excel(saved, out / "audit.xlsx")
    return out


@pytest.fixture(scope="session")
def audit_json(report_dir: Path) -> dict[str, Any]:
    """The saved audit.json document, as the reports must show it."""
    data: dict[str, Any] = json.loads((report_dir / "audit.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="session")
def html_path(report_dir: Path) -> Path:
    """The rendered audit.html."""
    return report_dir / "audit.html"


@pytest.fixture(scope="session")
def html_text(html_path: Path) -> str:
    """The rendered audit.html as text."""
    return html_path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def xlsx_path(report_dir: Path) -> Path:
    """The rendered audit.xlsx."""
    return report_dir / "audit.xlsx"
