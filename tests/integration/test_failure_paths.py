"""Failure paths a wrong verdict would hide behind, through the real SDKs against the simulator (issue 14).

Each test states what a user or Graph would see: the verdict, the counts, the error code, how many
POSTs were sent, and that a retry came after a delay. All users here are cloud-only (no on-premises
sync), so a 404 MailboxNotEnabledForRESTAPI means "no Exchange Online mailbox" and a 403 means "this
app may not read it".
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor.census import CensusBook
from auditor.collect import TenantAuditor
from auditor.config import AuditConfig, TenantConfig, parse_config
from auditor.deadline import tenant_deadline
from auditor.errors import ErrorCode, GraphError
from auditor.evaluate import apply_remediation
from auditor.graph.client import ConnectionSettings, open_session
from auditor.graph.reader import GraphReader
from auditor.model import FindingCode as F
from auditor.model import RemediationAction as A
from auditor.model import Severity, Status, TenantResult
from auditor.remediation import Journal, apply_plan, plan_remediation
from auditor.simulator import FaultRule, GraphSimulator
from auditor.simulator.faults import RequestRecord
from auditor.simulator.fixtures import DEFAULT_VENDOR, world_from_dict

SECURITY_READER = "5d6b6bb7-de71-4623-b4af-96380a352509"
ENV_PREFIX = "USS_FAILPATH_AUDITOR"

# Cloud-only users: three with a user mailbox, two shared mailboxes.
EVERYDAY_USERS = [
    *({"key": f"user{i}", "purpose": "user"} for i in range(3)),
    *({"key": f"shared{i}", "purpose": "shared"} for i in range(2)),
]
# Mail-enabled (a mail address, e.g. a mail user or an unlicensed account) but no Exchange Online mailbox:
# Graph answers 404 MailboxNotEnabledForRESTAPI (graph-api-notes.md, "Mailboxes that Graph cannot serve").
NO_MAILBOX_USERS = [
    {"key": f"mailuser{i}", "purpose": "none", "mail": f"mailuser{i}@contractors.example"} for i in range(3)
]


def _tenant(key: str, number: int, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "tenant_id": f"5e1f0000-0000-4000-8000-{number:012d}",
        "name": f"Failure path {key}",
        "consent": {"auditor": "remediation"},
        "roles": [{"principal": "uss", "role": "Security Reader"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
        "users": {"list": EVERYDAY_USERS},
        **extra,
    }


TENANTS = [
    _tenant("healthy", 1),
    _tenant("no-mailbox", 2, users={"list": EVERYDAY_USERS + NO_MAILBOX_USERS}),
    # Consented without MailboxSettings.Read: every mailbox answers 403 ErrorAccessDenied.
    _tenant(
        "mailbox-denied",
        3,
        consent={
            "auditor": [
                "Application.Read.All",
                "RoleManagement.Read.Directory",
                "User.Read.All",
                "Organization.Read.All",
            ]
        },
    ),
    _tenant("expires-29", 4, roles=[{"principal": "uss", "role": "Security Reader", "expires_in_days": 29}]),
    _tenant("expires-31", 5, roles=[{"principal": "uss", "role": "Security Reader", "expires_in_days": 31}]),
    _tenant("expires-59", 6, roles=[{"principal": "uss", "role": "Security Reader", "expires_in_days": 59}]),
    # A PIM eligibility that ended two days ago, still listed: it is no eligibility, the role is missing.
    _tenant(
        "lapsed-eligible",
        7,
        roles=[],
        eligible=[
            {"principal": "uss", "role": "Security Reader", "expires_in_days": -2, "started_days_ago": 60}
        ],
    ),
    _tenant("current-eligible", 8, roles=[], eligible=[{"principal": "uss", "role": "Security Reader"}]),
    # The role is missing: remediation targets.
    _tenant("role-missing", 9, roles=[]),
    # 25 mailboxes: one full $batch of 20 and one of 5.
    _tenant(
        "full-batch",
        10,
        users={
            "list": [
                *({"key": f"u{i}", "purpose": "user"} for i in range(20)),
                *({"key": f"s{i}", "purpose": "shared"} for i in range(5)),
            ]
        },
    ),
]
TENANT_IDS = {t["key"]: t["tenant_id"] for t in TENANTS}
KEY_BY_ID = {v: k for k, v in TENANT_IDS.items()}


def _world_data() -> dict[str, Any]:
    return {
        "vendor": DEFAULT_VENDOR,
        "apps": [{"key": "auditor", "name": "Failure-path auditor", "env_prefix": ENV_PREFIX}],
        "faults": {"latency_ms": 1},
        "tenants": TENANTS,
    }


@pytest.fixture(scope="module")
def module_sim() -> Iterator[GraphSimulator]:
    with GraphSimulator(world_from_dict(_world_data()), seed=3) as sim:
        yield sim


@pytest.fixture
def fp_sim(module_sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphSimulator]:
    """The module's simulator (read-only tests), with a clean log and no fault rule left behind."""
    module_sim.clear_fault_rules()
    module_sim.reset_observations()
    for name, value in module_sim.credentials.items():
        monkeypatch.setenv(name, value)
    yield module_sim
    module_sim.clear_fault_rules()


