"""Same answers when Graph misbehaves (issue 11): the demo fleet under the simulator's fault mode.

Real azure-identity and msgraph-sdk over HTTPS, through the fleet runner (so the tenant deadline is
the one a real run has), against a simulator injecting the fault mode's mix at a fixed seed. Time-outs
are short (config keys), so slow answers and a tenant that never answers cost seconds, not minutes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.collect import TenantAuditor
from auditor.config import AuditConfig, load_config
from auditor.errors import ErrorCode
from auditor.model import FindingCode as F
from auditor.model import RunMode, Status, TenantResult
from auditor.runner import run_fleet
from auditor.simulator import FaultProfile, FaultRule, GraphSimulator, load_fixture
from tests.conftest import DEMO_FLEET, DEMO_TENANTS, put_credentials_in_environment
from tests.integration.conftest import demo_config_text
from tests.integration.test_audit_engine import EXPECTED, KEY_BY_ID, WireLog, _comparable

REQUEST_TIMEOUT = 1.5  # run.request_timeout_seconds in these tests
SLOW_SECONDS = 3.0  # the simulator's slow answers: beyond the client's time-out


def resilience_config(
    sim: GraphSimulator,
    directory: Path,
    *,
    tenant_timeout: float = 90,
    request_timeout: float = REQUEST_TIMEOUT,
) -> AuditConfig:
    text = demo_config_text(sim).replace(
        "[run]\nconcurrency = 6\ntenant_timeout_seconds = 120\n",
        f"[run]\nconcurrency = 15\ntenant_timeout_seconds = {tenant_timeout}\n"
        f"request_timeout_seconds = {request_timeout}\n",
    )
    assert f"request_timeout_seconds = {request_timeout}" in text
    path = directory / "audit.toml"
    path.write_text(text)
    return load_config(path)


async def run_demo(
    config: AuditConfig, factory: Any = None, tenants: list[str] | None = None
) -> dict[str, TenantResult]:
    options = {"session_factory": factory} if factory is not None else {}
    chosen = [t for t in config.tenants if tenants is None or KEY_BY_ID[t.tenant_id] in tenants]
    run = await run_fleet(
        chosen,
        TenantAuditor(config, **options),
        concurrency=config.run.concurrency,
        tenant_timeout=config.run.tenant_timeout_seconds,
        mode=RunMode.AUDIT,
        currency="GBP",
    )
    return {KEY_BY_ID[r.tenant_id]: r for r in run.tenants}


@pytest.fixture
def seeded_sim(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphSimulator]:
    """A simulator of its own whose fault dice start from the test's seed (`@pytest.mark.parametrize`)."""
    seed = getattr(request, "param", 1)
    with GraphSimulator(load_fixture(DEMO_FLEET), seed=seed) as sim:
        yield put_credentials_in_environment(sim, monkeypatch)


def with_fault_mode(sim: GraphSimulator, rate: float, **kwargs: Any) -> FaultProfile:
    base = sim.world.default_faults if isinstance(sim.world.default_faults, FaultProfile) else FaultProfile()
    profile = base.mixed(rate, slow_seconds=SLOW_SECONDS, **kwargs)
    sim.set_faults(profile)
    return profile


def fault_kinds(sim: GraphSimulator) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for record in sim.requests():
        if record.fault:
            key = f"{record.fault}{' (item)' if record.batch_parent is not None else ''}"
            kinds[key] = kinds.get(key, 0) + 1
    return kinds


def check_the_demo_verdicts(results: dict[str, TenantResult]) -> None:
    for key, (status, codes, billed) in EXPECTED.items():
        assert results[key].status is status, (key, results[key].status, results[key].error)
        assert results[key].finding_codes() == codes, key
        assert results[key].billing.billed_shared_mailboxes == billed, key


@pytest.mark.parametrize(
    ("seeded_sim", "rate"),
    [(101, 0.10), pytest.param(202, 0.30, marks=pytest.mark.slow)],
    indirect=["seeded_sim"],
)
async def test_the_fleet_under_faults_gets_the_clean_run_s_answers(
    seeded_sim: GraphSimulator, tmp_path: Path, rate: float
) -> None:
    # At 30% the largest tenant spends about 100 s honouring Retry-After (each 429 pauses it for 1 s).
    config = resilience_config(seeded_sim, tmp_path, tenant_timeout=300)
    clean = await run_demo(config)
    check_the_demo_verdicts(clean)
    seeded_sim.reset_observations()
    with_fault_mode(seeded_sim, rate)
    wire = WireLog()
    faulty = await run_demo(config, wire.session_factory)

    kinds = fault_kinds(seeded_sim)
    # The mix really happened: top-level 429/503, dropped connections, slow answers, per-item 429/503.
    for kind in ("throttled", "error-503", "reset", "throttled (item)", "error-503 (item)"):
        assert kinds.get(kind, 0) > 0, (kind, kinds)
    if rate >= 0.3:
        assert kinds.get("slow", 0) > 0, kinds
    assert wire.sent_too_early() == [], "no request may be sent before its Retry-After has passed"
    for key in EXPECTED:
        assert _comparable(faulty[key]) == _comparable(clean[key]), (key, faulty[key].error)
        census, clean_census = faulty[key].mailboxes, clean[key].mailboxes
        assert (census and census.shared) == (clean_census and clean_census.shared), key


