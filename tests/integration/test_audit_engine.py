"""The audit engine end to end: real azure-identity and msgraph-sdk over HTTPS to the simulator."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from auditor.collect import TenantAuditor
from auditor.config import AuditConfig, TenantConfig
from auditor.errors import ErrorCode
from auditor.graph.client import ConnectionSettings, open_session
from auditor.model import FindingCode as F
from auditor.model import Status, TenantResult
from auditor.simulator import FaultProfile, GraphSimulator
from tests.conftest import DEMO_TENANTS
from tests.integration.conftest import write_demo_config

# What each demo tenant's situation calls for (config/demo-fleet.toml explains each one).
EXPECTED: dict[str, tuple[Status, set[F], int | None]] = {
    "contoso": (Status.COMPLIANT, set(), 0),
    "fabrikam": (
        Status.NON_COMPLIANT,
        {F.ROLE_MISSING, F.SHARED_MAILBOX_SIGNIN_ENABLED, F.SHARED_MAILBOX_LICENSED},
        25,
    ),
    "northwind": (Status.NON_COMPLIANT, {F.ROLE_SCOPED}, 9),
    "adatum": (Status.NON_COMPLIANT, {F.ROLE_ELIGIBLE_ONLY}, 6),
    "tailspin": (Status.COMPLIANT, {F.ROLE_EXPIRING}, 0),
    "woodgrove": (Status.COMPLIANT, {F.ROLE_VIA_GROUP}, 0),
    "litware": (Status.NON_COMPLIANT, {F.SP_LOOKALIKE, F.ROLE_MISSING}, 4),
    "proseware": (Status.AMBIGUOUS, {F.SP_AMBIGUOUS}, None),
    "margies": (Status.NOT_CONNECTED, {F.SP_NOT_FOUND}, 0),
    "alpine": (Status.NON_COMPLIANT, {F.EXCHANGE_PERMISSION_MISSING}, 7),
    "coho": (Status.NON_COMPLIANT, {F.SP_DISABLED}, 3),
    "fourthcoffee": (Status.ERROR, set(), None),
    "relecloud": (Status.ERROR, set(), None),
    "lucerne": (Status.NON_COMPLIANT, {F.ROLE_MISSING, F.PIM_UNAVAILABLE}, 64),
    "trey": (Status.COMPLIANT, {F.MAILBOX_SCAN_INCOMPLETE}, 0),
    "wingtip": (Status.COMPLIANT, {F.ROLE_VIA_GROUP}, 0),
    "humongous": (Status.NON_COMPLIANT, {F.ROLE_MISSING}, 5),
    "bellows": (Status.ERROR, set(), None),
}
KEY_BY_ID = {tenant_id: key for key, tenant_id in DEMO_TENANTS.items()}
VENDOR_APP_ID = "7e1b3f0c-2d54-4c8e-9a61-5f0c3b2a9d17"  # config/demo-fleet.toml [vendor] app_id
DEMO_PUBLISHER = "c0ffee00-5ca1-4ab1-9e55-00000000c0de"  # ... and its publisher_tenant_id


async def audit_all(
    config: AuditConfig, tenants: list[TenantConfig] | None = None, **auditor_options: Any
) -> dict[str, TenantResult]:
    auditor = TenantAuditor(config, **auditor_options)
    chosen = tenants if tenants is not None else list(config.tenants)
    results = await asyncio.gather(*(auditor(t) for t in chosen))
    return {KEY_BY_ID[r.tenant_id]: r for r in results}


@pytest.fixture
def config(sim_env: GraphSimulator, tmp_path: Path) -> AuditConfig:
    return write_demo_config(sim_env, tmp_path)


async def test_every_demo_tenant_gets_the_verdict_its_situation_calls_for(config: AuditConfig) -> None:
    results = await audit_all(config)
    assert set(results) == set(EXPECTED)
    for key, (status, codes, billed) in EXPECTED.items():
        result = results[key]
        assert result.status is status, (key, result.status, result.error)
        assert result.finding_codes() == codes, key
        assert result.billing.billed_shared_mailboxes == billed, key
    fabrikam = results["fabrikam"]
    assert fabrikam.billing.monthly_cost == pytest.approx(25 * 2.5)
    assert (
        fabrikam.service_principal is not None
        and fabrikam.service_principal.record.display_name == "USS AzureAD"
    )
    names = {m.display_name for m in fabrikam.mailboxes.shared_mailboxes}  # type: ignore[union-attr]
    assert "<script>alert('owned')</script> Sales" in names  # tenant data kept verbatim; outputs escape it
    # the look-alike holds the role, yet the vendor app is judged on its own assignments
    assert results["litware"].service_principal.record.app_owner_organization_id != DEMO_TENANTS["litware"]  # type: ignore[union-attr]
    trey = results["trey"].mailboxes
    assert trey is not None and trey.unclassified == 3 and "ErrorAccessDenied" in trey.unclassified_reason


async def test_errors_carry_a_code_and_an_admin_ready_hint(config: AuditConfig) -> None:
    results = await audit_all(config)
    denied = results["fourthcoffee"].error
    assert denied is not None and denied.code is ErrorCode.PERMISSION_DENIED
    assert "RoleManagement.Read.Directory" in denied.hint and "Fourth Coffee" in denied.hint
    assert "grant admin consent" in denied.hint
    auth = results["relecloud"].error
    assert auth is not None and auth.code is ErrorCode.AUTH_FAILED
    assert "AADSTS7000215" in auth.message and "new client secret" in auth.hint
    # an error is never reported as a gap
    assert results["fourthcoffee"].billing.monthly_cost is None
    assert not any(
        f.code in (F.ROLE_MISSING, F.EXCHANGE_PERMISSION_MISSING) for f in results["relecloud"].findings
    )


async def test_failing_tenants_do_not_change_the_others(config: AuditConfig) -> None:
    with_failures = await audit_all(config)
    healthy = [t for t in config.tenants if KEY_BY_ID[t.tenant_id] not in ("fourthcoffee", "relecloud")]
    without = await audit_all(config, healthy)
    for key, result in without.items():
        assert with_failures[key].to_dict() == result.to_dict(), key


async def test_name_only_identification(sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim_env, tmp_path, vendor={})
    results = await audit_all(
        config, [t for t in config.tenants if KEY_BY_ID[t.tenant_id] in ("litware", "contoso")]
    )
    assert results["litware"].finding_codes() == {F.SP_NAME_ONLY, F.SP_LOOKALIKE, F.ROLE_MISSING}
    assert results["contoso"].finding_codes() == {F.SP_NAME_ONLY}
    assert results["contoso"].status is Status.COMPLIANT


async def test_pinned_app_id_identifies_by_app_id(sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim_env, tmp_path, vendor={"app_id": "0b7d4c8e-1f3a-4e6b-9d2c-5a8f7e6d4c31"})
    results = await audit_all(config, [t for t in config.tenants if KEY_BY_ID[t.tenant_id] == "proseware"])
    proseware = results["proseware"]
    assert proseware.service_principal is not None
    assert proseware.service_principal.identified_by.value == "app_id"
    assert proseware.status is Status.NON_COMPLIANT


async def test_more_than_999_users_are_paged_completely(config: AuditConfig, sim_env: GraphSimulator) -> None:
    lucerne = [t for t in config.tenants if KEY_BY_ID[t.tenant_id] == "lucerne"]
    results = await audit_all(config, lucerne)
    census = results["lucerne"].mailboxes
    assert census is not None
    assert census.total_users == 2150
    assert (census.shared, census.room, census.equipment, census.no_mailbox) == (64, 12, 4, 210)
    assert sim_env.count(route="users.list", tenant=DEMO_TENANTS["lucerne"]) == 3


def expected_requests(
    users: int,
    mailboxes: int,
    *,
    groups: int,
    p2: bool,
    exchange_roles: bool,
    identified: bool = True,
    pinned: bool = False,
    publisher: bool = True,
) -> int:
    """README "Graph requests per tenant": top-level Graph requests for one tenant (batch items not
    counted). The demo config names the publisher: the search asks by display name and by publisher."""
    search = 1 + (1 if publisher else 0) + (1 if pinned else 0)
    base = 1 + search + math.ceil(users / 999) + math.ceil(mailboxes / 20)
    if not identified:
        return base
    role_assignments = math.ceil((1 + groups) / 15)
    return base + 1 + role_assignments + (2 if p2 else 1) + 1 + (1 if exchange_roles else 0)


@pytest.mark.parametrize(
    ("key", "groups", "p2", "exchange_roles", "identified", "pinned"),
    [
        ("contoso", 0, True, True, True, False),
        ("contoso", 0, True, True, True, True),  # a pinned vendor.app_id costs one more search
        ("woodgrove", 1, True, True, True, False),
        ("wingtip", 2, True, True, True, False),
        ("alpine", 0, True, False, True, False),
        ("lucerne", 0, False, True, True, False),
        ("lucerne", 0, False, True, True, True),
        ("margies", 0, True, False, False, False),
        ("margies", 0, True, False, False, True),
        ("proseware", 0, True, False, False, False),
        ("humongous", 0, True, True, True, False),
    ],
)
async def test_request_count_follows_the_readme_formula(
    sim_env: GraphSimulator,
    tmp_path: Path,
    key: str,
    groups: int,
    p2: bool,
    exchange_roles: bool,
    identified: bool,
    pinned: bool,
) -> None:
    # The demo config names the publisher; a pinned app id comes on top of it.
    vendor = {"publisher_tenant_id": DEMO_PUBLISHER, "app_id": VENDOR_APP_ID} if pinned else None
    config = write_demo_config(sim_env, tmp_path, vendor=vendor)
    tenant_id = DEMO_TENANTS[key]
    await audit_all(config, [t for t in config.tenants if t.tenant_id == tenant_id])
    state = sim_env.world.tenant(tenant_id)
    assert state is not None
    users = len(state.users)
    mailboxes = sum(1 for u in state.users if u.mail)
    top_level = [
        r
        for r in sim_env.requests()
        if r.tenant_id == tenant_id and r.batch_parent is None and r.route != "identity.token"
    ]
    assert len(top_level) == expected_requests(
        users,
        mailboxes,
        groups=groups,
        p2=p2,
        exchange_roles=exchange_roles,
        identified=identified,
        pinned=pinned,
    )
    assert sim_env.count(route="mailboxSettings.userPurpose", tenant=tenant_id) == mailboxes
    assert sim_env.count(route="mailboxSettings.get", tenant=tenant_id) == 0
    searches = [r for r in top_level if r.route == "servicePrincipals.list"]
    assert len(searches) == (3 if pinned else 2), "by display name and publisher, and by appId when pinned"
    assert sim_env.count(route="identity.token", tenant=tenant_id) == 1


async def test_results_with_ten_percent_faults_equal_the_fault_free_run(
    config: AuditConfig, sim_env: GraphSimulator
) -> None:
    clean = await audit_all(config)
    sim_env.reset_observations()
    sim_env.set_faults(
        FaultProfile(
            throttle_rate=0.05, error_rate=0.05, error_statuses=(503,), retry_after_seconds=1, latency_ms=2
        )
    )
    wire = WireLog()
    faulty = await audit_all(config, session_factory=wire.session_factory)
    faults = [r for r in sim_env.requests() if r.fault]
    assert len([r for r in faults if r.status == 429]) > 20, "the run must actually have been throttled"
    assert any(r.batch_parent is not None and r.status == 429 for r in faults), "and inside batches"
    assert any(r.batch_parent is None and r.status == 503 for r in faults)
    # Judged where the requests are sent (the simulator's own count can mistake a request that queued
    # behind others in its single thread for a late one).
    assert wire.sent_too_early() == [], "no request may be sent before its Retry-After has passed"
    assert wire.throttled_top_level > 5 and wire.throttled_items > 5
    for key in EXPECTED:
        assert _comparable(faulty[key]) == _comparable(clean[key]), key


class WireLog:
    """Client-side record of what was sent and when, per tenant, through httpx event hooks."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[float, str, Any]]] = defaultdict(list)
        self.throttled_top_level = 0
        self.throttled_items = 0

    def session_factory(self, settings: ConnectionSettings) -> Any:
        tenant = settings.tenant_id
        log = self.events[tenant]

        async def on_request(request: httpx.Request) -> None:
            users = set()
            if request.url.path.endswith("/$batch"):
                users = {item["url"].split("/")[2] for item in json.loads(request.content)["requests"]}
            log.append((time.monotonic(), "send", users))

        async def on_response(response: httpx.Response) -> None:
            now = time.monotonic()
            if response.status_code == 429:
                self.throttled_top_level += 1
                log.append((now, "tenant-429", float(response.headers["Retry-After"])))
            elif response.request.url.path.endswith("/$batch") and response.status_code == 200:
                await response.aread()
                sent = json.loads(response.request.content)["requests"]
                for item in response.json()["responses"]:
                    if item["status"] == 429:
                        self.throttled_items += 1
                        user = sent[int(item["id"])]["url"].split("/")[2]
                        log.append((now, "item-429", (user, float(item["headers"]["Retry-After"]))))

        return open_session(settings, event_hooks={"request": [on_request], "response": [on_response]})

    def sent_too_early(self) -> list[str]:
        # These hooks run after the throttle gate's own, so their clock reads of the same answer can be later
        # than the gate's by one thread switch (the simulator shares the process: sys.getswitchinterval(),
        # 5 ms) and more on a loaded machine. A request counts as early when it left more than that margin
        # before its Retry-After ran out.
        margin = 4 * sys.getswitchinterval()
        problems = []
        for tenant, events in self.events.items():
            for at, kind, detail in events:
                if kind == "tenant-429":
                    until = at + detail - margin
                    problems += [
                        f"{tenant}: request {t - at:.3f}s after a 429 asking {detail}s"
                        for t, k, _ in events
                        if k == "send" and at < t < until
                    ]
                elif kind == "item-429":
                    user, seconds = detail
                    problems += [
                        f"{tenant}: mailbox {user} asked again {t - at:.3f}s after a 429 asking {seconds}s"
                        for t, k, users in events
                        if k == "send" and at < t < at + seconds - margin and user in users
                    ]
        return problems


def _comparable(result: TenantResult) -> dict[str, Any]:
    data = result.to_dict()
    if data.get("error"):
        # request ids differ between runs; the code and the hint must not
        data["error"] = {"code": data["error"]["code"], "hint": data["error"]["hint"]}
    return data