@pytest.fixture
def write_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphSimulator]:
    """A simulator of its own, for tests that write."""
    with GraphSimulator(world_from_dict(_world_data()), seed=5) as sim:
        for name, value in sim.credentials.items():
            monkeypatch.setenv(name, value)
        yield sim


@pytest.fixture
def full_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full-jitter back-off draws uniform(0, ceiling); this pins every draw to its ceiling
    (RetryPolicy defaults: 0.5 s, then 1 s, 2 s...), so a test can tell a back-off from none."""
    monkeypatch.setattr("auditor.graph.reader.random.uniform", lambda low, high: high)


def make_config(
    sim: GraphSimulator,
    tmp_path: Path,
    *,
    verify_timeout_seconds: float = 60,
) -> AuditConfig:
    app = next(a for a in sim.world.apps.values() if a.env_prefix == ENV_PREFIX)
    data = {
        "vendor": {"publisher_tenant_id": DEFAULT_VENDOR["publisher_tenant_id"]},
        "billing": {"price_per_mailbox": 2.5, "currency": "GBP"},
        "run": {"concurrency": 4, "tenant_timeout_seconds": 120},
        "remediation": {"verify_timeout_seconds": verify_timeout_seconds},
        "auth": {
            "client_id": app.client_id,
            "method": "secret",
            "client_secret_env": f"{ENV_PREFIX}_SECRET",
            "authority": sim.authority,
            "graph_endpoint": sim.graph_url,
            "ca_bundle": str(sim.ca_file),
            "allow_custom_endpoints": True,
        },
        "tenants": [{"name": t["name"], "tenant_id": t["tenant_id"]} for t in TENANTS],
    }
    return parse_config(data, path=tmp_path / "audit.toml")


def tenant_config(config: AuditConfig, key: str) -> TenantConfig:
    return next(t for t in config.tenants if t.tenant_id == TENANT_IDS[key])


async def audit(
    sim: GraphSimulator,
    tmp_path: Path,
    key: str,
    *,
    timeout_seconds: float | None = None,
    deadline_seconds: float | None = None,
    sent: list[str] | None = None,
    sent_at: list[tuple[float, str]] | None = None,
    census: CensusBook | None = None,
) -> TenantResult:
    """Audit one tenant; `sent` collects the path of every request as the client sends it, `sent_at` the
    same with the time (time.monotonic()) it was sent; `deadline_seconds` is the tenant's time, as the fleet
    runner sets it from run.tenant_timeout_seconds; `census` the run's stored censuses (None: full reads
    without history)."""
    config = make_config(sim, tmp_path)

    async def on_request(request: httpx.Request) -> None:
        if sent is not None:
            sent.append(request.url.path)
        if sent_at is not None:
            sent_at.append((time.monotonic(), request.url.path))

    def sessions(settings: ConnectionSettings) -> Any:
        if timeout_seconds is not None:
            settings = replace(settings, timeout_seconds=timeout_seconds)
        return open_session(settings, event_hooks={"request": [on_request]})

    auditor = TenantAuditor(config, session_factory=sessions, census=census)
    if deadline_seconds is None:
        return await auditor(tenant_config(config, key))
    with tenant_deadline(deadline_seconds):
        return await auditor(tenant_config(config, key))


def records(sim: GraphSimulator, key: str, route: str) -> list[RequestRecord]:
    return [r for r in sim.requests() if r.tenant_id == TENANT_IDS[key] and r.route == route]


def assert_healthy(result: TenantResult) -> None:
    """What the healthy tenant looks like when nothing went wrong on the way."""
    assert result.error is None
    assert result.status is Status.COMPLIANT and result.finding_codes() == set()
    census = result.mailboxes
    assert census is not None
    assert (census.user, census.shared, census.no_mailbox, census.unclassified) == (3, 2, 0, 0)


# --- the mailbox census ---------------------------------------------------------------------------------


async def test_mail_enabled_users_without_a_mailbox_are_counted_as_no_mailbox(
    fp_sim: GraphSimulator, tmp_path: Path
) -> None:
    result = await audit(fp_sim, tmp_path, "no-mailbox")
    assert result.error is None
    assert result.status is Status.COMPLIANT
    assert F.MAILBOX_SCAN_INCOMPLETE not in result.finding_codes(), "a 404 no-mailbox is not a failure"
    census = result.mailboxes
    assert census is not None
    assert (census.user, census.shared, census.no_mailbox, census.unclassified) == (3, 2, 3, 0)
    assert census.total_users == 8
    # they were asked (they have a mail address) and Graph said 404
    answered_404 = [
        r for r in records(fp_sim, "no-mailbox", "mailboxSettings.userPurpose") if r.status == 404
    ]
    assert len(answered_404) == 3


async def test_every_mailbox_answering_403_is_a_missing_permission_not_a_partial_scan(
    fp_sim: GraphSimulator, tmp_path: Path
) -> None:
    result = await audit(fp_sim, tmp_path, "mailbox-denied")
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.PERMISSION_DENIED
    assert "MailboxSettings.Read" in result.error.message + result.error.hint
    # an error never hides as zero: the billing of a tenant that could not be judged is unknown
    assert result.billing.monthly_cost is None
    assert len(records(fp_sim, "mailbox-denied", "mailboxSettings.userPurpose")) == 5


async def test_with_history_on_every_mailbox_answering_403_names_the_tenant_and_the_app(
    fp_sim: GraphSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The census through the history's path (here: no stored census, so a full read), as `auditor audit`
    # runs it with history on. The admin reads which tenant refused and which app needs the permission.
    caplog.set_level(logging.INFO, logger="auditor.census")
    result = await audit(fp_sim, tmp_path, "mailbox-denied", census=CensusBook(None))
    label = tenant_config(make_config(fp_sim, tmp_path), "mailbox-denied").label
    client_id = next(a for a in fp_sim.world.apps.values() if a.env_prefix == ENV_PREFIX).client_id
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.PERMISSION_DENIED
    assert result.error.message == (
        f"Every mailbox in tenant {label} answered 403 ErrorAccessDenied; needs MailboxSettings.Read"
    )
    assert result.error.hint == (
        f"Grant the Microsoft Graph application permission MailboxSettings.Read to the auditor app (client id "
        f"{client_id}) and have an administrator of tenant {label} grant admin consent, then re-run."
    )
    assert f"{label}: full census read (history is not available)" in caplog.messages


async def test_the_audit_clock_is_utc_whatever_the_machines_time_zone(
    fp_sim: GraphSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A machine twelve hours behind UTC: a role that ends in 29 days (less the seconds since the fixture
    # was built) has 28 whole days left, not 29.
    monkeypatch.setenv("TZ", "Etc/GMT+12")
    time.tzset()
    try:
        result = await audit(fp_sim, tmp_path, "expires-29")
    finally:
        monkeypatch.undo()
        time.tzset()
    (expiring,) = result.findings
    assert expiring.code is F.ROLE_EXPIRING and "UTC (28 days):" in expiring.message


async def test_a_batch_item_missing_from_the_answer_is_asked_again_never_dropped(
    fp_sim: GraphSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$batch answers carry one response per request; if one ever goes missing the user is asked again."""
    dropped: list[str] = []  # user ids whose answer was lost
    real_batch = GraphReader.batch

    async def batch_losing_one_item(
        self: GraphReader, items: list[dict[str, Any]], permission: str
    ) -> dict[str, dict[str, Any]]:
        answers = await real_batch(self, items, permission)
        if not dropped and "/mailboxSettings" in items[0]["url"]:
            dropped.append(items[0]["url"].split("/")[2])
            answers.pop(str(items[0]["id"]))
        return answers

    # The reader's own $batch method is the interface the census reads through; everything under it is real.
    monkeypatch.setattr(GraphReader, "batch", batch_losing_one_item)
    result = await audit(fp_sim, tmp_path, "healthy")
    assert dropped, "the test must actually have dropped an item"
    assert_healthy(result)
    per_user: dict[str, int] = {}
    for record in records(fp_sim, "healthy", "mailboxSettings.userPurpose"):
        user = record.path.split("/users/")[1].split("/")[0]
        per_user[user] = per_user.get(user, 0) + 1
    assert per_user.pop(dropped[0]) == 2, "the user whose answer went missing was asked once more"
    assert set(per_user.values()) == {1}


