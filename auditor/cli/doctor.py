"""`auditor doctor`: check per tenant that the nightly audit can work, and print what to fix."""

from __future__ import annotations

from typing import Annotated

import typer

from auditor.cli.errors import ConfigOption, LogFormatOption, Verbose, command_context
from auditor.doctor import DoctorOptions, print_report, run_doctor
from auditor.logs import LogFormat

__all__ = ["doctor"]


def doctor(
    config: ConfigOption,
    tenant: Annotated[
        list[str] | None,
        typer.Option(
            "--tenant",
            "-t",
            metavar="NAME_OR_ID",
            help="Check only this tenant (name or tenant id); repeatable.",
        ),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Check only tenants with this tag; repeatable."),
    ] = None,
    audit_only: Annotated[
        bool,
        typer.Option(
            "--audit-only", help="Do not check what --remediate needs (RoleManagement.ReadWrite.Directory)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
    verbose: Verbose = False,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Check per tenant: a token can be had, its app permissions, certificate/secret expiry, the vendor app.

    Prints a table with a fix for every problem. Exit codes: 0 nothing to fix; 1 a problem or warning
    was found; 2 the config cannot be used. Read-only: it never writes to a tenant.
    """
    options = DoctorOptions(
        config=config,
        tenants=tuple(tenant or ()),
        tags=tuple(tag or ()),
        audit_only=audit_only,
        as_json=as_json,
    )
    with command_context(verbose, log_format):
        report = run_doctor(options)
    print_report(report, as_json=options.as_json)
    raise typer.Exit(report.exit_code)
