"""What a run shows on the terminal: log lines, progress, and the end-of-run summary.

Two audiences, told apart by whether the stream is a terminal:

* a person at a terminal gets a progress bar and a table (rich);
* a scheduler or a log collector gets plain text: one log line per tenant as it finishes
  (``[3/15] Contoso Healthcare: compliant (2.1 s)``) and a fixed-width summary, no colours, no cursor
  tricks, nothing that garbles a log file.

Progress and logs go to stderr; the summary and the report paths go to stdout. Tenant names are tenant
data: they are always rendered as plain text, never as rich markup, and their control and bidi characters
(ESC, NUL, U+202E, ...) are shown as visible ``[U+XXXX]`` markers (:func:`terminal_text`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Final, TextIO

import rich.progress
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from auditor.errors import redact
from auditor.logs import LogFormat, json_log_handler
from auditor.model import RunResult, RunSummary, Status, TenantResult
from auditor.reporting.text import terminal_text
from auditor.runner import Progress

__all__ = [
    "BarProgress",
    "LineProgress",
    "logging_to_stderr",
    "print_summary",
    "progress_for_stderr",
    "stderr_console",
    "summary_table",
    "summary_text",
]

log = logging.getLogger(__name__)
progress_log = logging.getLogger("auditor.progress")

# Above this many tenants the summary lists only those that need attention (the reports list them all).
SUMMARY_MAX_ROWS: Final = 50

_STATUS_STYLE: Final = {
    Status.COMPLIANT: "green",
    Status.REMEDIATED: "cyan",
    Status.NOT_CONNECTED: "dim",
    Status.NON_COMPLIANT: "bold red",
    Status.AMBIGUOUS: "yellow",
    Status.ERROR: "bold magenta",
}
_NEEDS_ATTENTION: Final = frozenset({Status.NON_COMPLIANT, Status.AMBIGUOUS, Status.ERROR})
_UNKNOWN: Final = "unknown"
_HEADERS: Final = ("Tenant", "Status", "Findings", "Shared", "Billed")


# --- consoles and logging -------------------------------------------------------------------------------


@functools.cache
def stderr_console() -> Console:
    """The one rich console on stderr, shared by the log handler and the progress bar so that log lines
    print above the bar instead of through it. It follows ``sys.stderr`` when that is replaced."""
    return Console(stderr=True, highlight=False)


class _RedactingFormatter(logging.Formatter):
    """A text formatter whose every line (traceback included) passes through :func:`redact`, with the
    control and bidi characters of tenant data made visible (:func:`terminal_text`, line by line)."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(terminal_text(line) for line in redact(super().format(record)).split("\n"))


# Set while a command logs JSON lines: progress is then log lines too, never a bar drawn on stderr.
_json_logs = False


@contextlib.contextmanager
def logging_to_stderr(verbose: bool = False, log_format: LogFormat = LogFormat.TEXT) -> Iterator[None]:
    """Send log records to stderr for the duration of a command: the auditor's own at INFO (DEBUG when
    ``verbose``), other libraries' at WARNING and above. Restores the previous logging setup after.

    ``log_format`` JSON writes one JSON object per line (time, level, tenant, event, message) for log
    shippers; text is human lines (rich on a terminal). Nothing the auditor logs contains a secret
    (credentials are referenced by environment variable name), and every line is still scrubbed of
    registered secret values and anything that looks like a credential.
    """
    global _json_logs
    console = stderr_console()
    handler: logging.Handler
    if log_format is LogFormat.JSON:
        handler = json_log_handler(sys.stderr)
    elif console.is_terminal:
        handler = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(_RedactingFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)-7s %(message)s"))
    root = logging.getLogger()
    package = logging.getLogger("auditor")
    previous_level, previous_json = package.level, _json_logs
    package.setLevel(logging.DEBUG if verbose else logging.INFO)
    _json_logs = log_format is LogFormat.JSON
    if _json_logs:
        # A library's Python warning would otherwise be a bare text line among the JSON ones.
        logging.captureWarnings(True)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        package.setLevel(previous_level)
        if _json_logs:
            logging.captureWarnings(False)
        _json_logs = previous_json
        handler.close()