async def test_mailboxes_go_in_full_batches_of_twenty(fp_sim: GraphSimulator, tmp_path: Path) -> None:
    sent: list[str] = []
    result = await audit(fp_sim, tmp_path, "full-batch", sent=sent)
    assert result.error is None and result.status is Status.COMPLIANT
    assert result.mailboxes is not None
    assert (result.mailboxes.user, result.mailboxes.shared, result.mailboxes.unclassified) == (20, 5, 0)
    assert sum(1 for path in sent if path.endswith("/$batch")) == 2, "20 + 5"


# --- transport failures are retried, after a delay --------------------------------------------------


async def test_a_connection_reset_is_retried_after_a_delay(
    fp_sim: GraphSimulator, tmp_path: Path, full_back_off: None
) -> None:
    fp_sim.add_fault_rule(FaultRule(route="users.list", tenant_id=TENANT_IDS["healthy"], reset=True))
    result = await audit(fp_sim, tmp_path, "healthy")
    assert_healthy(result)
    sent = records(fp_sim, "healthy", "users.list")
    assert [r.status for r in sent] == [0, 200], "reset once, then answered"
    assert sent[1].time - sent[0].time >= 0.45, "the retry waits (back-off), it does not hammer at once"


async def test_a_slow_answer_times_out_and_is_retried(fp_sim: GraphSimulator, tmp_path: Path) -> None:
    # Answers after 3 s to a client that waits 1 s; the next try is answered at once.
    fp_sim.add_fault_rule(
        FaultRule(
            route="users.list",
            tenant_id=TENANT_IDS["healthy"],
            status=504,
            code="GatewayTimeout",
            delay_seconds=3.0,
        )
    )
    sent: list[str] = []
    result = await audit(fp_sim, tmp_path, "healthy", timeout_seconds=1.0, sent=sent)
    assert_healthy(result)
    assert sum(1 for path in sent if path.endswith("/users")) == 2, "sent twice: given up on, then answered"


