"""Run history: every run's verdicts, counts, cost, findings and remediation journal in an embedded SQLite
database, and what it tells a report (changes since the previous run, gap ages, accrued cost, trend).

* :mod:`~auditor.history.settings`: the ``[history]`` table (path, enabled, lock_timeout_seconds).
* :mod:`~auditor.history.store`: the schema, its migrations and the reads and writes.
* :mod:`~auditor.history.lock`: one run at a time per database.
* :mod:`~auditor.history.insights`: the report-facing dataclasses and the definitions behind them.
* :mod:`~auditor.history.recorder`: what a run calls (:func:`open_history`, :class:`JournalCursor`).
* :mod:`~auditor.history.listing`: `auditor history` output.
"""

from auditor.history.insights import (
    Change,
    GapAge,
    HistoryUnavailable,
    MailboxRef,
    RunInsights,
    TenantInsight,
    TrendPoint,
)
from auditor.history.lock import HistoryAlreadyRecordedError, HistoryError, HistoryLockedError
from auditor.history.recorder import JournalCursor, RunRecorder, open_history
from auditor.history.settings import HistorySettings, history_settings
from auditor.history.store import SCHEMA_VERSION, HistoryStore

__all__ = [
    "SCHEMA_VERSION",
    "Change",
    "GapAge",
    "HistoryAlreadyRecordedError",
    "HistoryError",
    "HistoryLockedError",
    "HistorySettings",
    "HistoryStore",
    "HistoryUnavailable",
    "JournalCursor",
    "MailboxRef",
    "RunInsights",
    "RunRecorder",
    "TenantInsight",
    "TrendPoint",
    "history_settings",
    "open_history",
]
