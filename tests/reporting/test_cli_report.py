"""`auditor report RUN_JSON --out DIR`: re-render from a saved audit.json; usage errors exit with code 2."""

from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from auditor.cli.main import app
from auditor.reporting.json_report import write_json
from auditor.reporting.render import parse_human_formats
from auditor.reporting.templates import MAIN_TEMPLATE
from tests.reporting.history_sample import history_runs, record_history
from tests.reporting.sample import SAVED_RUN


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["report", *(str(a) for a in args)])
    return result.exit_code, result.output


def test_renders_both_formats_from_a_saved_run(tmp_path: Path) -> None:
    code, output = _run(SAVED_RUN, "--out", tmp_path / "out")
    assert code == 0, output
    html, xlsx = tmp_path / "out" / "audit.html", tmp_path / "out" / "audit.xlsx"
    assert output.split() == [str(html), str(xlsx)]
    assert "Fabrikam Retail" in html.read_text(encoding="utf-8")
    assert openpyxl.load_workbook(xlsx).sheetnames[0] == "Summary"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["audit.html", "audit.xlsx"]


@pytest.mark.parametrize(
    ("flags", "files"), [(["-f", "xlsx"], ["audit.xlsx"]), (["--format", "HTML"], ["audit.html"])]
)
def test_one_format(tmp_path: Path, flags: list[str], files: list[str]) -> None:
    code, output = _run(SAVED_RUN, "-o", tmp_path, *flags)
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_custom_templates(tmp_path: Path) -> None:
    brand = tmp_path / "brand"
    brand.mkdir()
    (brand / MAIN_TEMPLATE).write_text(
        '{% extends "builtin/audit.html.j2" %}{% block brand %}<p class="brand">Contoso MSP</p>{% endblock %}'
    )
    code, output = _run(SAVED_RUN, "--out", tmp_path / "out", "--templates", brand, "--format", "html")
    assert code == 0, output
    assert '<p class="brand">Contoso MSP</p>' in (tmp_path / "out" / "audit.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file not found"),
        ("{not json", "not valid JSON"),
        ('{"schema_version": 99, "run": {}}', "schema_version 99 is not supported"),
        ("[1, 2]", "not an audit.json"),
    ],
)
def test_unusable_run_file_exits_2(tmp_path: Path, content: str | None, message: str) -> None:
    run_json = tmp_path / "audit.json"
    if content is not None:
        run_json.write_text(content)
    code, output = _run(run_json, "--out", tmp_path / "out")
    assert code == 2
    assert "error:" in output and message in output
    assert not (tmp_path / "out" / "audit.html").exists()


@pytest.mark.parametrize(
    ("value", "message"), [("pdf", "pdf"), ("json", "audit.json is what this command reads")]
)
def test_unknown_format_exits_2(tmp_path: Path, value: str, message: str) -> None:
    code, output = _run(SAVED_RUN, "--out", tmp_path, "--format", value)
    assert code == 2
    assert message in output
    assert list(tmp_path.iterdir()) == []


def test_missing_templates_dir_exits_2(tmp_path: Path) -> None:
    code, output = _run(SAVED_RUN, "--out", tmp_path / "out", "--templates", tmp_path / "nope")
    assert code == 2
    assert "not a directory" in output


def test_broken_template_exits_2_and_keeps_the_previous_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "audit.html").write_text("previous")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MAIN_TEMPLATE).write_text("{{ undefined_thing }}")
    code, output = _run(SAVED_RUN, "--out", out, "--templates", broken, "--format", "html")
    assert code == 2
    assert "undefined_thing" in output
    assert (out / "audit.html").read_text() == "previous"


def test_out_that_is_a_file_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, output = _run(SAVED_RUN, "--out", blocker)
    assert code == 2
    assert "not a directory" in output


def test_parse_human_formats() -> None:
    assert parse_human_formats(None) == ("html", "xlsx")
    assert parse_human_formats(["xlsx,html"]) == ("html", "xlsx")
    assert parse_human_formats(["xlsx", " HTML ", ""]) == ("html", "xlsx")


def test_report_renders_a_run_written_by_json_report(tmp_path: Path) -> None:
    # Round trip through the JSON writer `auditor audit` uses.
    from auditor.model import RunResult
    from auditor.reporting.json_report import write_json

    run = RunResult.from_dict(json.loads(SAVED_RUN.read_text(encoding="utf-8")))
    saved = write_json(run, tmp_path / "audit.json")
    code, output = _run(saved, "--out", tmp_path)
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html", "audit.json", "audit.xlsx"]


def test_history_adds_the_changes_and_the_trend(tmp_path: Path) -> None:
    record_history(tmp_path / "history.sqlite")
    run_json = write_json(history_runs()[-1], tmp_path / "audit.json")
    code, output = _run(run_json, "--out", tmp_path / "out", "--history", tmp_path / "history.sqlite")
    assert code == 0, output
    html = (tmp_path / "out" / "audit.html").read_text(encoding="utf-8")
    assert "Changes since the previous run" in html and "Trend over the last 3 runs" in html
    book = openpyxl.load_workbook(tmp_path / "out" / "audit.xlsx")
    assert book.sheetnames[1] == "Changes" and book.sheetnames[-1] == "Trend"
    # Without --history: the reports as before.
    code, output = _run(run_json, "--out", tmp_path / "plain")
    assert code == 0, output
    assert 'id="changes"' not in (tmp_path / "plain" / "audit.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("case", ["missing-database", "run-not-recorded"])
def test_unusable_history_exits_2(tmp_path: Path, case: str) -> None:
    history = tmp_path / "history.sqlite"
    if case == "run-not-recorded":
        record_history(history, history_runs()[:1])
    code, output = _run(SAVED_RUN, "--out", tmp_path / "out", "--history", history)
    assert code == 2, output
    assert ("no history database" if case == "missing-database" else "is not in the history") in output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not history.exists() or case == "run-not-recorded"