async def test_time_outs_that_persist_are_an_error_not_a_verdict(
    fp_sim: GraphSimulator, tmp_path: Path, full_back_off: None
) -> None:
    fp_sim.add_fault_rule(
        FaultRule(
            route="users.list",
            tenant_id=TENANT_IDS["healthy"],
            status=504,
            code="GatewayTimeout",
            delay_seconds=2.0,
            times=100,
        )
    )
    # Time-outs are retried with a back-off until the tenant's time (here 4 s) runs out.
    sent_at: list[tuple[float, str]] = []
    result = await audit(
        fp_sim, tmp_path, "healthy", timeout_seconds=0.5, deadline_seconds=4, sent_at=sent_at
    )
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.TIMEOUT
    message = result.error.message
    assert message.startswith("Gave up on ") and "/v1.0/users for tenant " in message, message
    assert "no answer within 0.5 s" in message, message
    assert "$select" not in message, "the path, without the query"
    assert result.billing.monthly_cost is None
    tries = [at for at, path in sent_at if path.endswith("/users")]
    assert len(tries) >= 2, "it was tried more than once"
    # 0.5 s without an answer, then a back-off of 0.5 s (pinned to its ceiling) before the next try
    assert tries[1] - tries[0] >= 0.9, "a time-out is backed off, not retried at once"


@pytest.mark.parametrize(("status", "code"), [(503, "ServiceUnavailable"), (429, "TooManyRequests")])
async def test_a_read_answered_with_retry_after_is_retried_once_it_has_passed(
    fp_sim: GraphSimulator, tmp_path: Path, status: int, code: str
) -> None:
    fp_sim.add_fault_rule(
        FaultRule(
            route="users.list", tenant_id=TENANT_IDS["healthy"], status=status, code=code, retry_after=1
        )
    )
    result = await audit(fp_sim, tmp_path, "healthy")
    assert_healthy(result)
    sent = records(fp_sim, "healthy", "users.list")
    assert [r.status for r in sent] == [status, 200]
    assert sent[1].time - sent[0].time >= 0.95, "not before Retry-After"


