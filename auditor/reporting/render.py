"""Re-render the human reports (HTML page, Excel workbook) of a saved run: ``auditor report``.

Reading the run, checking ``--out`` and the error types are those of :mod:`auditor.reporting`; this
module adds what ``auditor report`` has that ``auditor audit`` has not: ``--templates DIR``, and
``--history PATH`` (the run's insights are read back from that history database and rendered).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from auditor.history import HistoryStore, RunInsights
from auditor.model import RunResult
from auditor.reporting import UnknownFormatError, write_reports
from auditor.reporting.json_report import read_run

if TYPE_CHECKING:  # the renderers (pandas, openpyxl) load only when a report is written
    from auditor.reporting.rows import Insights

__all__ = [
    "HUMAN_FORMATS",
    "RenderOptions",
    "load_insights",
    "parse_human_formats",
    "render_reports",
    "render_saved_run",
]

# What `auditor report` writes (the JSON is its input), in this order (DESIGN §3.1).
HUMAN_FORMATS: Final = ("html", "xlsx")


@dataclass(frozen=True)
class RenderOptions:
    """What ``auditor report`` was asked to do."""

    run_json: Path
    out_dir: Path
    formats: tuple[str, ...] = HUMAN_FORMATS
    templates: Path | None = None
    history: Path | None = None  # a history database to read the run's insights from


def parse_human_formats(values: Iterable[str] | None) -> tuple[str, ...]:
    """``--format`` values (repeated and/or comma-separated, any case) -> format names, in
    :data:`HUMAN_FORMATS` order; none given means both. Raises :class:`UnknownFormatError`."""
    names = {part.strip().casefold() for value in values or () for part in value.split(",")} - {""}
    if not names:
        return HUMAN_FORMATS
    unknown = sorted(names - set(HUMAN_FORMATS))
    if unknown:
        why = " (audit.json is what this command reads)" if unknown == ["json"] else ""
        raise UnknownFormatError(
            f"--format {', '.join(unknown)}: not a format `auditor report` writes{why}",
            hint=f"Use one or more of: {', '.join(HUMAN_FORMATS)} (comma-separated, or --format repeated).",
        )
    return tuple(f for f in HUMAN_FORMATS if f in names)


def render_reports(
    run: RunResult,
    out_dir: Path,
    formats: Iterable[str] = HUMAN_FORMATS,
    *,
    templates: Path | None = None,
    insights: Insights = None,
) -> list[Path]:
    """Write ``audit.html`` / ``audit.xlsx`` for ``run`` (with history ``insights``, if given) into
    ``out_dir``, each atomically; returns the paths (:func:`auditor.reporting.write_reports` with
    ``--templates``). Raises :class:`OutputDirectoryError` when ``out_dir`` or a file cannot be written (a
    file it was writing keeps its previous content) and :class:`TemplateDirectoryError` for unusable
    templates."""
    return write_reports(run, out_dir, formats, insights=insights, templates=templates)


def load_insights(history: Path, run_id: str) -> RunInsights:
    """The insights of run ``run_id`` from the history database at ``history`` (never created here).

    Raises :class:`~auditor.history.HistoryError` (exit code 2) when the database cannot be read or does
    not hold that run.
    """
    with HistoryStore.open(history, create=False) as store:
        return store.insights(run_id)


def render_saved_run(options: RenderOptions) -> list[Path]:
    """``auditor report``: read the saved audit.json and render the requested formats from it (with the
    run's history when ``options.history`` names a history database)."""
    run = read_run(options.run_json)
    insights = load_insights(options.history, run.run_id) if options.history is not None else None
    return render_reports(
        run, options.out_dir, options.formats, templates=options.templates, insights=insights
    )
