"""Tenant results spooled to disk as they finish, so a run's memory does not grow with its mailboxes.

At 1,000 tenants x 2,000 users a run finds about 100,000 shared mailboxes; holding every tenant's list
until the reports are written is most of the run's memory. :meth:`TenantSpool.add` writes a finished
tenant's shared-mailbox list as one JSON line to a spool file and returns the result with a
:class:`SpooledMailboxes` in the list's place: its length is known (the counts and the billing need no
reading back), and iterating it reads that one line back. So the run keeps only the per-tenant summary
rows in memory; audit.json, the HTML page, the workbook, the history and the digest read each tenant's
mailboxes one tenant at a time.

The spool file is a hidden file in the ``--out`` directory (known to be writable: it is checked before
the run). On POSIX it is unlinked as soon as it is opened, so even a killed run leaves nothing behind;
the open descriptor keeps the data until the last result referring to it is gone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Final, overload

from auditor.model import SharedMailbox, TenantResult

__all__ = ["SpooledMailboxes", "TenantSpool"]

SPOOL_PREFIX: Final = ".spool."

log = logging.getLogger(__name__)


class _SpoolFile:
    """An append-only file of JSON lines, read back by (offset, length) with ``os.pread``."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=".jsonl", dir=directory)
        self.fd = fd
        self.path = Path(name)
        self.size = 0
        self._lock = threading.Lock()
        cleanup: Callable[[], None]
        if os.name == "posix":
            os.unlink(name)  # the descriptor keeps the data; a crash leaves no file
            cleanup = functools.partial(os.close, fd)
        else:  # pragma: no cover - Windows cannot unlink an open file
            cleanup = functools.partial(_close_and_remove, fd, name)
        self._finalizer = weakref.finalize(self, cleanup)

    def append(self, data: bytes) -> int:
        """Write ``data``; returns its offset."""
        with self._lock:
            offset = self.size
            view = memoryview(data)
            while view:
                written = os.pwrite(self.fd, view, offset + (len(data) - len(view)))
                view = view[written:]
            self.size += len(data)
        return offset

    def read(self, offset: int, length: int) -> bytes:
        chunks: list[bytes] = []
        while length > 0:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                raise OSError(f"spool file {self.path} is shorter than expected")
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)


def _close_and_remove(fd: int, name: str) -> None:  # pragma: no cover - Windows only
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


class SpooledMailboxes(Sequence[SharedMailbox]):
    """A tenant's shared-mailbox list kept on disk: ``len`` without reading, items read on access."""

    __slots__ = ("_count", "_file", "_length", "_offset")

    def __init__(self, file: _SpoolFile, offset: int, length: int, count: int) -> None:
        self._file = file
        self._offset = offset
        self._length = length
        self._count = count

    def load(self) -> tuple[SharedMailbox, ...]:
        """The list, read back from the spool (not cached: the caller holds it as long as it needs)."""
        items = json.loads(self._file.read(self._offset, self._length))
        return tuple(SharedMailbox.from_dict(item) for item in items)

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> SharedMailbox: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[SharedMailbox]: ...
    def __getitem__(self, index: int | slice) -> SharedMailbox | Sequence[SharedMailbox]:
        return self.load()[index]

    def __iter__(self) -> Iterator[SharedMailbox]:
        return iter(self.load())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == self._count and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.load())

    def __repr__(self) -> str:
        return f"SpooledMailboxes({self._count} mailbox(es) at {self._offset})"


class TenantSpool:
    """Where a run's tenant results go as they finish (see the module docstring)."""

    def __init__(self, file: _SpoolFile | None) -> None:
        self._file = file
        self._warned = False

    @classmethod
    def create(cls, directory: Path) -> TenantSpool:
        """A new spool in ``directory``. When no file can be made there the spool keeps every result as
        it is (in memory, as before) after one warning: a spool never costs a run."""
        try:
            return cls(_SpoolFile(Path(directory)))
        except OSError as exc:
            log.warning(
                "cannot spool tenant results in %s (%s); keeping them in memory",
                directory,
                exc.strerror or exc,
            )
            return cls(None)

    def add(self, result: TenantResult) -> TenantResult:
        """Spool ``result``'s shared mailboxes; returns the result holding them on disk."""
        census = result.mailboxes
        if (
            self._file is None
            or census is None
            or not census.shared_mailboxes
            or isinstance(census.shared_mailboxes, SpooledMailboxes)
        ):
            return result
        data = json.dumps(
            [m.to_dict() for m in census.shared_mailboxes], ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        try:
            offset = self._file.append(data + b"\n")
        except OSError as exc:
            # A full disk costs memory, not the run: this tenant's list stays in memory.
            if not self._warned:
                log.warning(
                    "cannot spool tenant results to disk (%s); keeping them in memory", exc.strerror or exc
                )
                self._warned = True
            return result
        spooled = SpooledMailboxes(self._file, offset, len(data), len(census.shared_mailboxes))
        return replace(result, mailboxes=replace(census, shared_mailboxes=spooled))

    def close(self) -> None:
        """Nothing to do: the file goes when the last result holding its mailboxes does. (For ``with``.)"""

    def __enter__(self) -> TenantSpool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