async def test_the_back_off_grows_from_one_retry_to_the_next(
    fp_sim: GraphSimulator, tmp_path: Path, full_back_off: None
) -> None:
    fp_sim.add_fault_rule(
        FaultRule(route="users.list", tenant_id=TENANT_IDS["healthy"], status=502, code="BadGateway", times=2)
    )
    result = await audit(fp_sim, tmp_path, "healthy")
    assert_healthy(result)
    sent = records(fp_sim, "healthy", "users.list")
    assert [r.status for r in sent] == [502, 502, 200]
    first, second = sent[1].time - sent[0].time, sent[2].time - sent[1].time
    # ceilings 0.5 s then 1 s (the draws are pinned to them)
    assert first >= 0.45 and second >= 0.95 and second > first


async def test_a_5xx_without_retry_after_is_retried_after_a_back_off(
    fp_sim: GraphSimulator, tmp_path: Path, full_back_off: None
) -> None:
    fp_sim.add_fault_rule(
        FaultRule(route="users.list", tenant_id=TENANT_IDS["healthy"], status=502, code="BadGateway")
    )
    result = await audit(fp_sim, tmp_path, "healthy")
    assert_healthy(result)
    sent = records(fp_sim, "healthy", "users.list")
    assert [r.status for r in sent] == [502, 200]
    assert sent[1].time - sent[0].time >= 0.45


async def test_a_gateway_s_html_page_instead_of_graph_s_json_is_retried_like_any_5xx(
    fp_sim: GraphSimulator, tmp_path: Path
) -> None:
    # During incidents Graph has answered 503 with an HTML page (see FaultRule.html for the reports).
    fp_sim.add_fault_rule(
        FaultRule(route="users.list", tenant_id=TENANT_IDS["healthy"], status=503, html=True)
    )
    result = await audit(fp_sim, tmp_path, "healthy")
    assert_healthy(result)
    assert [r.status for r in records(fp_sim, "healthy", "users.list")] == [503, 200]


async def test_html_pages_that_persist_are_an_error_naming_the_status_not_a_verdict(
    fp_sim: GraphSimulator, tmp_path: Path
) -> None:
    fp_sim.add_fault_rule(
        FaultRule(route="users.list", tenant_id=TENANT_IDS["healthy"], status=502, html=True, times=100)
    )
    result = await audit(fp_sim, tmp_path, "healthy", deadline_seconds=3)
    assert result.status is Status.ERROR and result.error is not None
    assert "502" in result.error.message, result.error.message
    assert "<html" not in result.error.message.lower(), "the page itself is not the admin's message"
    assert result.billing.monthly_cost is None


# --- Graph's refusals map to the error an administrator can act on ----------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "InvalidAuthenticationToken"), (403, "Authorization_RequestDenied")],
)
async def test_a_refused_read_is_a_permission_error_naming_the_permission(
    fp_sim: GraphSimulator, tmp_path: Path, status: int, code: str
) -> None:
    fp_sim.add_fault_rule(
        FaultRule(route="users.list", tenant_id=TENANT_IDS["healthy"], status=status, code=code, times=5)
    )
    result = await audit(fp_sim, tmp_path, "healthy")
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.PERMISSION_DENIED
    label = tenant_config(make_config(fp_sim, tmp_path), "healthy").label
    assert result.error.message.startswith(f"Graph answered {status} {code}: The service is temporarily")
    assert f"(tenant {label}; needs User.Read.All) (request-id " in result.error.message
    assert result.error.hint.startswith(
        "Grant the Microsoft Graph application permission User.Read.All to the "
    )
    assert result.error.hint.endswith(
        f"and have an administrator of tenant {label} grant admin consent, then re-run."
    )
    assert len(records(fp_sim, "healthy", "users.list")) == 1, "a refusal is not retried"


