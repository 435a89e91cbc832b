"""The `auditor` command: one sub-module per command, assembled here."""

from __future__ import annotations

import typer

from . import audit, demo, doctor, history, merge, permissions, report, simulator

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
app.command(name="merge")(merge.merge)
app.command(name="history")(history.history)
app.command(name="doctor")(doctor.doctor)
app.command(name="permissions")(permissions.permissions)
app.add_typer(simulator.app, name="simulator")


@app.callback()
def _root() -> None:
    """uss-auditor."""
