"""The run lock: at most one auditor run records into a history database at a time.

Why a lock file and not only SQLite's own locking: SQLite serialises *transactions*, which already keeps
the file from being corrupted, but two overlapping nightly runs would still interleave their notion of
"the previous run" and both pay for a full fleet audit. So a run takes this lock before it audits anything
and holds it until it has recorded its results; a second run waits ``lock_timeout_seconds`` and then
refuses with :class:`HistoryLockedError` (exit code 2, nothing audited), naming the process that holds it.

The lock is an advisory ``flock`` on ``<database>.lock``: the kernel drops it when the holder exits,
however it exits, so a killed run never leaves a stale lock behind. The file itself is never deleted
(deleting a lock file while another process waits on it is a classic race); it only carries a line
saying who holds it, for the error message. ``flock`` is not reliable on network file systems; keep the
history on a local disk (SQLite's WAL mode needs that anyway).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Final

from auditor.constants import ExitCode
from auditor.errors import AuditorError, ErrorCode

__all__ = ["HistoryError", "HistoryLockedError", "RunLock", "lock_path"]

_POLL_SECONDS: Final = 0.05


class HistoryError(AuditorError):
    """The history database cannot be used (locked, unreadable, from a newer version). Exit code 2."""

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message, code=ErrorCode.CONFIG_ERROR, hint=hint)

    def __str__(self) -> str:
        # One line, what then how: "<what is wrong>. <what to do>"
        return f"{self.message.rstrip('. ')}. {self.hint}".strip()


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        deadline = time.monotonic() + max(0.0, timeout)
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                holder = _read_holder(fd)
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
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        note = f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}\n".encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, note)

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
        never waits and never creates the lock file."""
        try:
            fd = os.open(lock_path(database), os.O_RDWR)
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
    """The lock file of a history database: ``history.sqlite`` -> ``history.sqlite.lock``."""
    return database.with_name(database.name + ".lock")


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        return ""


if sys.platform == "win32":  # pragma: no cover - the nightly job runs on POSIX; kept so Windows works too
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
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