async def test_throttling_that_never_ends_is_an_error_not_a_verdict(
    fp_sim: GraphSimulator, tmp_path: Path
) -> None:
    # Retry-After: 0 keeps this quick; the retry budget still ends.
    fp_sim.add_fault_rule(
        FaultRule(
            route="users.list",
            tenant_id=TENANT_IDS["healthy"],
            status=429,
            code="TooManyRequests",
            retry_after=0,
            times=1_000_000,
        )
    )
    # Throttling with Retry-After is paced, not counted against patience: the tenant's time ends it.
    result = await audit(fp_sim, tmp_path, "healthy", deadline_seconds=3)
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.THROTTLED
    message = result.error.message
    assert message.startswith("Gave up on ") and "/v1.0/users for tenant " in message, message
    assert "the tenant's time ran out" in message and "429 with Retry-After (waited out)" in message
    assert "(request-id " in message
    assert "kept throttling" in result.error.hint
    assert result.billing.monthly_cost is None


async def test_an_unexpected_graph_error_is_a_graph_error_not_a_permission_problem(
    fp_sim: GraphSimulator, tmp_path: Path
) -> None:
    fp_sim.add_fault_rule(
        FaultRule(route="users.list", tenant_id=TENANT_IDS["healthy"], status=400, code="BadRequest", times=5)
    )
    result = await audit(fp_sim, tmp_path, "healthy")
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.GRAPH_ERROR
    assert result.error.message.startswith(
        "Graph answered 400 BadRequest: The service is temporarily unavailable."
    )
    assert "(request-id " in result.error.message, "support asks for Graph's request-id"


