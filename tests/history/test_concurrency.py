"""Overlapping runs and killed runs: one run at a time per history, and a killed run changes nothing
that was there before it (it only shows up as "interrupted")."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.config import AuditConfig, load_config
from auditor.history import HistoryLockedError, HistoryStore, open_history
from auditor.history.listing import runs_text
from auditor.model import Status
from tests.history.builders import CONTOSO, DAY, FABRIKAM, T0, run, tenant

ROOT = Path(__file__).resolve().parents[2]
CONFIG = """
[history]
lock_timeout_seconds = {timeout}

[auth]
client_id = "00000000-0000-0000-0000-0000000000c1"
client_secret_env = "AUDITOR_TEST_SECRET"

[[tenants]]
name = "Contoso"
tenant_id = "11111111-1111-1111-1111-111111111111"
"""


def write_config(directory: Path, timeout: float) -> AuditConfig:
    path = directory / "fleet.toml"
    path.write_text(CONFIG.format(timeout=timeout))
    return load_config(path)


@pytest.fixture
def config(tmp_path: Path) -> AuditConfig:
    return write_config(tmp_path, 0.3)


class Worker:
    """A second auditor process (tests/history/worker.py)."""

    def __init__(self, mode: str, config: AuditConfig, run_id: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own worker module, fixed arguments
            [sys.executable, "-m", "tests.history.worker", mode, str(config.path), run_id],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_for(self, word: str) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != word:
            self.process.kill()
            raise AssertionError(
                f"worker said {line!r}, not {word!r}: {self.process.stderr.read() if self.process.stderr else ''}"
            )

    def finish(self) -> None:
        out, err = self.process.communicate("go\n", timeout=30)
        assert self.process.returncode == 0, err
        assert out.strip() == "DONE"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=30)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.communicate()


def test_a_second_run_refuses_while_another_process_holds_the_history(
    config: AuditConfig, workers: list[Worker]
) -> None:
    first = Worker("hold", config, "first")
    workers.append(first)
    first.wait_for("LOCKED")
    began = time.monotonic()
    with pytest.raises(HistoryLockedError) as caught:
        open_history(config)
    assert time.monotonic() - began >= 0.3  # it waited lock_timeout_seconds first
    message = str(caught.value)
    assert f"pid {first.process.pid}" in message and "nothing was audited" in message
    assert caught.value.exit_code == 2
    first.finish()
    with open_history(config) as history:  # free again
        insights = history.record(run(T0 + DAY, tenant(CONTOSO, Status.COMPLIANT), run_id="second"))
    assert getattr(insights, "previous_run_id", None) == "first"


def test_a_run_that_waits_gets_the_history_when_the_other_finishes(tmp_path: Path) -> None:
    config = write_config(tmp_path, 10)
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first_run() -> None:
        try:
            with open_history(config) as history:
                holding.set()
                release.wait(10)
                history.record(run(T0, tenant(CONTOSO, Status.NON_COMPLIANT), run_id="first"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            holding.set()

    thread = threading.Thread(target=first_run)
    thread.start()
    holding.wait(10)
    threading.Timer(0.3, release.set).start()
    began = time.monotonic()
    with open_history(config) as history:
        waited = time.monotonic() - began
        insights = history.record(run(T0 + DAY, tenant(CONTOSO, Status.NON_COMPLIANT), run_id="second"))
    thread.join(10)
    assert not errors and waited >= 0.25
    assert getattr(insights, "previous_run_id", None) == "first"


def test_a_killed_run_releases_the_history_and_shows_as_interrupted(
    config: AuditConfig, workers: list[Worker]
) -> None:
    worker = Worker("hold", config, "killed")
    workers.append(worker)
    worker.wait_for("LOCKED")
    path = config.path.parent / "history.sqlite"
    with HistoryStore.open(path, create=False) as store:
        assert "in progress" in runs_text(store, 5, running=True)
    worker.kill()
    with open_history(config) as history:  # no stale lock: the kernel dropped it with the process
        history.record(run(T0 + DAY, tenant(CONTOSO, Status.COMPLIANT), run_id="next"))
    with HistoryStore.open(path, create=False) as store:
        assert sorted((r.run_id or "", r.complete) for r in store.runs()) == [("", False), ("next", True)]
        assert "interrupted: never recorded" in runs_text(store, 5)


def test_a_run_killed_mid_write_leaves_earlier_runs_and_no_half_run(
    config: AuditConfig, workers: list[Worker]
) -> None:
    path = config.path.parent / "history.sqlite"
    for i, run_id in enumerate(("day-1", "day-2")):
        with open_history(config, started_at=T0 - (2 - i) * DAY) as history:
            history.record(
                run(
                    T0 - (2 - i) * DAY,
                    tenant(CONTOSO, Status.NON_COMPLIANT),
                    tenant(FABRIKAM, Status.COMPLIANT),
                    run_id=run_id,
                )
            )

    worker = Worker("stall", config, "half")
    workers.append(worker)
    worker.wait_for("LOCKED")
    worker.wait_for("MIDWAY")  # two tenants written inside the uncommitted transaction
    with HistoryStore.open(path, create=False) as reader:  # readers are not blocked by the writer (WAL)
        assert [r.run_id for r in reader.runs() if r.complete] == ["day-2", "day-1"]
    worker.kill()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM runs WHERE run_id = 'half'").fetchone()[0] == 0
        orphans = conn.execute(
            "SELECT count(*) FROM tenant_results WHERE run_seq NOT IN (SELECT seq FROM runs WHERE complete = 1)"
        ).fetchone()[0]
        assert orphans == 0
    with open_history(config) as history:
        insights = history.record(run(T0, tenant(CONTOSO, Status.NON_COMPLIANT), run_id="day-3"))
    assert getattr(insights, "previous_run_id", None) == "day-2"
    gap = insights.for_tenant(CONTOSO).open_gap  # type: ignore[union-attr]
    assert gap is not None and gap.first_seen == T0 - 2 * DAY and gap.runs == 3
    with HistoryStore.open(path, create=False) as store:
        # (the interrupted run's row carries its real start time, so it sorts after these made-up ones)
        assert sorted((r.run_id or "", r.complete) for r in store.runs()) == [
            ("", False),
            ("day-1", True),
            ("day-2", True),
            ("day-3", True),
        ]
        assert store.run_count() == (3, 1)


def test_the_lock_file_is_kept_and_says_who_held_it(config: AuditConfig) -> None:
    with open_history(config):
        lock = config.path.parent / "history.sqlite.lock"
        assert f"pid {os.getpid()}" in lock.read_text()
    assert lock.exists()  # never deleted: deleting a lock file others wait on is a race
