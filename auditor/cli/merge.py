"""`auditor merge PART... --out DIR`: one run and one set of reports from the parts of a sharded audit."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from auditor.cli.errors import FormatsOption, LogFormatOption, Verbose, command_context
from auditor.logs import LogFormat
from auditor.shard import DEFAULT_MAX_START_SPREAD, MergeOptions, merge_reports

__all__ = ["merge"]

_DEFAULT_SPREAD_HOURS = DEFAULT_MAX_START_SPREAD.total_seconds() / 3600


def merge(
    parts: Annotated[
        list[Path],
        typer.Argument(
            help="The --out directory (or its audit.json) of every `auditor audit --shard K/N` run.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Directory for the merged audit.json (and the other reports); not one of the parts.",
            show_default=False,
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            help="The config file the shards were run with; the parts are checked against it.",
            show_default=False,
        ),
    ] = None,
    formats: FormatsOption = None,
    max_spread: Annotated[
        float,
        typer.Option(
            "--max-spread",
            min=0,
            metavar="HOURS",
            help="Refuse parts whose audits started more than HOURS apart (a stale part from an earlier "
            "night); 0 turns the check off.",
        ),
    ] = _DEFAULT_SPREAD_HOURS,
    verbose: Verbose = False,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Merge the parts of a sharded audit into one run and write its reports.

    Every shard 1..N must be given exactly once, all from the same config, tenant selection, mode and
    auditor version; otherwise nothing is written and the exit code is 2. Tenants are listed in config
    order, as in an unsharded run.

    Exit codes (for the merged tenants): 0 every tenant compliant, remediated or not connected; 1 a tenant
    still has a gap; 2 the parts cannot be merged (or were merged and recorded before: nothing is written);
    3 a tenant could not be audited; 4 merged (and recorded) but the reports could not be written.

    Each part's shard.json carries the SHA-256 of its audit.json and remediation.jsonl: a part changed
    after it was written is refused. With --config, each tenant's price, currency and cost are checked
    against the config too.
    """
    options = MergeOptions(
        parts=tuple(parts),
        out_dir=out,
        formats=tuple(formats or ()),
        max_start_spread=timedelta(hours=max_spread) if max_spread > 0 else None,
        config=config,
    )
    with command_context(verbose, log_format):
        outcome = merge_reports(options)
    raise typer.Exit(outcome.exit_code)