async def test_a_sign_in_failure_during_the_pim_reads_fails_the_tenant(
    fp_sim: GraphSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token refresh refused half-way (say the secret expired) is AUTH_FAILED, never "PIM unavailable"."""

    async def refused(self: GraphReader, odata_filter: str) -> list[dict[str, Any]]:
        raise GraphError(
            "Sign-in to tenant failed: AADSTS7000222: the client secret has expired",
            code=ErrorCode.AUTH_FAILED,
        )

    monkeypatch.setattr(GraphReader, "role_assignment_instances", refused)
    result = await audit(fp_sim, tmp_path, "healthy")
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.AUTH_FAILED
    assert F.PIM_UNAVAILABLE not in result.finding_codes()


# --- role expiry and eligibility, end to end ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "severity"),
    [("expires-29", Severity.HIGH), ("expires-31", Severity.MEDIUM), ("expires-59", Severity.MEDIUM)],
)
async def test_expiring_role_warning_is_high_within_30_days(
    fp_sim: GraphSimulator, tmp_path: Path, key: str, severity: Severity
) -> None:
    result = await audit(fp_sim, tmp_path, key)
    assert result.status is Status.COMPLIANT
    assert {f.code: f.severity for f in result.findings} == {F.ROLE_EXPIRING: severity}


async def test_an_expired_eligibility_is_a_missing_role(fp_sim: GraphSimulator, tmp_path: Path) -> None:
    result = await audit(fp_sim, tmp_path, "lapsed-eligible")
    assert result.status is Status.NON_COMPLIANT
    assert result.finding_codes() == {F.ROLE_MISSING}
    assert result.billing.billed_shared_mailboxes == 2 and result.billing.monthly_cost == 5.0


async def test_a_current_eligibility_is_eligible_only(fp_sim: GraphSimulator, tmp_path: Path) -> None:
    result = await audit(fp_sim, tmp_path, "current-eligible")
    assert result.status is Status.NON_COMPLIANT
    assert result.finding_codes() == {F.ROLE_ELIGIBLE_ONLY}


# --- remediation: never a blind second POST, honour Retry-After, wait for replication -----------------------


async def remediate(
    sim: GraphSimulator,
    tmp_path: Path,
    key: str,
    *,
    verify_timeout: float = 60.0,
    request_timeout: float | None = None,
) -> TenantResult:
    config = make_config(sim, tmp_path)
    tenant = tenant_config(config, key)
    result = await TenantAuditor(config)(tenant)
    plan = plan_remediation([result], [tenant])
    assert [e.action for e in plan] == [A.PLANNED]
    outcomes = await apply_plan(
        plan,
        Journal(tmp_path / "remediation.jsonl"),
        verify_timeout=verify_timeout,
        request_timeout=request_timeout,
    )
    return apply_remediation(result, outcomes[tenant.tenant_id])


def journal_entries(tmp_path: Path) -> list[dict[str, Any]]:
    """The lines `remediate` wrote to its journal."""
    text = (tmp_path / "remediation.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def vendor_security_readers(sim: GraphSimulator, key: str) -> int:
    state = sim.world.tenant(TENANT_IDS[key])
    assert state is not None
    vendor = next(sp for sp in state.service_principals if sp["appId"] == DEFAULT_VENDOR["app_id"])
    return sum(
        1
        for a in state.role_assignments
        if a["principalId"] == vendor["id"]
        and a["roleDefinitionId"] == SECURITY_READER
        and a["directoryScopeId"] == "/"
    )


def hide_new_assignments_for(sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Directory replication: a new role assignment is invisible to reads for a while after it is created
    (graph-api-notes.md, "POST roleAssignments": no documented bound)."""
    graph = sim.graph
    original = graph._active
    known = {a["id"] for t in sim.world.tenants.values() for a in t.role_assignments}
    first_seen: dict[str, float] = {}

    def replicating(tenant: Any, *, replicated: bool = True) -> list[dict[str, Any]]:
        now = time.monotonic()
        visible = []
        for assignment in original(tenant, replicated=replicated):
            new = replicated and assignment["id"] not in known
            if new and now - first_seen.setdefault(assignment["id"], now) < seconds:
                continue
            visible.append(assignment)
        return visible

    monkeypatch.setattr(graph, "_active", replicating)


async def test_a_conflict_whose_read_back_shows_nothing_is_not_posted_again(
    write_sim: GraphSimulator, tmp_path: Path
) -> None:
    write_sim.add_fault_rule(
        FaultRule(
            route="roleAssignments.create",
            tenant_id=TENANT_IDS["role-missing"],
            status=400,
            code="Request_BadRequest",
            message="A conflicting object with one or more of the specified property values is present in the "
            "directory.",
        )
    )
    # Graph says it exists but reads never show it: accepted-but-unverified (issue 11), never a second POST.
    result = await remediate(write_sim, tmp_path, "role-missing", verify_timeout=2.0)
    assert len(records(write_sim, "role-missing", "roleAssignments.create")) == 1, "one POST, never a second"
    assert result.remediation is not None and result.remediation.action is A.CREATED_UNVERIFIED
    assert result.status is Status.NON_COMPLIANT
    assert vendor_security_readers(write_sim, "role-missing") == 0


async def test_a_created_assignment_is_waited_for_until_it_replicates(
    write_sim: GraphSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_new_assignments_for(write_sim, monkeypatch, 1.0)
    result = await remediate(write_sim, tmp_path, "role-missing")
    assert result.remediation is not None and result.remediation.action is A.CREATED, result.remediation
    assert result.status is Status.REMEDIATED
    assert len(records(write_sim, "role-missing", "roleAssignments.create")) == 1
    reads = records(write_sim, "role-missing", "roleAssignments.list")
    assert len(reads) >= 3, "the initial check, then read-backs until it showed"
    assert vendor_security_readers(write_sim, "role-missing") == 1


async def test_a_503_with_retry_after_is_waited_out_before_the_read_back(
    write_sim: GraphSimulator, tmp_path: Path
) -> None:
    # The server applied the POST, then answered 503 Retry-After: 2 (the tenant gate only pauses on 429s).
    write_sim.add_fault_rule(
        FaultRule(
            route="roleAssignments.create",
            tenant_id=TENANT_IDS["role-missing"],
            status=503,
            retry_after=2,
            after=True,
        )
    )
    result = await remediate(write_sim, tmp_path, "role-missing")
    assert result.remediation is not None and result.remediation.action is A.CREATED
    [post] = records(write_sim, "role-missing", "roleAssignments.create")
    read_backs = [r for r in records(write_sim, "role-missing", "roleAssignments.list") if r.seq > post.seq]
    assert read_backs, "it read back before deciding"
    assert read_backs[0].time - post.time >= 1.9, "no request before Retry-After has passed"
    assert vendor_security_readers(write_sim, "role-missing") == 1


async def test_a_write_answered_with_a_gateway_s_html_page_is_read_back_not_posted_again(
    write_sim: GraphSimulator, tmp_path: Path
) -> None:
    # The POST was applied, then a gateway answered with its HTML 503 page, which the SDK cannot parse.
    write_sim.add_fault_rule(
        FaultRule(
            route="roleAssignments.create",
            tenant_id=TENANT_IDS["role-missing"],
            status=503,
            html=True,
            retry_after=2,
            after=True,
        )
    )
    result = await remediate(write_sim, tmp_path, "role-missing")
    assert result.remediation is not None and result.remediation.action is A.CREATED, result.remediation
    assert result.remediation.detail == "confirmed by reading it back after Graph answered 503"
    [post] = records(write_sim, "role-missing", "roleAssignments.create")
    assert post.status == 503
    read_backs = [r for r in records(write_sim, "role-missing", "roleAssignments.list") if r.seq > post.seq]
    assert read_backs[0].time - post.time >= 1.9, "the page's Retry-After was waited out before the read-back"
    assert vendor_security_readers(write_sim, "role-missing") == 1
    [create] = [e for e in journal_entries(tmp_path) if e["action"] == "create"]
    assert (create["outcome"], create["status"]) == ("http_503", 503)
    assert re.fullmatch(r"[0-9a-f-]{36}", create["request_id"]), "the request-id header, for support"
    assert create["error"] == "None: 503 answer without Graph's error body (e.g. a gateway's error page)"


async def test_a_write_refused_with_a_gateway_s_html_page_is_posted_again_once_reads_show_it_absent(
    write_sim: GraphSimulator, tmp_path: Path
) -> None:
    # Not applied this time: the gateway's 502 came before Graph. The read-back shows nothing, so the
    # next attempt posts again.
    write_sim.add_fault_rule(
        FaultRule(
            route="roleAssignments.create",
            tenant_id=TENANT_IDS["role-missing"],
            status=502,
            html=True,
        )
    )
    result = await remediate(write_sim, tmp_path, "role-missing", verify_timeout=2.0)
    assert result.remediation is not None and result.remediation.action is A.CREATED, result.remediation
    assert result.remediation.detail == "created and read back (after 502 on attempt 1)"
    posts = records(write_sim, "role-missing", "roleAssignments.create")
    assert [p.status for p in posts] == [502, 201]
    assert vendor_security_readers(write_sim, "role-missing") == 1


async def test_a_write_slower_than_the_request_time_out_is_given_up_on_and_read_back(
    write_sim: GraphSimulator, tmp_path: Path
) -> None:
    # `auditor remediate` passes run.request_timeout_seconds: a POST that hangs is not waited for longer.
    write_sim.add_fault_rule(
        FaultRule(
            route="roleAssignments.create",
            tenant_id=TENANT_IDS["role-missing"],
            status=503,
            delay_seconds=3.0,
            after=True,
        )
    )
    outcome = (
        await remediate(write_sim, tmp_path, "role-missing", verify_timeout=5, request_timeout=0.5)
    ).remediation
    assert outcome is not None and outcome.action is A.CREATED, outcome
    assert outcome.detail == "confirmed by reading it back after Graph answered nothing"
    assert vendor_security_readers(write_sim, "role-missing") == 1


async def test_a_write_refused_with_403_names_the_tenant_and_the_permission_it_needs(
    write_sim: GraphSimulator, tmp_path: Path
) -> None:
    write_sim.add_fault_rule(
        FaultRule(
            route="roleAssignments.create",
            tenant_id=TENANT_IDS["role-missing"],
            status=403,
            code="Authorization_RequestDenied",
            message="Insufficient privileges to complete the operation.",
        )
    )
    outcome = (await remediate(write_sim, tmp_path, "role-missing")).remediation
    assert outcome is not None and outcome.action is A.FAILED
    label = tenant_config(make_config(write_sim, tmp_path), "role-missing").label
    assert outcome.detail.startswith(
        f"Graph refused the role assignment in tenant {label}: 403 Authorization_RequestDenied: "
        "Insufficient privileges to complete the operation."
    ), outcome.detail
    assert "RoleManagement.ReadWrite.Directory" in outcome.detail, outcome.detail


async def test_a_refused_re_read_before_writing_fails_naming_the_tenant_and_posts_nothing(
    write_sim: GraphSimulator, tmp_path: Path
) -> None:
    config = make_config(write_sim, tmp_path)
    tenant = tenant_config(config, "role-missing")
    result = await TenantAuditor(config)(tenant)
    plan = plan_remediation([result], [tenant])
    write_sim.add_fault_rule(
        FaultRule(
            route="roleAssignments.list",
            tenant_id=tenant.tenant_id,
            status=403,
            code="Authorization_RequestDenied",
            times=10,
        )
    )
    outcome = (await apply_plan(plan, Journal(tmp_path / "remediation.jsonl")))[tenant.tenant_id]
    assert outcome.action is A.FAILED
    assert tenant.label in outcome.detail and "RoleManagement.Read.Directory" in outcome.detail
    assert records(write_sim, "role-missing", "roleAssignments.create") == []
