"""`auditor audit`: audit the configured tenants, write the reports, exit with a code a scheduler acts on."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from auditor.app import DEFAULT_OUT_DIR, AuditOptions
from auditor.app import audit as run_audit
from auditor.cli.errors import ConfigOption, FormatsOption, LogFormatOption, Verbose, command_context
from auditor.logs import LogFormat


def audit(
    config: ConfigOption,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="DIR", help="Directory for audit.json (and the other reports)."),
    ] = DEFAULT_OUT_DIR,
    tenant: Annotated[
        list[str] | None,
        typer.Option(
            "--tenant",
            "-t",
            metavar="NAME_OR_ID",
            help="Audit only this tenant (name or tenant id); repeatable.",
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Audit only tenants with this tag; repeatable."),
    ] = None,
    formats: FormatsOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="Tenants audited at once (default: run.concurrency in the config)."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Processes that audit at once, sharing the concurrency (default: this machine's cores, at "
            "most 8; 1 audits in-process). Small fleets, --remediate and --capture use one.",
            show_default=False,
        ),
    ] = None,
    remediate: Annotated[
        bool,
        typer.Option(
            "--remediate", help="Fix the Security Reader gap: plan, confirm, apply, verify, journal."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --remediate: show and record the plan, write nothing.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="With --remediate: apply without asking (needed without a terminal)."
        ),
    ] = False,
    max_changes: Annotated[
        int | None,
        typer.Option(
            "--max-changes", min=0, metavar="N", help="With --remediate: stop writing after N changes."
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="K/N",
            help="Audit only shard K of N (a stable split by tenant id) and write a part for `auditor merge`.",
            show_default=False,
        ),
    ] = None,
    capture: Annotated[
        Path | None,
        typer.Option(
            "--capture",
            metavar="DIR",
            help="Record every Graph and sign-in exchange per tenant into DIR (new or empty), without tokens "
            "or secrets, for reproducing a problem (README: Reporting a problem from a real tenant).",
            show_default=False,
        ),
    ] = None,
    capture_redact: Annotated[
        bool,
        typer.Option(
            "--capture-redact",
            help="With --capture: replace names, UPNs and mail addresses by stable pseudonyms.",
        ),
    ] = False,
    full_census: Annotated[
        bool,
        typer.Option(
            "--full-census",
            help="Read every user and mailbox tonight instead of continuing the stored census with the "
            "users delta (README: Incremental nights).",
        ),
    ] = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Audit every selected tenant and write the reports.

    Exit codes: 0 every tenant compliant, remediated or not connected; 1 a tenant still has a gap;
    2 usage or configuration error (nothing audited); 3 a tenant could not be audited; 4 audited (and
    recorded) but the reports could not be written (the previous reports are intact).

    --remediate only ever creates an active Security Reader assignment at '/' for the vendor app that
    the audit identified; it never deletes, never touches another principal and refuses look-alikes.
    """
    options = AuditOptions(
        config=config,
        out_dir=out,
        tenants=tuple(tenant or ()),
        tags=tuple(tag or ()),
        formats=tuple(formats or ()),
        concurrency=concurrency,
        workers=workers,
        remediate=remediate,
        dry_run=dry_run,
        yes=yes,
        max_changes=max_changes,
        interactive=sys.stdin.isatty() and sys.stdout.isatty(),
        shard=shard,
        capture=capture,
        capture_redact=capture_redact,
        full_census=full_census,
    )
    with command_context(verbose, log_format):
        outcome = run_audit(options)
    raise typer.Exit(outcome.exit_code)
