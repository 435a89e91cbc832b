"""The run lock: at most one auditor run records into a history database at a time.

Why a lock file and not only SQLite's own locking: SQLite serialises *transactions*, which already keeps
the file from being corrupted, but two overlapping nightly runs would still interleave their notion of
"the previous run" and both pay for a full fleet audit. So a run takes this lock before it audits anything
and holds it until it has recorded its results; a second run waits ``lock_timeout_seconds`` and then
refuses with :class:`HistoryLockedError` (exit code 2, nothing audited), naming the process that holds it.

The lock is an advisory ``flock`` on the database file itself: the kernel drops it when the holder
exits, however it exits, so a killed run never leaves a stale lock behind; and it cannot be deleted from
under a run (deleting a separate lock file used to let a second run in). ``flock`` locks are separate
from the POSIX byte-range locks SQLite takes on the same file (on Linux and the BSDs they never
interact). One caveat of POSIX locks is respected: closing *any* descriptor of the file drops the
process's POSIX locks on it, so the lock's descriptor is only closed after this process's SQLite
connection to the file is (see :class:`~auditor.history.recorder.RunRecorder`), and
:meth:`RunLock.is_held_elsewhere` is asked before a reader opens the database. ``<database>.lock`` only
carries a line saying who holds the lock, for the error message; it may be deleted at any time. ``flock``
is not reliable on network file systems; keep the history on a local disk (SQLite's WAL mode needs that
anyway).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Final

from auditor.constants import ExitCode
from auditor.errors import AuditorError, ErrorCode

__all__ = ["HistoryAlreadyRecordedError", "HistoryError", "HistoryLockedError", "RunLock", "lock_path"]

_POLL_SECONDS: Final = 0.05


class HistoryError(AuditorError):
    """The history database cannot be used (locked, unreadable, from a newer version). Exit code 2."""

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str = "") -> None:
        # Never the CONFIG_ERROR default ("fix the tenant's settings"): a history problem is not a tenant's.
        super().__init__(
            message, code=ErrorCode.CONFIG_ERROR, hint=hint or "Check [history] path and the file it names."
        )

    def __str__(self) -> str:
        # One line, what then how: "<what is wrong>. <what to do>"
        return f"{self.message.rstrip('. ')}. {self.hint}".strip()


class HistoryAlreadyRecordedError(HistoryError):
    """The run (a merge of the same parts) is already in the history; nothing was added."""


class HistoryLockedError(HistoryError):
    """Another run holds the history lock; this run audited nothing."""


class RunLock:
    """An exclusive, non-reentrant lock on one history database, held by one run."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = lock_path(database)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; raises :class:`HistoryLockedError`."""
        if self._fd is not None:
            raise RuntimeError("RunLock is already held")
        self.database.parent.mkdir(parents=True, exist_ok=True)
        # An empty file is a valid, empty SQLite database: creating it here is what HistoryStore.open does.
        fd = os.open(self.database, os.O_RDWR | os.O_CREAT, 0o640)
        deadline = time.monotonic() + max(0.0, timeout)
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                holder = _read_holder(self.path)
                os.close(fd)
                raise HistoryLockedError(
                    f"another auditor run is using the history {self.database}"
                    + (f" ({holder})" if holder else "")
                    + f"; waited {timeout:g} s; nothing was audited",
                    hint="Let that run finish (or stop it), then re-run; raise [history] lock_timeout_seconds "
                    "to wait longer.",
                )
            time.sleep(_POLL_SECONDS)
        self._fd = fd
        # Who holds it, for the message a second run prints. Written after locking, so it is never torn
        # by a concurrent writer; a reader may see an old line, which only makes the message less precise.
        # Best effort: the note is not the lock.
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        note = f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n"
        with contextlib.suppress(OSError):
            self.path.write_text(note, encoding="utf-8")

    def release(self) -> None:
        """Release the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlock(fd)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @staticmethod
    def is_held_elsewhere(database: Path) -> bool:
        """Whether a run holds ``database``'s lock right now (tells "in progress" from "interrupted");
        never waits and never creates anything. Ask before opening the database in this process (closing
        the probe's descriptor would drop an open SQLite connection's POSIX locks)."""
        try:
            fd = os.open(database, os.O_RDONLY)
        except OSError:
            return False
        try:
            if _try_lock(fd):
                _unlock(fd)
                return False
            return True
        finally:
            os.close(fd)


def lock_path(database: Path) -> Path:
    """The note beside a history database saying which run holds its lock: ``history.sqlite`` ->
    ``history.sqlite.lock`` (the lock itself is on the database file)."""
    return database.with_name(database.name + ".lock")


def _read_holder(note: Path) -> str:
    try:
        with note.open("rb") as handle:
            return handle.read(200).decode("utf-8", "replace").strip()
    except OSError:
        return ""


if sys.platform == "win32":  # pragma: no cover - the nightly job runs on POSIX; kept so Windows works too
    import msvcrt

    # Windows byte locks are mandatory: lock one byte far from the pages and from SQLite's own lock bytes
    # (0x40000000 + 512), so that SQLite's reads and locks are never blocked by ours.
    _LOCK_OFFSET = 0x50000000

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