@pytest.mark.slow
@pytest.mark.parametrize("seeded_sim", [505], indirect=True)
async def test_at_half_faults_nothing_is_silently_wrong(seeded_sim: GraphSimulator, tmp_path: Path) -> None:
    # Short on purpose: at 50% the largest tenant cannot finish its census in time and must say so.
    config = resilience_config(seeded_sim, tmp_path, tenant_timeout=60)
    clean = await run_demo(config)
    seeded_sim.reset_observations()
    with_fault_mode(seeded_sim, 0.5)
    wire = WireLog()
    faulty = await run_demo(config, wire.session_factory)
    assert wire.sent_too_early() == []
    for key, result in faulty.items():
        admit_or_agree(key, result, clean[key])


def admit_or_agree(key: str, result: TenantResult, clean: TenantResult) -> None:
    """Either the clean run's answer, or an admitted incompleteness that says what failed."""
    if _comparable(result) == _comparable(clean):
        return
    if result.status is Status.ERROR:
        assert result.error is not None and result.error.code is not None and result.error.hint, key
        assert result.billing.monthly_cost is None, key  # an error is never billed as if known
        return
    # Not an error: the verdict and its gaps are the clean run's, except where the result admits what it
    # could not read: the census (MAILBOX_SCAN_INCOMPLETE naming why, the count a lower bound) or the PIM
    # reads (PIM_UNAVAILABLE saying "the PIM reads failed", the role judged on active assignments only).
    admitted = {F.MAILBOX_SCAN_INCOMPLETE}
    pim = next((f for f in result.findings if f.code is F.PIM_UNAVAILABLE), None)
    if pim is not None and F.PIM_UNAVAILABLE not in clean.finding_codes():
        assert "the PIM reads failed" in pim.message, key
        admitted |= {F.PIM_UNAVAILABLE, F.ROLE_MISSING, F.ROLE_ELIGIBLE_ONLY, F.ROLE_EXPIRING}
    else:
        assert result.status is clean.status, (key, result.status, clean.status)
    if F.MAILBOX_SCAN_INCOMPLETE in result.finding_codes():
        # Findings about single shared mailboxes come from the census: a mailbox left unclassified cannot
        # carry one, so an incomplete census may show fewer of them, never one the clean run lacks.
        per_mailbox = {F.SHARED_MAILBOX_SIGNIN_ENABLED, F.SHARED_MAILBOX_LICENSED}
        assert result.finding_codes() & per_mailbox <= clean.finding_codes(), key
        admitted |= per_mailbox
    assert result.finding_codes() - admitted == clean.finding_codes() - admitted, key
    census, clean_census = result.mailboxes, clean.mailboxes
    assert (census is None) == (clean_census is None), key
    if census is not None and clean_census is not None and census != clean_census:
        assert census.unclassified > 0 and census.unclassified_reason, key
        assert F.MAILBOX_SCAN_INCOMPLETE in result.finding_codes(), key
        assert census.shared <= clean_census.shared <= census.shared + census.unclassified, key


@pytest.mark.parametrize(
    ("down", "said", "advice"),
    [
        # never answers: every Graph request hangs far beyond the client's time-out
        (FaultProfile(slow_rate=1.0, slow_seconds=30), "no answer within 1 s", "did not answer in time"),
        # answers, but only 503 without Retry-After
        (
            FaultProfile(error_rate=1.0, error_statuses=(503,), error_retry_after=False),
            "503 ServiceUnavailable",
            "Microsoft kept failing (503 ServiceUnavailable)",
        ),
        # drops every connection
        (FaultProfile(reset_rate=1.0), "connection dropped", "Connections to Microsoft Graph"),
    ],
    ids=["never-answers", "always-503", "always-reset"],
)
async def test_a_tenant_that_is_down_times_out_alone_within_its_deadline(
    sim_env: GraphSimulator, tmp_path: Path, down: FaultProfile, said: str, advice: str
) -> None:
    config = resilience_config(sim_env, tmp_path, tenant_timeout=6, request_timeout=1)
    sim_env.set_faults(down, DEMO_TENANTS["northwind"])
    began = time.monotonic()
    results = await run_demo(config, tenants=["northwind", "contoso", "fabrikam"])
    took = time.monotonic() - began
    assert took < 6 + 1.5, f"the run took {took:.1f} s; the tenant's deadline is 6 s"
    northwind = results["northwind"]
    assert northwind.status is Status.ERROR and northwind.error is not None
    assert northwind.error.code is ErrorCode.TIMEOUT, northwind.error
    # It says why: what kept failing, not just "cancelled".
    assert said in northwind.error.message and "run.tenant_timeout_seconds = 6" in northwind.error.message
    assert advice in northwind.error.hint
    assert northwind.billing.monthly_cost is None
    for key in ("contoso", "fabrikam"):
        assert results[key].status is EXPECTED[key][0], (key, results[key].error)


