"""`auditor demo`: start the Graph simulator, audit its demo fleet, print where the reports are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auditor.app import DEFAULT_DEMO_OUT_DIR
from auditor.cli.errors import LogFormatOption, Verbose, command_context
from auditor.logs import LogFormat


def demo(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="DIR", help="Directory for the demo's reports and its config."),
    ] = DEFAULT_DEMO_OUT_DIR,
    verbose: Verbose = False,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Audit a built-in sample fleet served by the Graph simulator: no Microsoft account needed.

    Exits 0 when the audit completed (the sample fleet has gaps and errors on purpose), non-zero when the
    demo itself could not run.
    """
    from auditor.demo import DemoOptions, run_demo  # the simulator (aiohttp, cryptography) loads only here

    with command_context(verbose, log_format):
        code = run_demo(DemoOptions(out_dir=out))
    raise typer.Exit(code)
