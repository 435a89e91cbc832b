"""The end of a run, shared by `auditor audit` and `auditor merge`: the reports, the summary, the
notifications and the exit code.

Both commands reach this point with a run whose tenants were audited (and recorded in the history); what
happens now must never cost that run its summary. So a report that cannot be written (a full disk, a
directory named ``audit.html`` in ``--out``) does not raise: the summary is still printed, the previous
reports stay as they were (:func:`auditor.reporting.write_reports` stages, then switches) and the exit code
is 4 (DESIGN §3.1), which says exactly that.

Lives apart from :mod:`auditor.app` so that :mod:`auditor.shard` can use it: the dependency points one
way, ``app -> shard -> outcome``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from auditor.config import AuditConfig
from auditor.constants import ExitCode
from auditor.errors import register_secret
from auditor.evaluate import exit_code
from auditor.history import RunInsights, history_settings
from auditor.model import RunResult
from auditor.notify import NotificationSettings, Policy, WebhookSettings, format_outcomes, notify
from auditor.output import print_summary
from auditor.reporting import ReportError, write_reports
from auditor.reporting.atomic import DEFAULT_MODE

__all__ = [
    "ReportsWritten",
    "exit_code_meaning",
    "finish_run",
    "prepare_notifications",
    "send_notifications",
    "write_run_reports",
]

log = logging.getLogger(__name__)

_EXIT_MEANINGS: Final = {
    ExitCode.OK: "every audited tenant is compliant, remediated or not connected",
    ExitCode.GAPS: "at least one tenant still has a gap (non_compliant or ambiguous), or the vendor app "
    "was found in none of the tenants",
    ExitCode.USAGE: "usage or configuration error: nothing was audited",
    ExitCode.TENANT_ERROR: "at least one tenant could not be audited",
    ExitCode.REPORTS_FAILED: "the tenants were audited (and recorded) but the reports could not be written; "
    "the previous reports are intact",
}


def exit_code_meaning(code: int) -> str:
    """What an exit code of `auditor audit` means, in words (DESIGN §3.1)."""
    try:
        return _EXIT_MEANINGS[ExitCode(code)]
    except ValueError:
        return "unexpected exit code"


@dataclass(frozen=True)
class ReportsWritten:
    """The report files written, or why none were (``error``; the previous reports are then intact)."""

    paths: tuple[Path, ...]
    error: str = ""


def write_run_reports(
    run: RunResult,
    out_dir: Path,
    formats: Iterable[str],
    *,
    insights: Any = None,
    file_mode: int = DEFAULT_MODE,
) -> ReportsWritten:
    """:func:`~auditor.reporting.write_reports` for a run that has happened: never raises for a report
    that cannot be written (logs it and returns the reason)."""
    try:
        return ReportsWritten(
            tuple(write_reports(run, out_dir, formats, insights=insights, file_mode=file_mode))
        )
    except ReportError as exc:
        reason = str(exc)
    except OSError as exc:
        reason = f"cannot write the reports in {out_dir} ({exc.strerror or exc})"
    log.error("The reports could not be written: %s", reason, extra={"event": "reports_failed"})
    return ReportsWritten((), reason)


def finish_run(
    run: RunResult,
    written: ReportsWritten,
    out_dir: Path,
    stdout: TextIO,
    *,
    notes: Sequence[str] = (),
    settings: NotificationSettings | None = None,
    insights: RunInsights | object = None,
) -> int:
    """Print the summary, the notes, the reports (or why there are none), send the notifications and
    print the exit code; returns it (4 when the reports could not be written, else DESIGN §3.1's)."""
    code = int(ExitCode.REPORTS_FAILED) if written.error else exit_code(run.tenants)
    print_summary(run, stdout)
    for note in notes:
        stdout.write(note)
    if written.error:
        stdout.write(
            f"\nThe reports could not be written: {written.error}\n"
            f"The previous reports in {Path(out_dir).resolve()} are intact; the tenants above were audited"
            " (and recorded in the history, when it is on).\n"
        )
    else:
        stdout.write("\nReports:\n" + "".join(f"  {path.resolve()}\n" for path in written.paths))
    if settings is not None:
        send_notifications(run, written.paths, settings, insights, stdout)
    stdout.write(f"Exit code {code}: {exit_code_meaning(code)}.\n")
    stdout.flush()
    return code


def prepare_notifications(settings: NotificationSettings, config: AuditConfig) -> None:
    """Before auditing: register the channels' secrets (so nothing the run writes can show them) and say
    now, not after an hour of auditing, what will keep a channel from working as configured.

    The run goes ahead either way (the reports matter more than the message).
    """
    history_enabled = history_settings(config).enabled
    for channel in settings.channels:
        name = channel.url_env if isinstance(channel, WebhookSettings) else channel.password_env
        value = os.environ.get(name) if name else None
        if name and not value:
            log.warning(
                "notification %s: environment variable %s is not set; it will not be sent",
                channel.name,
                name,
                extra={"event": "notification_secret_missing", "channel_name": channel.name},
            )
        register_secret(value)
        if isinstance(channel, WebhookSettings) and value:
            register_secret(urlsplit(value.strip()).path)
        if channel.policy is Policy.ON_CHANGE and not history_enabled:
            log.warning(
                'notification %s: when = "on_change" needs the history, which is disabled; it will be '
                "sent after every run",
                channel.name,
                extra={"event": "notification_on_change_without_history", "channel_name": channel.name},
            )


def send_notifications(
    run: RunResult,
    reports: Sequence[Path],
    settings: NotificationSettings,
    insights: RunInsights | object,
    stdout: TextIO,
) -> None:
    """Send the configured notifications about a finished, reported run and print what happened to each.

    Never raises and never changes the exit code: a channel that cannot be reached is a line in the output
    and a WARNING in the log. ``on_change`` compares with the previous run's statuses from the history
    (``insights``); without a history every status counts as changed.
    """
    if not settings.channels:
        return
    previous = None
    if isinstance(insights, RunInsights) and insights.previous_run_id is not None:
        # Each tenant's status when history last saw it (error included); a tenant never seen is a change.
        previous = {t.tenant_id: t.last_status.value for t in insights.tenants if t.last_status is not None}
    stdout.write("\n" + format_outcomes(notify(run, reports, settings, previous=previous)))
