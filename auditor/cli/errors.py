"""The one place where a command's expected errors become a message and an exit code.

Every command body runs inside :func:`command_context`: it sets up logging to stderr and turns

* an :class:`~auditor.errors.AuditorError` (a bad config, an unknown ``--format``, an unwritable
  ``--out``, ...) into ``error: <one line: what, where, how to fix>`` and the error's exit code
  (2 for usage and configuration problems);
* Ctrl+C into ``interrupted`` and exit code 130;
* anything else (a bug) into one line naming the exception and exit code 3, with the traceback only
  in the ``--verbose`` log.

A scheduler therefore never sees a traceback, and never sees exit code 1 ("gaps found") for a crash.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Final, NoReturn

import typer

from auditor.constants import ExitCode
from auditor.errors import AuditorError, redact
from auditor.logs import LogFormat
from auditor.output import logging_to_stderr

__all__ = ["INTERRUPTED", "ConfigOption", "FormatsOption", "LogFormatOption", "Verbose", "command_context"]

log = logging.getLogger("auditor.cli")

INTERRUPTED: Final = 130  # the shell's convention for SIGINT

# The --verbose/-v option every command takes.
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr (never secrets).")]

# The --config option of the commands that work on a fleet (audit, doctor).
ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        metavar="PATH",
        help="The TOML config file listing the tenants.",
        show_default=False,
    ),
]

# The --format option of the commands that write every report format (audit, merge).
FormatsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--format",
        "-f",
        metavar="FORMATS",
        help="Report formats, comma-separated or repeated (default: all available).",
    ),
]

# The --log-format option of the commands that log (all but `permissions` and `simulator`).
LogFormatOption = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar="AUDITOR_LOG_FORMAT",
        case_sensitive=False,
        help="Log lines on stderr: text, or json (one object per line: time, level, tenant, event, message).",
    ),
]


@contextlib.contextmanager
def command_context(verbose: bool = False, log_format: LogFormat = LogFormat.TEXT) -> Iterator[None]:
    """Run a command body with logging on stderr; expected errors exit with a message and their code.

    With JSON logs the message is a JSON log line too (``event`` ``command_failed``, with ``exit_code``),
    so that a log shipper sees nothing else on stderr.
    """
    with logging_to_stderr(verbose, log_format):
        json_logs = log_format is LogFormat.JSON
        try:
            yield
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # Typer's own control flow and usage errors
        except AuditorError as exc:
            log.debug("%s", type(exc).__name__, exc_info=True)
            _fail(str(exc), exc.exit_code, json_logs)
        except KeyboardInterrupt:
            _fail("interrupted", INTERRUPTED, json_logs)
        except Exception as exc:
            log.debug("unexpected error", exc_info=True)
            detail = redact(" ".join(str(exc).split()))
            _fail(
                f"internal error: {type(exc).__name__}" + (f": {detail}" if detail else "") + ". "
                "This is a bug in the auditor; re-run with --verbose and report the log.",
                ExitCode.TENANT_ERROR,
                json_logs,
            )


def _fail(message: str, code: int, json_logs: bool = False) -> NoReturn:
    if json_logs:
        log.error("%s", redact(message), extra={"event": "command_failed", "exit_code": int(code)})
    else:
        typer.echo(f"error: {redact(message)}", err=True)
    raise typer.Exit(int(code))
