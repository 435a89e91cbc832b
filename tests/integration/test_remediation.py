"""--remediate against the simulator: one POST per fixable tenant, never a duplicate, never a look-alike."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from auditor.collect import TenantAuditor
from auditor.config import AuditConfig
from auditor.evaluate import apply_remediation
from auditor.model import RemediationAction as A
from auditor.model import Status, TenantResult
from auditor.remediation import Applier, Journal, apply_plan, plan_remediation, planned_remediation
from auditor.simulator import FaultRule, GraphSimulator
from tests.conftest import DEMO_TENANTS
from tests.integration.conftest import write_demo_config

SECURITY_READER = "5d6b6bb7-de71-4623-b4af-96380a352509"
KEY_BY_ID = {tenant_id: key for key, tenant_id in DEMO_TENANTS.items()}
# Tenants whose only gap the tool may fix (role missing, scoped, eligible only) vs. ones it must leave alone.
# wingtip holds the role through a group (seen as limited-information objects): nothing to write there.
FIXABLE = {"fabrikam", "northwind", "adatum", "litware", "lucerne", "humongous"}


async def run(
    config: AuditConfig, journal: Journal, keys: set[str] | None = None, **options: Any
) -> dict[str, TenantResult]:
    tenants = [t for t in config.tenants if keys is None or KEY_BY_ID[t.tenant_id] in keys]
    auditor = TenantAuditor(config)
    results = list(await asyncio.gather(*(auditor(t) for t in tenants)))
    plan = plan_remediation(results, tenants)
    outcomes = await apply_plan(plan, journal, **options)
    final = {}
    for entry in plan:
        remediation = outcomes.get(entry.tenant.tenant_id)
        final[KEY_BY_ID[entry.tenant.tenant_id]] = (
            apply_remediation(entry.result, remediation)
            if remediation
            else entry.result.with_remediation(planned_remediation(entry))
        )
    return final


def posts(sim: GraphSimulator, tenant_key: str | None = None) -> list[Any]:
    return [
        r
        for r in sim.requests()
        if r.route == "roleAssignments.create"
        and (tenant_key is None or r.tenant_id == DEMO_TENANTS[tenant_key])
    ]


def security_readers(sim: GraphSimulator, key: str, principal: str) -> int:
    state = sim.world.tenant(DEMO_TENANTS[key])
    assert state is not None
    return sum(
        1
        for a in state.role_assignments
        if a["principalId"] == principal
        and a["roleDefinitionId"] == SECURITY_READER
        and a["directoryScopeId"] == "/"
    )


async def test_one_post_per_fixable_tenant_then_none(fresh_sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(fresh_sim_env, tmp_path)
    journal = Journal(tmp_path / "remediation.jsonl")
    results = await run(config, journal)
    sent = posts(fresh_sim_env)
    assert {KEY_BY_ID[p.tenant_id] for p in sent} == FIXABLE
    assert len(sent) == len(FIXABLE), "exactly one POST per fixable tenant"
    for post in sent:
        key = KEY_BY_ID[post.tenant_id]
        vendor = results[key].service_principal
        assert vendor is not None
        assert post.body == {
            "principalId": vendor.record.id,
            "roleDefinitionId": SECURITY_READER,
            "directoryScopeId": "/",
        }
        assert security_readers(fresh_sim_env, key, vendor.record.id) == 1
    for key in FIXABLE:
        assert results[key].status is Status.REMEDIATED, key
        assert results[key].remediation.action is A.CREATED
    # a disabled SP that holds the role: nothing the tool may fix
    assert results["coho"].status is Status.NON_COMPLIANT and results["coho"].remediation.action is A.NONE
    # never a look-alike: Litware's POST went to the vendor's app, not the same-named one registered locally
    litware_post = posts(fresh_sim_env, "litware")[0]
    state = fresh_sim_env.world.tenant(DEMO_TENANTS["litware"])
    assert state is not None
    lookalike = next(
        sp
        for sp in state.service_principals
        if sp["appOwnerOrganizationId"] == state.tenant_id and sp["displayName"] == "USS AzureAD"
    )
    assert litware_post.body["principalId"] != lookalike["id"]
    # refused where the design says so, and nothing written there
    assert results["proseware"].remediation.action is A.REFUSED
    assert results["fourthcoffee"].remediation.action is A.REFUSED
    assert results["relecloud"].remediation.action is A.REFUSED
    assert results["contoso"].remediation.action is A.NONE
    assert results["alpine"].remediation.action is A.NONE  # only the Exchange consent is missing
    lines = [json.loads(line) for line in (tmp_path / "remediation.jsonl").read_text().splitlines()]
    creates = [line for line in lines if line["action"] == "create"]
    assert len(creates) == len(FIXABLE)
    assert all(
        line["request_id"] and line["outcome"] == "created" and line["scope"] == "/" for line in creates
    )
    assert {line["service_principal_id"] for line in creates} == {p.body["principalId"] for p in sent}

    fresh_sim_env.reset_observations()
    again = await run(config, journal)
    assert posts(fresh_sim_env) == [], "an immediate second run writes nothing"
    for key in FIXABLE:
        assert again[key].status is Status.COMPLIANT
        assert again[key].remediation.action is A.NONE


async def test_assignment_appearing_between_read_and_write_is_already_present(
    fresh_sim_env: GraphSimulator, tmp_path: Path
) -> None:
    config = write_demo_config(fresh_sim_env, tmp_path)
    tenant_id = DEMO_TENANTS["fabrikam"]
    state = fresh_sim_env.world.tenant(tenant_id)
    assert state is not None
    vendor = next(sp for sp in state.service_principals if sp["displayName"] == "USS AzureAD")

    original = Applier._existing
    calls = 0

    async def racing_admin(self: Applier, principal_id: str) -> str | None:
        nonlocal calls
        found = await original(self, principal_id)
        calls += 1
        if calls == 1:  # right after the auditor's re-read, an administrator assigns the role by hand
            fresh_sim_env.call(
                state.role_assignments.append,
                {
                    "id": "manual-1",
                    "principalId": vendor["id"],
                    "roleDefinitionId": SECURITY_READER,
                    "directoryScopeId": "/",
                    "appScopeId": None,
                    "condition": None,
                },
            )
        return found

    pytest.MonkeyPatch().setattr(Applier, "_existing", racing_admin)
    try:
        results = await run(config, Journal(tmp_path / "j.jsonl"), {"fabrikam"})
    finally:
        Applier._existing = original  # type: ignore[method-assign]
    assert results["fabrikam"].remediation.action is A.ALREADY_PRESENT
    assert results["fabrikam"].status is Status.REMEDIATED and results["fabrikam"].error is None
    assert [p.status for p in posts(fresh_sim_env, "fabrikam")] == [400]
    assert security_readers(fresh_sim_env, "fabrikam", vendor["id"]) == 1


async def test_503_after_the_server_created_it_leaves_exactly_one(
    fresh_sim_env: GraphSimulator, tmp_path: Path
) -> None:
    config = write_demo_config(fresh_sim_env, tmp_path)
    fresh_sim_env.add_fault_rule(
        FaultRule(route="roleAssignments.create", tenant_id=DEMO_TENANTS["northwind"], status=503, after=True)
    )
    results = await run(config, Journal(tmp_path / "j.jsonl"), {"northwind"})
    vendor = results["northwind"].service_principal
    assert vendor is not None
    assert [p.status for p in posts(fresh_sim_env, "northwind")] == [503], "re-read, not a blind second POST"
    assert security_readers(fresh_sim_env, "northwind", vendor.record.id) == 1
    assert results["northwind"].remediation.action is A.CREATED
    assert "503" in results["northwind"].remediation.detail


async def test_429_on_the_post_is_retried_after_retry_after(
    fresh_sim_env: GraphSimulator, tmp_path: Path
) -> None:
    config = write_demo_config(fresh_sim_env, tmp_path)
    fresh_sim_env.add_fault_rule(
        FaultRule(
            route="roleAssignments.create",
            tenant_id=DEMO_TENANTS["adatum"],
            status=429,
            code="TooManyRequests",
            message="Please retry again later.",
            retry_after=1,
        )
    )
    results = await run(config, Journal(tmp_path / "j.jsonl"), {"adatum"})
    sent = posts(fresh_sim_env, "adatum")
    assert [p.status for p in sent] == [429, 201]
    assert sent[1].time - sent[0].time >= 1.0
    vendor = results["adatum"].service_principal
    assert vendor is not None and security_readers(fresh_sim_env, "adatum", vendor.record.id) == 1
    assert results["adatum"].remediation.action is A.CREATED


async def test_403_fails_with_the_hint_and_leaves_others_alone(
    fresh_sim_env: GraphSimulator, tmp_path: Path
) -> None:
    config = write_demo_config(fresh_sim_env, tmp_path)
    state = fresh_sim_env.world.tenant(DEMO_TENANTS["lucerne"])
    assert state is not None
    consent = next(iter(state.consents.values()))
    fresh_sim_env.call(consent.discard, "RoleManagement.ReadWrite.Directory")
    results = await run(config, Journal(tmp_path / "j.jsonl"), {"lucerne", "fabrikam"})
    lucerne = results["lucerne"].remediation
    assert lucerne.action is A.FAILED
    assert "RoleManagement.ReadWrite.Directory" in lucerne.detail and "Lucerne Publishing" in lucerne.detail
    assert results["lucerne"].status is Status.NON_COMPLIANT
    assert (
        results["fabrikam"].remediation.action is A.CREATED
        and results["fabrikam"].status is Status.REMEDIATED
    )


async def test_remediate_false_and_max_changes(fresh_sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(fresh_sim_env, tmp_path, extra_tenant_keys={"fabrikam": {"remediate": False}})
    results = await run(
        config, Journal(tmp_path / "j.jsonl"), {"fabrikam", "northwind", "adatum"}, max_changes=1
    )
    assert results["fabrikam"].remediation.action is A.REFUSED
    assert "remediate = false" in results["fabrikam"].remediation.detail
    assert len(posts(fresh_sim_env)) == 1
    assert {results["northwind"].remediation.action, results["adatum"].remediation.action} == {
        A.CREATED,
        A.PLANNED,
    }


async def test_separate_write_credential_is_used_for_the_post(
    fresh_sim_env: GraphSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The read identity lacks the write permission; the write identity (a certificate) has it.
    path = tmp_path / "audit.toml"
    from tests.integration.conftest import demo_config_text

    text = demo_config_text(fresh_sim_env)
    cert = fresh_sim_env.credentials["USS_DEMO_AUDITOR_CERTIFICATE"]
    text = text.replace("[[tenants]]", f'[remediation_auth]\ncertificate_path = "{cert}"\n\n[[tenants]]', 1)
    path.write_text(text)
    from auditor.config import load_config

    config = load_config(path)
    assert config.tenants[0].remediation_auth.method.value == "certificate"
    started = time.time()
    results = await run(config, Journal(tmp_path / "j.jsonl"), {"fabrikam"})
    assert results["fabrikam"].remediation.action is A.CREATED
    tokens = [
        r
        for r in fresh_sim_env.requests()
        if r.route == "identity.token" and r.time >= started and r.tenant_id == DEMO_TENANTS["fabrikam"]
    ]
    assert len(tokens) == 2, "one sign-in to read, one with the write credential"
