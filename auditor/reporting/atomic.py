"""Atomic report writes: a crash never leaves a half-written report where a good one was (DESIGN §3.1).

The new content goes to a temporary file in the target's own directory (so the final rename never
crosses a file system), is flushed to disk, and then replaces the target with :func:`os.replace`, which
is atomic on POSIX and Windows. Readers see either the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

__all__ = ["DEFAULT_MODE", "atomic_path", "atomic_write_bytes", "atomic_write_text", "publish"]

# Reports are read by people and other tools (a shared folder, a mail job): ordinary file permissions,
# not the owner-only mode tempfile gives its files. Always this mode (or the one [reports] file_mode
# asks for), never the mode of whatever was there before: a report replacing a world-writable file, or a
# symlink to one, must not become world-writable itself.
DEFAULT_MODE: Final = 0o644


@contextlib.contextmanager
def atomic_path(target: Path, *, mode: int = DEFAULT_MODE) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` (a symlink there is
    replaced, never followed) with permission bits ``mode``; on error it is removed.

    For writers that want a file name rather than bytes (``openpyxl.Workbook.save``)::

        with atomic_path(out) as tmp:
            workbook.save(tmp)
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(target: Path, data: bytes, *, mode: int = DEFAULT_MODE) -> Path:
    """Write ``data`` to ``target`` atomically; returns ``target``."""
    with atomic_path(target, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: Path, text: str, encoding: str = "utf-8", *, mode: int = DEFAULT_MODE) -> Path:
    """Write ``text`` to ``target`` atomically; returns ``target``."""
    return atomic_write_bytes(target, text.encode(encoding), mode=mode)


def publish(staged: Sequence[Path], out_dir: Path, *, mode: int = DEFAULT_MODE) -> list[Path]:
    """Move a complete, staged set of files into ``out_dir`` (same file names), replacing the previous set.

    The files were written (and flushed) into a staging directory first, so a full disk or a failing
    writer never touches ``out_dir``. The switch checks every target first (a directory where a file
    belongs refuses the whole set), moves each previous file aside and each new one in; if any rename
    fails, the ones done are undone, so ``out_dir`` holds the complete old set or the complete new one.
    Returns the published paths; raises ``OSError`` (``out_dir`` then as before).
    """
    out_dir = Path(out_dir)
    targets = [out_dir / path.name for path in staged]
    for target in targets:
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way of a report file", str(target))
    for path in staged:
        os.chmod(path, mode)
    aside = Path(tempfile.mkdtemp(prefix=".previous.", dir=out_dir))
    done: list[tuple[Path, Path, Path | None]] = []  # (new file, target, where the previous file went)
    try:
        for path, target in zip(staged, targets, strict=True):
            previous: Path | None = None
            if target.exists() or target.is_symlink():
                previous = aside / target.name
                os.replace(target, previous)
            done.append((path, target, previous))
            os.replace(path, target)
    except BaseException:
        for path, target, previous in reversed(done):
            with contextlib.suppress(OSError):
                if target.exists() and not path.exists():
                    os.replace(target, path)
                if previous is not None:
                    os.replace(previous, target)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    _fsync_dir(out_dir)
    return targets


def _fsync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
