"""Reports: the files a run leaves in ``--out DIR`` (DESIGN §3.1), one module per format.

:func:`write_reports` is the one entry point: it checks the requested format names, writes each
report atomically (a crash never leaves a half file where a good one was) and returns the paths.
Writers are imported only when used, so asking for ``json`` does not load a spreadsheet library.

To add a format, add a :class:`ReportFormat` to :data:`FORMATS`: a name (what ``--format`` takes), the
file name inside ``--out`` and a ``write(run, path) -> path`` function.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final

from auditor.constants import ExitCode
from auditor.errors import AuditorError, ErrorCode
from auditor.model import RunResult
from auditor.reporting.atomic import DEFAULT_MODE, publish

__all__ = [
    "FORMATS",
    "OutputDirectoryError",
    "ReportError",
    "ReportFormat",
    "RunFileError",
    "UnknownFormatError",
    "parse_formats",
    "prepare_out_dir",
    "write_reports",
]


class ReportError(AuditorError):
    """A report cannot be written or read. A usage problem: the CLI exits with code 2."""

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message, code=ErrorCode.CONFIG_ERROR, hint=hint)


class UnknownFormatError(ReportError):
    """``--format`` names a format this version cannot write."""


class OutputDirectoryError(ReportError):
    """``--out`` cannot be created or written to, or a report file could not be written there."""


class RunFileError(ReportError):
    """A saved ``audit.json`` is missing, not JSON, or not a document this version can read."""


@dataclass(frozen=True)
class ReportFormat:
    """One report format: its ``--format`` name, its file name in ``--out`` and how to write it."""

    name: str
    filename: str
    write: Callable[[RunResult, Path, Any, Path | None], Path]  # (run, path, insights, templates)


def _write_json(run: RunResult, path: Path, insights: Any = None, templates: Path | None = None) -> Path:
    # audit.json is the run's contract (DESIGN §3.3); history stays in the history database.
    from auditor.reporting.json_report import write_json

    return write_json(run, path)


def _write_html(run: RunResult, path: Path, insights: Any = None, templates: Path | None = None) -> Path:
    from auditor.reporting.html import render_html

    return render_html(run, path, templates=templates, insights=insights)


def _write_xlsx(run: RunResult, path: Path, insights: Any = None, templates: Path | None = None) -> Path:
    from auditor.reporting.excel import render_excel

    return render_excel(run, path, insights=insights)


# In the order they are written: audit.json first, the record the others are rendered from.
FORMATS: Final[Mapping[str, ReportFormat]] = MappingProxyType(
    {
        "json": ReportFormat("json", "audit.json", _write_json),
        "html": ReportFormat("html", "audit.html", _write_html),
        "xlsx": ReportFormat("xlsx", "audit.xlsx", _write_xlsx),
    }
)


def parse_formats(values: Iterable[str] | None) -> tuple[str, ...]:
    """Format names from ``--format`` values, which may be repeated and/or comma-separated
    (``--format html,json``). Case-insensitive; duplicates dropped; none given means every format.

    Raises :class:`UnknownFormatError` listing the available formats.
    """
    names: list[str] = []
    for value in values or ():
        for part in value.split(","):
            name = part.strip().casefold()
            if name and name not in names:
                names.append(name)
    if not names:
        return tuple(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise UnknownFormatError(
            f"--format {', '.join(unknown)}: unknown report format{'s' if len(unknown) > 1 else ''}",
            hint=f"Use one or more of: {', '.join(FORMATS)} (comma-separated, or --format repeated).",
        )
    return tuple(names)


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and prove it is writable (before anything is audited, so a wrong
    ``--out`` costs seconds, not a whole night's run). Returns it; raises :class:`OutputDirectoryError`."""
    out_dir = Path(out_dir)
    hint = "Pass --out with a directory you can write to."
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputDirectoryError(f"--out {out_dir}: exists and is not a directory", hint=hint) from None
    except OSError as exc:
        raise OutputDirectoryError(
            f"--out {out_dir}: cannot create the directory ({exc.strerror or exc})", hint=hint
        ) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out_dir)
    except OSError as exc:
        raise OutputDirectoryError(
            f"--out {out_dir}: cannot write in the directory ({exc.strerror or exc})", hint=hint
        ) from None
    os.close(fd)
    os.unlink(probe)
    return out_dir


def write_reports(
    run: RunResult,
    out_dir: Path,
    formats: Iterable[str] | None = None,
    *,
    insights: Any = None,
    templates: Path | None = None,
    file_mode: int = DEFAULT_MODE,
) -> list[Path]:
    """Write ``run`` in each of ``formats`` (names as :func:`parse_formats` accepts; ``None``: all) into
    ``out_dir``; returns the paths written, in :data:`FORMATS` order.

    ``insights`` (from :mod:`auditor.history`: a ``RunInsights``, a ``HistoryUnavailable`` or None) adds
    what changed since the previous run, gap ages, accrued cost and the trend to the HTML and Excel reports.
    ``templates`` is a directory overriding the HTML templates file by file (``auditor report --templates``).
    ``file_mode`` is the permission bits of every file written (``[reports] file_mode``).

    Every file is first written into a staging directory inside ``out_dir``; only when all of them are
    complete are they switched into place (:func:`~auditor.reporting.atomic.publish`). So ``out_dir``
    holds either the complete new set or the complete previous one, never the new audit.json beside the
    previous run's HTML.

    Raises :class:`UnknownFormatError` before writing anything, and :class:`OutputDirectoryError` when the
    directory or a file cannot be written (the previous reports are then untouched).
    """
    wanted = parse_formats(formats)
    out_dir = prepare_out_dir(out_dir)
    hint = "Check free space and permissions of the --out directory, then re-run."
    try:
        staging = Path(tempfile.mkdtemp(prefix=".staging.", dir=out_dir))
    except OSError as exc:
        raise OutputDirectoryError(f"cannot write in {out_dir} ({exc.strerror or exc})", hint=hint) from exc
    try:
        staged: list[Path] = []
        for report in FORMATS.values():
            if report.name not in wanted:
                continue
            target = out_dir / report.filename
            try:
                staged.append(report.write(run, staging / report.filename, insights, templates))
            except OSError as exc:
                raise OutputDirectoryError(
                    f"cannot write {target} ({exc.strerror or exc})", hint=hint
                ) from exc
        try:
            return publish(staged, out_dir, mode=file_mode)
        except OSError as exc:
            where = exc.filename or out_dir
            raise OutputDirectoryError(
                f"cannot replace the reports in {out_dir}: {where}: {exc.strerror or exc}",
                hint="Move what is in the way (e.g. a directory named like a report) or fix the permissions "
                "of the --out directory, then re-run.",
            ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