async def test_a_tenant_that_keeps_throttling_is_given_up_on_as_throttled(
    sim_env: GraphSimulator, tmp_path: Path
) -> None:
    config = resilience_config(sim_env, tmp_path, tenant_timeout=4, request_timeout=1)
    sim_env.add_fault_rule(
        FaultRule(
            tenant_id=DEMO_TENANTS["contoso"], status=429, code="TooManyRequests", retry_after=1, times=10**6
        )
    )
    wire = WireLog()
    results = await run_demo(config, wire.session_factory, tenants=["contoso", "tailspin"])
    contoso = results["contoso"]
    assert contoso.status is Status.ERROR and contoso.error is not None
    assert contoso.error.code is ErrorCode.THROTTLED, contoso.error
    assert "429 with Retry-After" in contoso.error.message
    assert results["tailspin"].status is Status.COMPLIANT
    assert wire.sent_too_early() == []
    # Pacing, not hammering: about one request per Retry-After second, not a retry storm.
    sent = sum(1 for _, kind, _ in wire.events[DEMO_TENANTS["contoso"]] if kind == "send")
    assert sent <= 6, sent


@pytest.mark.parametrize(
    ("status", "times", "complete"),
    [
        (503, 3, True),  # transient: the POST itself is retried
        (400, 3, True),  # refused as a whole a few times: the chunks' items go again
        (424, 2, True),
        (429, 2, True),
        (403, 10**6, False),  # refused every time: items unclassified, never "permission missing"
    ],
)
async def test_a_failed_batch_as_a_whole_keeps_the_census(
    sim_env: GraphSimulator, tmp_path: Path, status: int, times: int, complete: bool
) -> None:
    config = resilience_config(sim_env, tmp_path, tenant_timeout=60)
    clean = (await run_demo(config, tenants=["lucerne"]))["lucerne"]
    rule = FaultRule(
        route="batch",
        tenant_id=DEMO_TENANTS["lucerne"],
        status=status,
        code="Forbidden" if status == 403 else "Error",
        retry_after=1 if status == 429 else None,
        times=times,
    )
    sim_env.add_fault_rule(rule)
    result = (await run_demo(config, tenants=["lucerne"]))["lucerne"]
    assert rule.hits >= min(times, 2), "the $batch POST must actually have failed"
    if complete:
        assert _comparable(result) == _comparable(clean)
        return
    # Nothing was classified, and the tenant says so; its role verdict stands (not an error, not a
    # PERMISSION_DENIED drawn from an envelope that carries no verdict on any mailbox).
    assert result.status is clean.status and result.error is None
    census = result.mailboxes
    assert census is not None and clean.mailboxes is not None
    state = sim_env.world.tenant(DEMO_TENANTS["lucerne"])
    assert state is not None
    assert census.unclassified == sum(1 for u in state.users if u.mail) and census.shared == 0
    assert F.MAILBOX_SCAN_INCOMPLETE in result.finding_codes()
    assert "403 on the $batch request as a whole" in census.unclassified_reason


async def test_a_failing_sign_in_endpoint_is_retried_within_the_policy(
    sim_env: GraphSimulator, tmp_path: Path
) -> None:
    config = resilience_config(sim_env, tmp_path, tenant_timeout=30, request_timeout=2)
    contoso = DEMO_TENANTS["contoso"]
    rule = sim_env.add_fault_rule(
        FaultRule(
            route="identity.token", tenant_id=contoso, status=503, message="Service unavailable.", times=4
        )
    )
    results = await run_demo(config, tenants=["contoso"])
    assert results["contoso"].status is Status.COMPLIANT, results["contoso"].error
    assert rule.hits == 4
    # azure-identity's own two retries (three tries) were spent, then the reader's policy tried again.
    assert sim_env.count(route="identity.token", tenant=contoso) == 5


async def test_a_sign_in_endpoint_that_never_answers_times_out_within_the_deadline(
    sim_env: GraphSimulator, tmp_path: Path
) -> None:
    config = resilience_config(sim_env, tmp_path, tenant_timeout=6, request_timeout=1)
    sim_env.add_fault_rule(
        FaultRule(route="identity.token", tenant_id=DEMO_TENANTS["coho"], delay_seconds=30, times=10**6)
    )
    began = time.monotonic()
    results = await run_demo(config, tenants=["coho", "contoso"])
    assert time.monotonic() - began < 6 + 1.5
    coho = results["coho"]
    assert coho.status is Status.ERROR and coho.error is not None
    assert coho.error.code is ErrorCode.TIMEOUT, coho.error
    assert "no answer within 1 s" in coho.error.message and coho.error.hint
    assert results["contoso"].status is Status.COMPLIANT
