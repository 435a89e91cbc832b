"""One run's use of the history: take it before auditing, record the run at the end, hand back insights.

The glue in :func:`auditor.app.audit` is::

    with open_history(config) as history:           # [history] checked, lock taken: exit 2 if not
        journal = JournalCursor(out_dir / "remediation.jsonl")
        run = ...                                   # audit (and remediate)
        insights = history.record(run, journal.new_lines())
    write_reports(run, out_dir, formats, insights=insights)

``open_history`` raises before anything is audited (:class:`~auditor.errors.ConfigError` for a bad
``[history]`` table, :class:`~auditor.history.lock.HistoryError` when another run holds the history or
the database cannot be used): both exit 2. ``record`` never raises for a database failure: the audit has
happened and its reports matter more than its history, so it logs the failure and returns
:class:`~auditor.history.insights.HistoryUnavailable` with the reason, which the reports show.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from auditor.config import AuditConfig
from auditor.history.insights import HistoryUnavailable, RunInsights
from auditor.history.lock import HistoryAlreadyRecordedError, HistoryError, RunLock
from auditor.history.settings import HistorySettings, history_settings
from auditor.history.store import HistoryStore, JournalLine, history_failure
from auditor.model import RunResult

__all__ = ["JournalCursor", "RunRecorder", "open_history"]

log = logging.getLogger(__name__)


class RunRecorder:
    """The history as one run holds it: locked from :func:`open_history` until :meth:`close`."""

    def __init__(
        self,
        settings: HistorySettings,
        *,
        store: HistoryStore | None = None,
        lock: RunLock | None = None,
        placeholder: int | None = None,
        unavailable: str = "",
    ) -> None:
        self.settings = settings
        self._store = store
        self._lock = lock
        self._placeholder = placeholder
        self._unavailable = unavailable
        self._recorded = False

    @property
    def enabled(self) -> bool:
        """False when ``[history] enabled = false``."""
        return self._store is not None

    @property
    def store(self) -> HistoryStore | None:
        """The open database (None when history is off): the census keeps its state there."""
        return self._store

    @property
    def unavailable(self) -> str:
        """Why there is no database (history off, a shard part), or ""."""
        return self._unavailable

    def record(
        self, run: RunResult, journal_lines: Iterable[JournalLine] = ()
    ) -> RunInsights | HistoryUnavailable:
        """Record ``run`` (and the remediation journal lines it wrote) and return its insights.

        Database failures are logged and returned as :class:`HistoryUnavailable`; nothing of the run is
        stored then, and earlier runs are untouched.
        """
        if self._recorded:
            raise RuntimeError("this RunRecorder has already recorded its run")
        self._recorded = True
        if self._store is None:
            return HistoryUnavailable(self._unavailable)
        try:
            self._store.record(run, journal_lines, placeholder=self._placeholder)
        except Exception as exc:  # any failure: the run has been audited, its reports come first
            reason = _reason(exc)
            log.error("The run could not be recorded in the history %s: %s", self.settings.path, reason)
            log.debug("history failure", exc_info=True)
            # The run finished: its placeholder must not stay behind as a false "interrupted" run.
            self._discard_placeholder()
            return HistoryUnavailable(f"this run could not be recorded in the history ({reason})")
        try:
            return self._store.insights(run.run_id)
        except Exception as exc:
            # Reading back can meet anything a damaged or newer database holds (issue 12, item 4): the run
            # is recorded; the reports go out without what history would have added.
            reason = _reason(exc)
            log.error(
                "This run was recorded, but the history %s could not be read back: %s",
                self.settings.path,
                reason,
            )
            log.debug("history failure", exc_info=True)
            return HistoryUnavailable(f"the history could not be read back ({reason})")

    def _discard_placeholder(self) -> None:
        if self._store is None or self._placeholder is None:
            return
        try:
            self._store.discard_placeholder(self._placeholder)
        except sqlite3.Error:
            log.debug("the placeholder row of this run could not be removed", exc_info=True)

    def close(self) -> None:
        """Close the database and release the lock (idempotent)."""
        store, self._store = self._store, None
        try:
            if store is not None:
                store.close()
        except sqlite3.Error as exc:  # committed data is durable; closing must not cost the run its reports
            log.warning("The history %s could not be closed cleanly: %s", self.settings.path, exc)
        finally:
            # After the connection is closed: closing the lock's descriptor of the same file earlier would
            # drop SQLite's own POSIX locks (see auditor.history.lock).
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_history(
    config: AuditConfig,
    *,
    started_at: datetime | None = None,
    disabled_reason: str | None = None,
    run_id: str | None = None,
) -> RunRecorder:
    """Validate ``[history]``, take the run lock and open (create, migrate) the database.

    Call it before auditing: it raises :class:`~auditor.errors.ConfigError` or :class:`HistoryError`
    (both exit code 2) while nothing has been audited yet. With ``enabled = false``, or when the caller
    gives a ``disabled_reason`` (e.g. a shard part, whose merged run is what history should keep), it
    returns a recorder that takes no lock, records nothing and returns that reason as
    :class:`HistoryUnavailable`. With ``run_id`` (a merge, whose id follows from its parts), a run already
    recorded under that id raises :class:`HistoryAlreadyRecordedError` before anything is added.
    """
    settings = history_settings(config)  # validated even when unused: a typo should not wait for later
    if not settings.enabled:
        disabled_reason = f"history is turned off ([history] enabled = false in {config.path})"
    if disabled_reason is not None:
        return RunRecorder(settings, unavailable=disabled_reason)
    lock = RunLock(settings.path)
    try:
        lock.acquire(settings.lock_timeout_seconds)
    except (FileExistsError, NotADirectoryError) as exc:
        raise HistoryError(
            f"cannot create the history database {settings.path}: a file is in the way of its directory "
            f"({exc.strerror or exc})",
            hint="Point [history] path into a directory (or remove the file that has the directory's name).",
        ) from exc
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise HistoryError(
                f"the history database {settings.path} is read-only for this user ({exc.strerror or exc}), so "
                "this run could not be recorded; nothing was audited",
                hint="Give the user running the auditor write access to the file and its directory; "
                "`auditor history` and `auditor report --history` only read it.",
            ) from exc
        raise HistoryError(
            f"cannot open the history database {settings.path} to lock it ({exc.strerror or exc})",
            hint="Check that the directory of [history] path exists and is writable.",
        ) from exc
    try:
        store = HistoryStore.open(settings.path)
        try:
            if run_id is not None and store.has_run(run_id):
                store.close()
                raise HistoryAlreadyRecordedError(
                    f"run {run_id} is already recorded in the history {settings.path}",
                    hint="Each run is recorded once.",
                )
            placeholder = store.begin_run(started_at or datetime.now(UTC))
        except sqlite3.Error as exc:
            store.close()
            raise history_failure(exc, settings.path) from exc
    except BaseException:
        lock.release()
        raise
    return RunRecorder(settings, store=store, lock=lock, placeholder=placeholder)


class JournalCursor:
    """Remembers where ``remediation.jsonl`` ends now, to read back only the lines appended after.

    The journal in ``--out`` is append-only across runs; history keeps each run's own lines with the run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = _size(path)

    def new_lines(self) -> list[str]:
        """Complete lines appended since this cursor was made (a torn last line is left out)."""
        try:
            with self.path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                # A journal that shrank was replaced: everything in it is new.
                handle.seek(self.offset if size >= self.offset else 0)
                data = handle.read()
        except FileNotFoundError:
            return []
        lines = data.decode("utf-8", "replace").split("\n")
        return [line for line in lines[:-1] if line.strip()]


def _reason(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, sqlite3.Error | OSError | HistoryError):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