# --- progress -------------------------------------------------------------------------------------------


class LineProgress:
    """One INFO log line per finished tenant: ``[3/15] Contoso Healthcare: compliant (2.1 s)``."""

    def __init__(self, logger: logging.Logger = progress_log) -> None:
        self._log = logger
        self._total = 0
        self._done = 0

    def start(self, total: int) -> None:
        """Remember the total for the ``[n/total]`` prefix."""
        self._total = total
        self._done = 0

    def tenant_done(self, result: TenantResult, seconds: float) -> None:
        """Log the tenant's status (and error code) and how long it took."""
        self._done += 1
        self._log.info(
            "[%d/%d] %s: %s (%.1f s)",
            self._done,
            self._total,
            result.name,
            _status_word(result),
            seconds,
            extra={
                "event": "tenant_done",
                "tenant": result.name,
                "tenant_id": result.tenant_id,
                "status": result.status.value,
                "error_code": result.error.code.value if result.error is not None else None,
                "seconds": round(seconds, 3),
            },
        )

    def finish(self) -> None:
        """Nothing to tidy up."""


class BarProgress:
    """A rich progress bar on the stderr console, naming the tenant that finished last."""

    def __init__(self, console: Console | None = None) -> None:
        self._bar = rich.progress.Progress(
            rich.progress.SpinnerColumn(),
            rich.progress.TextColumn("{task.description}"),
            rich.progress.BarColumn(),
            rich.progress.MofNCompleteColumn(),
            rich.progress.TimeElapsedColumn(),
            console=console or stderr_console(),
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task: rich.progress.TaskID | None = None

    def start(self, total: int) -> None:
        """Show the bar."""
        self._task = self._bar.add_task("Auditing tenants", total=total)
        self._bar.start()

    def tenant_done(self, result: TenantResult, seconds: float) -> None:
        """Advance the bar by one tenant."""
        if self._task is not None:
            # escape(): a tenant name is data, not rich markup.
            description = f"{escape(terminal_text(result.name))}: {_status_word(result)}"
            self._bar.update(self._task, advance=1, description=description)

    def finish(self) -> None:
        """Stop redrawing; the finished bar stays on screen."""
        self._bar.stop()


def progress_for_stderr() -> Progress:
    """A bar when stderr is a terminal (and logs are text), otherwise one log line per tenant."""
    console = stderr_console()
    return BarProgress(console) if console.is_terminal and not _json_logs else LineProgress()


# --- summary --------------------------------------------------------------------------------------------


def print_summary(run: RunResult, stream: TextIO | None = None, *, max_rows: int = SUMMARY_MAX_ROWS) -> None:
    """Print the end-of-run summary to ``stream`` (default stdout): a table on a terminal, plain text
    otherwise."""
    stream = stream if stream is not None else sys.stdout
    if stream.isatty():
        Console(file=stream, highlight=False).print(summary_table(run, max_rows=max_rows))
        errors = _error_lines(run.tenants)
        if errors:
            stream.write("\n".join(["", "Could not audit:", *errors]) + "\n")
        if run.vendor_nowhere_notice:
            stream.write(f"\nWARNING: {run.vendor_nowhere_notice}\n")
    else:
        stream.write(summary_text(run, max_rows=max_rows))
    stream.flush()


def summary_text(run: RunResult, *, max_rows: int = SUMMARY_MAX_ROWS) -> str:
    """The summary as fixed-width plain text (for logs): one row per tenant, totals, then the tenants
    that could not be audited with their error code and what to do."""
    summary = run.summary()
    shown, hidden = _rows_to_show(run.tenants, max_rows)
    headers = (*_HEADERS, f"Monthly cost ({run.currency})")
    rows = [_row(r) for r in shown]
    totals = _totals_row(summary)
    widths = [max(len(cells[i]) for cells in (headers, *rows, totals)) for i in range(len(headers))]
    numeric = {3, 4, 5}

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    out = [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    if hidden:
        out.append(hidden)
    out += [line(["-" * w for w in widths]), line(totals), "", _status_counts(summary)]
    if summary.tenants_with_unknown_cost:
        out.append(_unknown_cost_note(summary))
    errors = _error_lines(run.tenants)
    if errors:
        out += ["", "Could not audit:", *errors]
    if run.vendor_nowhere_notice:
        out += ["", f"WARNING: {run.vendor_nowhere_notice}"]
    return "\n".join(out) + "\n"


def summary_table(run: RunResult, *, max_rows: int = SUMMARY_MAX_ROWS) -> Table:
    """The summary as a rich table (for a terminal); every cell is plain text, never markup."""
    summary = run.summary()
    shown, hidden = _rows_to_show(run.tenants, max_rows)
    caption = _status_counts(summary)
    if summary.tenants_with_unknown_cost:
        caption += "\n" + _unknown_cost_note(summary)
    if hidden:
        caption = hidden + "\n" + caption
    table = Table(title="Audit summary", caption=Text(caption), caption_justify="left")
    table.add_column("Tenant", overflow="fold")
    table.add_column("Status", no_wrap=True)
    table.add_column("Findings", overflow="fold")
    table.add_column("Shared", justify="right")
    table.add_column("Billed", justify="right")
    table.add_column(f"Monthly cost ({run.currency})", justify="right")
    for result in shown:
        cells = _row(result)
        style = _STATUS_STYLE.get(result.status, "")
        table.add_row(Text(cells[0]), Text(cells[1], style=style), *(Text(c) for c in cells[2:]))
    table.add_section()
    table.add_row(*(Text(c, style="bold") for c in _totals_row(summary)))
    return table


def _status_word(result: TenantResult) -> str:
    if result.status is Status.ERROR and result.error is not None:
        return f"{result.status.value} {result.error.code.value}"
    return result.status.value


def _rows_to_show(results: Sequence[TenantResult], max_rows: int) -> tuple[list[TenantResult], str]:
    if len(results) <= max_rows:
        return list(results), ""
    attention = [r for r in results if r.status in _NEEDS_ATTENTION]
    shown = attention[:max_rows]
    left_out = len(results) - len(shown)
    return shown, f"... {left_out} more tenant(s) not shown here (every tenant is in the reports)"


def _row(result: TenantResult) -> tuple[str, ...]:
    codes = ", ".join(sorted(f.code.value for f in result.findings)) or "-"
    shared = str(result.mailboxes.shared) if result.mailboxes is not None else _UNKNOWN
    billed = result.billing.billed_shared_mailboxes
    cost = result.billing.monthly_cost
    return (
        terminal_text(result.name),
        result.status.value,
        codes,
        shared,
        _UNKNOWN if billed is None else str(billed),
        _UNKNOWN if cost is None else f"{cost:,.2f}",
    )


def _totals_row(summary: RunSummary) -> tuple[str, ...]:
    return (
        f"Total ({summary.tenants} tenant{'s' if summary.tenants != 1 else ''})",
        "",
        "",
        str(summary.shared_mailboxes),
        str(summary.billed_shared_mailboxes),
        f"{summary.estimated_monthly_cost:,.2f}",
    )


def _status_counts(summary: RunSummary) -> str:
    counts = ", ".join(f"{n} {status.value}" for status, n in summary.by_status.items() if n)
    return f"Tenants: {counts or 'none'}."


def _unknown_cost_note(summary: RunSummary) -> str:
    n = summary.tenants_with_unknown_cost
    return (
        f"The estimated monthly cost of {summary.estimated_monthly_cost:,.2f} {summary.currency} is a lower "
        f"bound: {n} tenant{'s' if n != 1 else ''} could not be priced."
    )


def _error_lines(results: Sequence[TenantResult]) -> list[str]:
    return [
        terminal_text(f"  {r.name} ({r.tenant_id}): {r.error.code.value}: {r.error.hint}")
        for r in results
        if r.status is Status.ERROR and r.error is not None
    ]
