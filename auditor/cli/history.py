"""`auditor history`: the recorded runs, or one tenant's timeline, from the config's history database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auditor.cli.errors import LogFormatOption, Verbose, command_context
from auditor.history.listing import DEFAULT_RUNS, HistoryQuery, show_history
from auditor.logs import LogFormat


def history(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            help="The TOML config file (its history settings say where the history is).",
            show_default=False,
        ),
    ],
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            "-t",
            metavar="NAME_OR_ID",
            help="Show this tenant's timeline (name or tenant id) instead of the list of runs.",
        ),
    ] = None,
    runs: Annotated[
        int, typer.Option("--runs", "-n", min=1, metavar="N", help="Show the latest N runs.")
    ] = DEFAULT_RUNS,
    verbose: Verbose = False,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """List the recorded runs (newest first), or show one tenant's timeline (oldest first).

    Runs: time, mode, tenants, billed shared mailboxes, monthly cost, tenants by status.

    --tenant: per run its status, billed, cost, remediation and findings; then its open gap's age and cost.
    """
    query = HistoryQuery(config=config, tenant=tenant, runs=runs)
    with command_context(verbose, log_format):
        text = show_history(query)
    typer.echo(text, nl=False)
