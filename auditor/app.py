"""`auditor audit` as plain code: options in, reports and an exit code out.

The CLI module (:mod:`auditor.cli.audit`) only parses options into :class:`AuditOptions` and calls
:func:`audit`; the demo calls the same function. Expected problems are raised as
:class:`~auditor.errors.AuditorError` subclasses carrying their exit code (a bad config, an unknown
``--tenant`` or ``--format``, an unwritable ``--out``: all 2, and all detected before any tenant is
audited); the CLI turns them into one message in one place.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeAlias

import typer

from auditor.config import AuditConfig, TenantConfig, load_config, select_tenants
from auditor.errors import UsageError
from auditor.evaluate import describe_vendor_search
from auditor.history import JournalCursor, open_history
from auditor.model import RemediationAction, RunMode, RunResult
from auditor.notify import (
    notification_settings,
)
from auditor.outcome import (
    exit_code_meaning,
    finish_run,
    prepare_notifications,
    send_notifications,
    write_run_reports,
)
from auditor.output import progress_for_stderr
from auditor.remediation import JOURNAL_FILENAME
from auditor.reporting import parse_formats, prepare_out_dir
from auditor.reporting.spool import TenantSpool
from auditor.reporting.text import terminal_text
from auditor.runner import Progress, TenantAudit
from auditor.shard import parse_shard, part_manifest, write_part_manifest
from auditor.workers import run_fleet_in_workers, workers_for

if TYPE_CHECKING:
    from auditor.graph.capture import Capture

__all__ = [
    "DEFAULT_DEMO_OUT_DIR",
    "DEFAULT_OUT_DIR",
    "AuditOptions",
    "AuditOutcome",
    "AuditorFactory",
    "audit",
    "exit_code_meaning",
    "prepare_notifications",
    "send_notifications",
]

log = logging.getLogger(__name__)

DEFAULT_OUT_DIR: Final = Path("reports/out")
DEFAULT_DEMO_OUT_DIR: Final = DEFAULT_OUT_DIR / "demo"  # `auditor demo`'s (here: its CLI loads no simulator)

# Builds the per-tenant audit for a config; the default is the Graph-backed TenantAuditor.
AuditorFactory: TypeAlias = Callable[[AuditConfig], TenantAudit]


@dataclass(frozen=True)
class AuditOptions:
    """What `auditor audit` was asked to do (DESIGN §3.1)."""

    config: Path
    out_dir: Path = DEFAULT_OUT_DIR
    tenants: tuple[str, ...] = ()  # --tenant NAME_OR_ID (any of them)
    tags: tuple[str, ...] = ()  # --tag TAG (any of them)
    formats: tuple[str, ...] = ()  # --format values; empty: every available format
    concurrency: int | None = None  # None: the config's run.concurrency
    remediate: bool = False  # --remediate: fix the Security Reader gap (DESIGN §3.5)
    dry_run: bool = False  # --dry-run: show and record the plan, write nothing
    yes: bool = False  # --yes: apply without asking (required without a terminal)
    max_changes: int | None = None  # --max-changes N: stop writing after N changes
    interactive: bool = False  # a person at a terminal can be asked to confirm
    shard: str | None = None  # --shard K/N: audit only shard K of N and write a part for `auditor merge`
    capture: Path | None = None  # --capture DIR: record every Graph and token exchange of the run
    capture_redact: bool = False  # --capture-redact: pseudonymise names, UPNs and mail addresses in it
    full_census: bool = False  # --full-census: read every user and mailbox (no incremental census)
    census_clock: Callable[[], datetime] | None = None  # the census's clock (tests advance it night by night)
    # --workers N: audit in N processes (auditor.workers); None: the machine's cores, capped; 1: in-process
    workers: int | None = 1

    @property
    def mode(self) -> RunMode:
        if not self.remediate:
            return RunMode.AUDIT
        return RunMode.DRY_RUN if self.dry_run else RunMode.REMEDIATE


@dataclass(frozen=True)
class AuditOutcome:
    """A finished audit: the run, the report files written and the process exit code."""

    run: RunResult
    reports: tuple[Path, ...]
    exit_code: int


def audit(
    options: AuditOptions,
    *,
    auditor_factory: AuditorFactory | None = None,
    progress: Progress | None = None,
    stdout: TextIO | None = None,
    confirm: Callable[[str], bool] | None = None,
    session_factory: Any = None,
) -> AuditOutcome:
    """Load the config, audit the selected tenants, write the reports, print the summary and the report
    paths to ``stdout``; returns the outcome, whose ``exit_code`` follows DESIGN §3.1.

    Raises :class:`~auditor.errors.ConfigError` or :class:`~auditor.reporting.ReportError` (exit code 2)
    before auditing anything when the options or the config cannot work. Tenant failures never raise:
    they are ``error`` results (exit code 3).
    """
    stdout = stdout if stdout is not None else sys.stdout
    _check_remediation_options(options)
    formats = parse_formats(options.formats)
    shard = parse_shard(options.shard) if options.shard is not None else None
    config = load_config(options.config)
    # [notifications] is checked before auditing too (exit 2); a shard part never notifies: the merge does.
    notifications = notification_settings(config)
    if shard is None:
        prepare_notifications(notifications, config)
    selected = select_tenants(config, options.tenants, options.tags)
    tenants = shard.select(selected) if shard is not None else selected
    out_dir = prepare_out_dir(options.out_dir)
    concurrency = options.concurrency or config.run.concurrency
    capture = open_capture(options, config, tenants)
    if capture is not None and auditor_factory is None:
        # Every Graph session of the run, the audit's and remediation's, goes through the capture.
        session_factory = session_factory or capture.session_factory
        tenant_audit = _graph_auditor(config, session_factory)
    else:
        tenant_audit = (auditor_factory or _graph_auditor)(config)
    log.info(
        "Auditing %d of %d tenant(s) from %s (concurrency %d)",
        len(tenants),
        len(config.tenants),
        config.path,
        concurrency,
        extra={"event": "run_start"},
    )
    # [history] is checked and the history locked before any tenant is audited (ConfigError/HistoryError:
    # exit 2); the lock is held until this run is recorded, so an overlapping run refuses to start. A shard
    # part is not a night of its own: `auditor merge` records the merged run.
    shard_note = "a shard part: `auditor merge --config` records the whole run" if shard is not None else None
    with open_history(config, disabled_reason=shard_note) as history:
        journal = JournalCursor(out_dir / JOURNAL_FILENAME)
        attach_census(tenant_audit, history.store, config, options)
        # --workers: the same run audited by several processes (auditor.workers); 1 runs in-process.
        workers = workers_for(
            options.workers, len(tenants), remediate=options.remediate, capture=capture is not None
        )
        run = run_fleet_in_workers(
            tenants,
            tenant_audit,
            workers,
            concurrency=concurrency,
            tenant_timeout=config.run.tenant_timeout_seconds,
            mode=options.mode,
            currency=config.billing.currency,
            progress=progress if progress is not None else progress_for_stderr(),
            # Each tenant's mailbox list waits on disk until the reports are written (flat memory).
            spool=TenantSpool.create(out_dir).add,
        )
        run = replace(run, vendor_search=describe_vendor_search(config.vendor))
        if options.remediate:
            run = remediate(
                run,
                tenants,
                options,
                out_dir,
                stdout,
                confirm=confirm,
                session_factory=session_factory,
                limits=(config.remediation.verify_timeout_seconds, config.run.request_timeout_seconds),
            )
        insights = history.record(run, journal.new_lines())  # never raises for a database failure
    if capture is not None:
        stdout.write(f"\nCapture: {capture.close().parent.resolve()}\n")
    # From here on the tenants have been audited (and recorded): nothing may cost the run its summary. A
    # report that cannot be written is exit code 4, the previous reports staying as they were.
    mode = config.reports.file_mode
    written = write_run_reports(run, out_dir, formats, insights=insights, file_mode=mode)
    notes: list[str] = []
    if shard is not None:
        if not written.error:
            # Written last: a part is complete once its shard.json names the run in its audit.json.
            try:
                manifest = write_part_manifest(
                    out_dir, part_manifest(shard, run, config, selected), mode=mode
                )
                written = replace(written, paths=(*written.paths, manifest))
            except OSError as exc:
                written = replace(
                    written, error=f"cannot write {out_dir / 'shard.json'} ({exc.strerror or exc})"
                )
        notes.append(
            f"\nShard {shard}: {len(tenants)} of {len(selected)} selected tenant(s). Merge all {shard.count} "
            f"parts with `auditor merge PART... --out DIR`.\n"
        )
    code = finish_run(
        run,
        written,
        out_dir,
        stdout,
        notes=notes,
        settings=notifications if shard is None else None,
        insights=insights,
    )
    return AuditOutcome(run=run, reports=written.paths, exit_code=code)


def _check_remediation_options(options: AuditOptions) -> None:
    """Remediation flags that cannot work are refused before anything is audited."""
    if not options.remediate:
        extra = [
            flag
            for flag, on in (
                ("--dry-run", options.dry_run),
                ("--yes", options.yes),
                ("--max-changes", options.max_changes is not None),
            )
            if on
        ]
        if extra:
            raise UsageError(
                f"{', '.join(extra)} only makes sense with --remediate",
                hint="add --remediate, or drop the option",
            )
        return
    if options.max_changes is not None and options.max_changes < 0:
        raise UsageError("--max-changes must be 0 or more", hint="e.g. --max-changes 10")
    if not options.dry_run and not options.yes and not options.interactive:
        raise UsageError(
            "--remediate writes role assignments and nobody is at a terminal to confirm the plan; nothing was "
            "audited or written",
            hint="re-run with --yes to apply the plan unattended, or with --dry-run to only see it",
        )


def remediate(
    run: RunResult,
    tenants: Sequence[TenantConfig],
    options: AuditOptions,
    out_dir: Path,
    stdout: TextIO,
    *,
    confirm: Callable[[str], bool] | None = None,
    session_factory: Any = None,
    limits: tuple[float, float | None] = (60.0, None),
) -> RunResult:
    """Plan the Security Reader fix from the audit, confirm it, apply it, and fold the outcomes into the run.

    `limits`: remediation.verify_timeout_seconds and run.request_timeout_seconds."""
    from auditor.evaluate import apply_remediation
    from auditor.remediation import Journal, apply_plan, plan_remediation, planned_remediation

    plan = plan_remediation(run.tenants, tenants)
    changes = [entry for entry in plan if entry.action is RemediationAction.PLANNED]
    stdout.write("\nRemediation plan:\n")
    for entry in plan:
        # The change names the vendor SP by its display name: tenant data, shown with controls made visible.
        stdout.write(
            terminal_text(f"  {entry.tenant.name}: {entry.change if entry.change else entry.detail}") + "\n"
        )
    if options.max_changes is not None and options.max_changes < len(changes):
        stdout.write(
            f"  (--max-changes {options.max_changes}: only the first {options.max_changes} will be made)\n"
        )
    journal = Journal(out_dir / JOURNAL_FILENAME)
    outcomes: dict[str, Any] = {}
    if options.dry_run or not changes:
        note = "dry run: nothing written" if options.dry_run else "nothing to change"
        stdout.write(f"  {note}.\n")
        for entry in changes:
            journal.append(
                {
                    "tenant": entry.tenant.name,
                    "tenant_id": entry.tenant.tenant_id,
                    "service_principal_id": entry.target.id if entry.target else None,
                    "action": "plan",
                    "outcome": "planned (dry run)" if options.dry_run else "planned",
                    "change": entry.change,
                }
            )
    elif not options.yes and not (confirm or _ask)(f"Apply {len(changes)} change(s)? [y/N] "):
        stdout.write("  Not confirmed: nothing written.\n")
        outcomes = {
            e.tenant.tenant_id: replace(
                planned_remediation(e), detail="not applied: not confirmed; " + planned_remediation(e).detail
            )
            for e in changes
        }
    else:
        outcomes = asyncio.run(
            apply_plan(
                plan,
                journal,
                max_changes=options.max_changes,
                session_factory=session_factory,
                verify_timeout=limits[0],
                request_timeout=limits[1],
            )
        )
    results = []
    for entry in plan:
        outcome = outcomes.get(entry.tenant.tenant_id)
        results.append(
            apply_remediation(entry.result, outcome)
            if outcome is not None and outcome.action is not RemediationAction.PLANNED
            else entry.result.with_remediation(outcome or planned_remediation(entry))
        )
    counts = Counter(
        r.remediation.action.value for r in results if r.remediation.action is not RemediationAction.NONE
    )
    if counts:
        stdout.write(
            "Remediation: " + ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) + ".\n"
        )
    unverified = sum(r.remediation.action is RemediationAction.CREATED_UNVERIFIED for r in results)
    if unverified:
        stdout.write(
            f"{unverified} assignment(s) written but not yet visible (directory replication): those tenants "
            "stay non_compliant until the next run reads them back. Do not create them again by hand.\n"
        )
    if any(
        r.remediation.action in (RemediationAction.CREATED, RemediationAction.ALREADY_PRESENT)
        for r in results
    ):
        stdout.write(
            "Shared mailboxes stop being billed only after the vendor's next full sync: start one in the "
            "USS dashboard (role changes can take up to 15 minutes to propagate).\n"
        )
    return replace(run, tenants=tuple(results))


def _ask(question: str) -> bool:
    return typer.confirm(question.rstrip(" ?[y/N]") + "?", default=False)


def attach_census(tenant_audit: Any, store: Any, config: AuditConfig, options: AuditOptions) -> None:
    """Give the Graph auditor the history's stored censuses (issue 13: incremental nights). Without a
    history (off, a shard part) every night is a full read."""
    from auditor.census import CensusBook
    from auditor.collect import TenantAuditor

    if isinstance(tenant_audit, TenantAuditor) and store is not None:
        book = CensusBook(store, max_age_days=config.census.max_age_days, full=options.full_census)
        if options.census_clock is not None:
            book.clock = options.census_clock
        tenant_audit.census = book


def _graph_auditor(config: AuditConfig, session_factory: Any = None) -> TenantAudit:
    # Imported here, not at the top: it loads the Graph SDK, which a usage error never needs.
    from auditor.collect import TenantAuditor

    if session_factory is not None:
        return TenantAuditor(config, session_factory=session_factory)
    return TenantAuditor(config)


def open_capture(
    options: AuditOptions, config: AuditConfig, tenants: Sequence[TenantConfig]
) -> Capture | None:
    """The `--capture DIR` recorder (None without it); a directory that cannot take it is a usage error."""
    if options.capture is None:
        if options.capture_redact:
            raise UsageError("--capture-redact only makes sense with --capture DIR", hint="add --capture DIR")
        return None
    from auditor import __version__
    from auditor.graph.capture import Capture, CapturedTenant, CaptureError

    vendor = config.vendor
    try:
        return Capture(
            options.capture,
            redact=options.capture_redact,
            tenants=[
                CapturedTenant(
                    t.tenant_id, t.name, t.auth.client_id or "", t.auth.method.value, t.price_per_mailbox
                )
                for t in tenants
            ],
            currency=config.billing.currency,
            vendor={
                "app_display_name": vendor.app_display_name,
                "app_id": vendor.app_id,
                "publisher_tenant_id": vendor.publisher_tenant_id,
                "exchange_app_role": vendor.exchange_app_role,
            },
            tool_version=__version__,
        )
    except CaptureError as exc:
        raise UsageError(f"--capture: {exc}", hint="give a new or empty directory for the capture") from exc
