"""The `auditor` command: one sub-module per command, assembled here."""

from __future__ import annotations

import typer

from . import audit, demo, report, simulator

app = typer.Typer(
    name="auditor",
    help="Audit the USS AzureAD app's permissions across Entra ID tenants and what shared mailboxes cost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="audit")(audit.audit)
app.command(name="demo")(demo.demo)
app.command(name="report")(report.report)
app.add_typer(simulator.app, name="simulator")


@app.callback()
def _root() -> None:
    """uss-auditor."""
