"""What a run calls: open_history (checks before auditing), record (never loses the reports), and the
journal cursor that picks out this run's lines of remediation.jsonl."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from auditor.config import AuditConfig, load_config
from auditor.errors import ConfigError
from auditor.history import (
    HistoryError,
    HistoryStore,
    HistoryUnavailable,
    JournalCursor,
    RunInsights,
    open_history,
)
from auditor.model import Status
from auditor.remediation import Journal
from tests.history.builders import CONTOSO, DAY, T0, run, tenant

BASE = """
[auth]
client_id = "00000000-0000-0000-0000-0000000000c1"
client_secret_env = "AUDITOR_TEST_SECRET"

[[tenants]]
name = "Contoso"
tenant_id = "11111111-1111-1111-1111-111111111111"
"""


def config_with(tmp_path: Path, history: str = "") -> AuditConfig:
    path = tmp_path / "fleet.toml"
    path.write_text((f"[history]\n{history}\n" if history else "") + BASE)
    return load_config(path)


def test_history_is_kept_beside_the_config_by_default(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    with open_history(config) as history:
        assert history.enabled
        insights = history.record(run(T0, tenant(CONTOSO, Status.NON_COMPLIANT), run_id="one"))
    assert isinstance(insights, RunInsights) and insights.run_id == "one"
    assert (tmp_path / "history.sqlite").exists()
    with pytest.raises(RuntimeError, match="already recorded"):
        history.record(run(T0, tenant(CONTOSO, Status.NON_COMPLIANT)))


def test_disabled_history_records_nothing_and_says_why(tmp_path: Path) -> None:
    config = config_with(tmp_path, "enabled = false")
    with open_history(config) as history:
        assert not history.enabled
        outcome = history.record(run(T0, tenant(CONTOSO, Status.COMPLIANT)))
    assert isinstance(outcome, HistoryUnavailable) and "enabled = false" in outcome.reason
    assert not (tmp_path / "history.sqlite").exists()


def test_a_caller_can_leave_a_run_out_of_history(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    with open_history(config, disabled_reason="a shard part: the merge records the run") as history:
        with open_history(config, disabled_reason="another shard part") as other:  # no lock taken
            assert not history.enabled and not other.enabled
        outcome = history.record(run(T0, tenant(CONTOSO, Status.COMPLIANT)))
    assert outcome == HistoryUnavailable("a shard part: the merge records the run")
    assert not (tmp_path / "history.sqlite").exists()


def test_a_bad_history_table_fails_before_anything_is_locked_or_created(tmp_path: Path) -> None:
    config = config_with(tmp_path, 'pathh = "x.sqlite"')
    with pytest.raises(ConfigError, match=r"history\.pathh: unknown key .*did you mean 'path'"):
        open_history(config)
    assert list(tmp_path.iterdir()) == [tmp_path / "fleet.toml"]


def test_an_unusable_history_location_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    with pytest.raises(HistoryError) as caught:
        open_history(config_with(tmp_path, 'path = "blocker/h.sqlite"'))
    assert caught.value.exit_code == 2 and "a file is in the way of its directory" in str(caught.value)


def test_a_database_failure_while_recording_keeps_earlier_runs_and_the_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_with(tmp_path)
    with open_history(config) as history:
        history.record(run(T0, tenant(CONTOSO, Status.NON_COMPLIANT), run_id="kept"))

    def disk_full(*args: object, **kwargs: object) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    with open_history(config) as history:
        monkeypatch.setattr(HistoryStore, "record", disk_full)
        outcome = history.record(run(T0 + DAY, tenant(CONTOSO, Status.NON_COMPLIANT)))
    monkeypatch.undo()
    assert isinstance(outcome, HistoryUnavailable) and "disk is full" in outcome.reason
    assert "could not be recorded" in caplog.text
    with HistoryStore.open(tmp_path / "history.sqlite") as store:
        assert [r.run_id for r in store.runs() if r.complete] == ["kept"]


def test_journal_cursor_reads_only_this_runs_lines(tmp_path: Path) -> None:
    path = tmp_path / "out" / "remediation.jsonl"
    assert JournalCursor(path).new_lines() == []  # no journal yet
    Journal(path).append({"tenant": "earlier run"})
    cursor = JournalCursor(path)
    Journal(path).append({"tenant": "this run", "n": 1})
    Journal(path).append({"tenant": "this run", "n": 2})
    with path.open("a") as handle:
        handle.write('{"torn": ')  # a line still being written is not read
    assert [json.loads(line)["n"] for line in cursor.new_lines()] == [1, 2]


def test_journal_cursor_reads_a_replaced_journal_whole(tmp_path: Path) -> None:
    path = tmp_path / "remediation.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    cursor = JournalCursor(path)
    path.write_text('{"b": 1}\n')
    assert cursor.new_lines() == ['{"b": 1}']


def test_recorded_journal_lines_belong_to_their_run(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    journal_path = tmp_path / "out" / "remediation.jsonl"
    for run_id in ("first", "second"):
        with open_history(config) as history:
            cursor = JournalCursor(journal_path)
            Journal(journal_path).append({"run": run_id, "action": "create", "outcome": "created"})
            history.record(run(T0, tenant(CONTOSO, Status.REMEDIATED), run_id=run_id), cursor.new_lines())
    with HistoryStore.open(tmp_path / "history.sqlite") as store:
        assert [line["run"] for line in store.journal("first")] == ["first"]
        assert [line["run"] for line in store.journal("second")] == ["second"]
