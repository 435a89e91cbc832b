"""`auditor report RUN_JSON --out DIR`: re-render the HTML page and the Excel workbook from a saved run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auditor.cli.errors import LogFormatOption, Verbose, command_context
from auditor.logs import LogFormat
from auditor.reporting.render import RenderOptions, parse_human_formats, render_saved_run

__all__ = ["report"]


def report(
    run_json: Annotated[
        Path, typer.Argument(help="An audit.json written by `auditor audit`.", show_default=False)
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Directory to write audit.html / audit.xlsx into (created if needed).",
            show_default=False,
        ),
    ],
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="html and/or xlsx, comma-separated or repeated (default: both)."),
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option(
            "--templates",
            help="Directory with your own audit.html.j2, audit.css and/or audit.js (branding); files it "
            "lacks come from the built-in templates.",
            show_default=False,
        ),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            help="A history database (as `auditor audit` keeps it): adds the changes since the previous "
            "run, gap ages, accrued cost and the trend to the reports.",
            show_default=False,
        ),
    ] = None,
    verbose: Verbose = False,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Re-render the HTML and Excel reports from a saved audit.json; prints the files written."""
    with command_context(verbose, log_format):
        options = RenderOptions(run_json, out, parse_human_formats(formats), templates, history)
        written = render_saved_run(options)
    for path in written:
        typer.echo(str(path))
