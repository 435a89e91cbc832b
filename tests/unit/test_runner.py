"""The fleet runner (auditor.runner) and what the terminal shows of a run (auditor.output), with fake
per-tenant auditors: isolation, time-outs, order, bounded concurrency, exit codes, progress, summary."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from auditor import __version__
from auditor.config import AuditConfig, TenantConfig, parse_config
from auditor.errors import ErrorCode, GraphError, TenantError
from auditor.evaluate import exit_code
from auditor.model import (
    Billing,
    Finding,
    FindingCode,
    MailboxCensus,
    RunMode,
    RunResult,
    Severity,
    SharedMailbox,
    Status,
    TenantResult,
)
from auditor.output import BarProgress, LineProgress, summary_table, summary_text
from auditor.runner import run_fleet

CLIENT = "00000000-0000-0000-0000-0000000000c1"


def fleet(*names: str, tags: Sequence[str] = ()) -> AuditConfig:
    """A config with one tenant per name (tenant ids ...0001, ...0002, ...)."""
    return parse_config(
        {
            "billing": {"price_per_mailbox": 2.5, "currency": "EUR"},
            "auth": {"client_id": CLIENT, "client_secret_env": "AUDITOR_SECRET"},
            "tenants": [
                {"name": name, "tenant_id": f"00000000-0000-0000-0000-{i:012d}", "tags": list(tags)}
                for i, name in enumerate(names, start=1)
            ],
        },
        path=Path("fleet.toml"),
    )


def result(tenant: TenantConfig, status: Status, *, billed: int | None = 0) -> TenantResult:
    """A plausible result for ``tenant`` in ``status``."""
    cost = None if billed is None else billed * tenant.price_per_mailbox
    findings: tuple[Finding, ...] = ()
    if status is Status.NON_COMPLIANT:
        findings = (Finding(FindingCode.ROLE_MISSING, Severity.HIGH, "no Security Reader"),)
    return TenantResult(
        name=tenant.name,
        tenant_id=tenant.tenant_id,
        status=status,
        billing=Billing(billed, tenant.price_per_mailbox, cost, "EUR"),
        tags=tenant.tags,
        findings=findings,
    )


Behaviour = Callable[[TenantConfig], Any]


@dataclass
class FakeAuditor:
    """Does per tenant (by name) what ``behaviours`` says, default: compliant after ``delay`` seconds.
    Records how many audits ran at once and which were cancelled."""

    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    async def __call__(self, tenant: TenantConfig) -> TenantResult:
        self.started.append(tenant.name)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            behaviour = self.behaviours.get(tenant.name)
            if behaviour is None:
                return result(tenant, Status.COMPLIANT)
            outcome = behaviour(tenant)
            if asyncio.iscoroutine(outcome):
                outcome = await outcome
            assert isinstance(outcome, TenantResult)
            return outcome
        except asyncio.CancelledError:
            self.cancelled.append(tenant.name)
            raise
        finally:
            self.in_flight -= 1


def raises(exc: BaseException) -> Behaviour:
    def behaviour(tenant: TenantConfig) -> TenantResult:
        raise exc

    return behaviour


async def hang(tenant: TenantConfig) -> TenantResult:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def slow(seconds: float, status: Status = Status.NON_COMPLIANT) -> Behaviour:
    async def behaviour(tenant: TenantConfig) -> TenantResult:
        await asyncio.sleep(seconds)
        return result(tenant, status, billed=4)

    return behaviour


def status_is(status: Status) -> Behaviour:
    return lambda tenant: result(tenant, status, billed=None if status is Status.ERROR else 1)


async def run(
    config: AuditConfig,
    auditor: FakeAuditor,
    *,
    concurrency: int = 4,
    tenant_timeout: float = 5.0,
    progress: Any = None,
) -> RunResult:
    return await run_fleet(
        config.tenants,
        auditor,
        concurrency=concurrency,
        tenant_timeout=tenant_timeout,
        mode=RunMode.AUDIT,
        currency=config.billing.currency,
        progress=progress,
    )


# --- isolation, time-outs, order --------------------------------------------------------------------------


async def test_a_crash_a_hang_and_a_slow_tenant_do_not_touch_the_others() -> None:
    config = fleet("Alpha", "Crash", "Hang", "Slow", "Omega")
    auditor = FakeAuditor(
        behaviours={
            "Crash": raises(RuntimeError("boom: client_secret=hunter2")),
            "Hang": hang,
            "Slow": slow(0.2),
        }
    )
    run_result = await run(config, auditor, concurrency=2, tenant_timeout=0.5)

    assert [r.name for r in run_result.tenants] == ["Alpha", "Crash", "Hang", "Slow", "Omega"]
    by_name = {r.name: r for r in run_result.tenants}
    assert by_name["Alpha"].status is Status.COMPLIANT
    assert by_name["Omega"].status is Status.COMPLIANT
    assert by_name["Slow"].status is Status.NON_COMPLIANT  # slow but within the time limit

    crash = by_name["Crash"]
    assert crash.status is Status.ERROR and crash.error is not None
    assert crash.error.code is ErrorCode.INTERNAL_ERROR
    assert "RuntimeError" in crash.error.message and "boom" in crash.error.message
    assert "hunter2" not in crash.error.message  # redacted
    assert "Traceback" not in crash.error.message and "File " not in crash.error.message
    assert crash.billing.monthly_cost is None and crash.billing.billed_shared_mailboxes is None

    hung = by_name["Hang"]
    assert hung.status is Status.ERROR and hung.error is not None
    assert hung.error.code is ErrorCode.TIMEOUT
    assert "0.5 s" in hung.error.message and "Hang" in hung.error.message
    assert "tenant_timeout_seconds" in hung.error.hint
    assert auditor.cancelled == ["Hang"]  # the hung audit was cancelled, not left running

    assert exit_code(run_result.tenants) == 3


async def test_error_results_keep_the_tenant_identity_tags_and_currency() -> None:
    config = fleet("Crash", tags=["gold"])
    run_result = await run(config, FakeAuditor(behaviours={"Crash": raises(ValueError())}))
    (crashed,) = run_result.tenants
    assert crashed.tenant_id == config.tenants[0].tenant_id
    assert crashed.tags == ("gold",)
    assert crashed.billing.currency == "EUR" and crashed.billing.price_per_mailbox == 2.5
    assert crashed.error is not None and crashed.error.message.endswith("unexpected ValueError")


async def test_an_auditor_error_keeps_its_own_code_and_hint() -> None:
    config = fleet("Throttled")
    error = GraphError(
        "still throttled after 5 retries", code=ErrorCode.THROTTLED, hint="Lower --concurrency."
    )
    run_result = await run(config, FakeAuditor(behaviours={"Throttled": raises(error)}))
    (throttled,) = run_result.tenants
    assert throttled.error is not None
    assert throttled.error.code is ErrorCode.THROTTLED
    assert throttled.error.hint == "Lower --concurrency."


async def test_a_timeout_error_from_inside_the_audit_is_not_mistaken_for_the_tenant_timeout() -> None:
    config = fleet("Socket")
    run_result = await run(
        config, FakeAuditor(behaviours={"Socket": raises(TimeoutError("read timed out"))}), tenant_timeout=5
    )
    (socket,) = run_result.tenants
    assert socket.error is not None and socket.error.code is ErrorCode.INTERNAL_ERROR
    assert "TimeoutError" in socket.error.message


async def test_concurrency_is_bounded() -> None:
    config = fleet(*(f"Tenant {i:02d}" for i in range(12)))
    auditor = FakeAuditor(delay=0.02)
    run_result = await run(config, auditor, concurrency=3)
    assert auditor.max_in_flight == 3
    assert len(run_result.tenants) == 12
    assert [r.name for r in run_result.tenants] == [t.name for t in config.tenants]


async def test_concurrency_one_audits_one_tenant_at_a_time_in_config_order() -> None:
    config = fleet("A", "B", "C")
    auditor = FakeAuditor(delay=0.01)
    await run(config, auditor, concurrency=1)
    assert auditor.max_in_flight == 1
    assert auditor.started == ["A", "B", "C"]


async def test_the_run_carries_its_metadata() -> None:
    config = fleet("A")
    run_result = await run(config, FakeAuditor())
    assert uuid.UUID(run_result.run_id).version == 4
    assert run_result.started_at.tzinfo is UTC and run_result.finished_at.tzinfo is UTC
    assert run_result.started_at <= run_result.finished_at
    assert run_result.tool_version == __version__
    assert run_result.mode is RunMode.AUDIT
    assert run_result.currency == "EUR"
    assert run_result.to_dict()["run"]["id"] == run_result.run_id


async def test_an_empty_selection_is_an_empty_run() -> None:
    run_result = await run_fleet(
        (), FakeAuditor(), concurrency=2, tenant_timeout=1, mode=RunMode.AUDIT, currency="GBP"
    )
    assert run_result.tenants == ()
    assert exit_code(run_result.tenants) == 0


@pytest.mark.parametrize(("concurrency", "tenant_timeout"), [(0, 1.0), (2, 0.0)])
async def test_nonsense_limits_are_refused(concurrency: int, tenant_timeout: float) -> None:
    with pytest.raises(ValueError):
        await run(fleet("A"), FakeAuditor(), concurrency=concurrency, tenant_timeout=tenant_timeout)


# --- exit codes (DESIGN §3.1) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([Status.COMPLIANT, Status.NOT_CONNECTED, Status.REMEDIATED], 0),
        ([Status.COMPLIANT, Status.NON_COMPLIANT], 1),
        ([Status.AMBIGUOUS, Status.COMPLIANT], 1),
        ([Status.NON_COMPLIANT, Status.ERROR, Status.AMBIGUOUS], 3),  # an error wins over gaps
        ([Status.ERROR], 3),
    ],
)
async def test_exit_codes_follow_the_design(statuses: list[Status], expected: int) -> None:
    names = [f"T{i}" for i in range(len(statuses))]
    config = fleet(*names)
    auditor = FakeAuditor(behaviours={n: status_is(s) for n, s in zip(names, statuses, strict=True)})
    run_result = await run(config, auditor)
    assert [r.status for r in run_result.tenants] == statuses
    assert exit_code(run_result.tenants) == expected


async def test_a_crashing_tenant_makes_the_run_exit_3_not_1() -> None:
    config = fleet("Gap", "Crash")
    auditor = FakeAuditor(behaviours={"Gap": status_is(Status.NON_COMPLIANT), "Crash": raises(KeyError("x"))})
    assert exit_code((await run(config, auditor)).tenants) == 3


# --- progress ---------------------------------------------------------------------------------------------


@dataclass
class RecordingProgress:
    events: list[tuple[str, Any]] = field(default_factory=list)

    def start(self, total: int) -> None:
        self.events.append(("start", total))

    def tenant_done(self, result: TenantResult, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("done", result.name))

    def finish(self) -> None:
        self.events.append(("finish", None))


async def test_progress_hears_of_every_tenant_once() -> None:
    config = fleet("A", "B", "C")
    progress = RecordingProgress()
    await run(config, FakeAuditor(behaviours={"B": raises(OSError("disk"))}), progress=progress)
    assert progress.events[0] == ("start", 3)
    assert progress.events[-1] == ("finish", None)
    assert sorted(name for kind, name in progress.events if kind == "done") == ["A", "B", "C"]


async def test_line_progress_logs_one_line_per_tenant(caplog: pytest.LogCaptureFixture) -> None:
    config = fleet("Contoso Healthcare", "Relecloud")
    auditor = FakeAuditor(behaviours={"Relecloud": raises(RuntimeError("x"))})
    with caplog.at_level(logging.INFO, logger="auditor.progress"):
        await run(config, auditor, concurrency=1, progress=LineProgress())
    lines = [r.getMessage() for r in caplog.records if r.name == "auditor.progress"]
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] Contoso Healthcare: compliant (") and lines[0].endswith(" s)")
    assert lines[1].startswith("[2/2] Relecloud: error INTERNAL_ERROR (")


async def test_bar_progress_draws_on_a_terminal_and_treats_names_as_text() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100)
    config = fleet("[bold]Not markup[/bold]")
    await run(config, FakeAuditor(), progress=BarProgress(console))
    assert "[bold]Not markup[/bold]" in stream.getvalue()


# --- summary ----------------------------------------------------------------------------------------------


def sample_run() -> RunResult:
    config = fleet("Contoso", "Fabrikam", "Relecloud", "Proseware")
    contoso, fabrikam, relecloud, proseware = config.tenants
    census = MailboxCensus(
        shared_mailboxes=tuple(SharedMailbox(f"id{i}", f"S{i}", f"s{i}@x") for i in range(4))
    )
    tenants = (
        replace(result(contoso, Status.COMPLIANT), mailboxes=census),
        replace(result(fabrikam, Status.NON_COMPLIANT, billed=4), mailboxes=census),
        replace(
            result(relecloud, Status.ERROR, billed=None),
            error=TenantError(ErrorCode.AUTH_FAILED, "sign-in failed", "Create a new client secret."),
        ),
        replace(
            result(proseware, Status.AMBIGUOUS, billed=None),
            findings=(Finding(FindingCode.SP_AMBIGUOUS, Severity.HIGH, "two"),),
        ),
    )
    now = datetime.now(UTC)
    return RunResult(str(uuid.uuid4()), now, now, __version__, RunMode.AUDIT, tenants, currency="EUR")


def test_summary_text_lists_tenants_totals_and_errors_with_their_hints() -> None:
    text = summary_text(sample_run())
    lines = text.splitlines()
    assert lines[0].split() == [
        "Tenant",
        "Status",
        "Findings",
        "Shared",
        "Billed",
        "Monthly",
        "cost",
        "(EUR)",
    ]
    fabrikam = next(line for line in lines if line.startswith("Fabrikam"))
    assert fabrikam.split() == ["Fabrikam", "non_compliant", "ROLE_MISSING", "4", "4", "10.00"]
    relecloud = next(line for line in lines if line.startswith("Relecloud"))
    assert relecloud.split() == ["Relecloud", "error", "-", "unknown", "unknown", "unknown"]
    total = next(line for line in lines if line.startswith("Total"))
    assert total.split() == ["Total", "(4", "tenants)", "8", "4", "10.00"]
    assert "Tenants: 1 compliant, 1 non_compliant, 1 ambiguous, 1 error." in text
    assert "lower bound: 2 tenants could not be priced" in text
    assert (
        "Relecloud (00000000-0000-0000-0000-000000000003): AUTH_FAILED: Create a new client secret." in text
    )
    assert "\x1b[" not in text  # no colour codes in logs


def test_a_large_fleet_summary_shows_only_tenants_needing_attention() -> None:
    run_result = sample_run()
    text = summary_text(run_result, max_rows=2)
    assert "Contoso" not in text  # compliant: only in the reports
    assert "Fabrikam" in text and "Relecloud" in text
    assert "Proseware" not in text  # beyond max_rows
    assert "2 more tenant(s) not shown here" in text
    assert "Total (4 tenants)" in text  # totals still cover the whole run


def test_summary_table_renders_names_as_plain_text() -> None:
    run_result = sample_run()
    odd = replace(run_result.tenants[0], name="[red]Contoso[/red]")
    run_result = replace(run_result, tenants=(odd, *run_result.tenants[1:]))
    stream = io.StringIO()
    Console(file=stream, width=160, force_terminal=False).print(summary_table(run_result))
    rendered = stream.getvalue()
    assert "[red]Contoso[/red]" in rendered
    assert "Monthly cost (EUR)" in rendered and "Total (4 tenants)" in rendered
