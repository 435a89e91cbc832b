"""Fixture files and the synthetic fleet generator (pure, no server)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from auditor.simulator import FixtureError, load_fixture, world_from_dict
from auditor.simulator.fleet import SITUATIONS, FleetSpec, fleet_fixture, generate_fleet, situation_plan
from auditor.simulator.world import SECURITY_READER, SyntheticUsers, UserDirectory
from tests.conftest import DEMO_FLEET


def test_demo_fleet_covers_the_situations_the_design_lists() -> None:
    world = load_fixture(DEMO_FLEET)
    assert len(world.tenants) >= 8
    by_name = {t.display_name: t for t in world.tenants.values()}
    assert len(by_name["Lucerne Publishing"].users) > 999
    assert not by_name["Lucerne Publishing"].p2
    assert any(
        a["directoryScopeId"].startswith("/administrativeUnits/")
        for a in by_name["Northwind Traders"].role_assignments
    )
    assert by_name["Adatum Corporation"].eligibilities and not by_name["Adatum Corporation"].role_assignments
    assert by_name["Tailspin Toys"].role_assignments[0]["_end"] is not None
    assert by_name["Woodgrove Bank"].groups[0]["isAssignableToRole"]
    lookalikes = [
        sp
        for sp in by_name["Litware Inc."].service_principals
        if sp["displayName"] == "USS AzureAD"
        and sp["appOwnerOrganizationId"] == by_name["Litware Inc."].tenant_id
    ]
    assert len(lookalikes) == 1
    assert sum(sp["displayName"] == "USS AzureAD" for sp in by_name["Proseware"].service_principals) == 2
    assert not any(sp["displayName"] == "USS AzureAD" for sp in by_name["Margie's Travel"].service_principals)
    assert not by_name["Alpine Ski House"].app_role_assignments
    assert any(
        sp["displayName"] == "USS AzureAD" and not sp["accountEnabled"]
        for sp in by_name["Coho Winery"].service_principals
    )
    consent = next(iter(by_name["Fourth Coffee"].consents.values()))
    assert "RoleManagement.Read.Directory" not in consent
    # issue 10: a group-held role seen without a group read permission, and a hybrid tenant
    wingtip = by_name["Wingtip Toys"]
    assert wingtip.groups and not any(
        "GroupMember.Read.All" in c or "Directory.Read.All" in c for c in wingtip.consents.values()
    )
    assert any(a["principalId"] == wingtip.groups[0]["id"] for a in wingtip.role_assignments)
    hybrid = [u for u in by_name["Humongous Insurance"].users if u.mailbox_on_premises]
    assert len(hybrid) == 31 and all(u.synced and u.mail for u in hybrid)
    assert {u.mailbox_on_premises for u in hybrid} == {"not_enabled", "not_hosted", "preview"}


def test_a_hybrid_fleet_tenant_has_on_premises_mailboxes() -> None:
    world = generate_fleet(FleetSpec(tenants=2, users=100), {"hybrid": 1.0, "compliant": 1.0})
    hybrid = next(t for t in world.tenants.values() if "hybrid" in t.display_name)
    plain = next(t for t in world.tenants.values() if "hybrid" not in t.display_name)
    assert sum(1 for u in hybrid.users if u.mailbox_on_premises) == 30
    assert all(u.synced for u in hybrid.users if u.mailbox_on_premises)
    assert not any(u.mailbox_on_premises or u.synced for u in plain.users)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tenants": [{"key": "a", "colour": "red"}]}, "tenants[0]: unknown key(s) colour"),
        ({"tenants": [{"key": "a", "tenant_id": "nope"}]}, "tenants[0].tenant_id: 'nope' is not a GUID"),
        (
            {"tenants": [{"key": "a", "roles": [{"principal": "uss", "role": "Janitor"}]}]},
            "unknown role 'Janitor'",
        ),
        ({"tenants": [{"key": "a", "roles": [{"principal": "ghost"}]}]}, "unknown principal 'ghost'"),
        ({"tenants": [{"key": "a", "consent": {"nobody": "audit"}}]}, "consent.nobody: no app with that key"),
        (
            {"tenants": [{"key": "a", "users": {"list": [{"key": "u", "mailbox_on_premises": "mars"}]}}]},
            "users.list[0].mailbox_on_premises: 'mars' is not one of not_enabled, not_hosted, preview",
        ),
        (
            {"tenants": [{"key": "a", "users": {"count": 2, "shared": 3}}]},
            "more special mailboxes than users",
        ),
        ({"apps": [{"key": "x", "credentials": ["password"]}]}, "unknown kind 'password'"),
        (
            {
                "tenants": [
                    {"key": "a", "tenant_id": "3c8f1e52-7a41-4d0b-9c6e-1f2a3b4c5d01"},
                    {"key": "b", "tenant_id": "3c8f1e52-7a41-4d0b-9c6e-1f2a3b4c5d01"},
                ]
            },
            "is used twice",
        ),
    ],
)
def test_fixture_mistakes_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(FixtureError, match=re.escape(message)):
        world_from_dict(data)


def test_fixture_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[tenants]\n")
    with pytest.raises(FixtureError, match=str(bad)):
        load_fixture(bad)
    with pytest.raises(FixtureError, match="not found"):
        load_fixture(tmp_path / "missing.toml")


@pytest.mark.parametrize("count", [1, 7, 999, 1000, 2150, 7919 * 2])
def test_synthetic_users_have_exact_counts_and_unique_ids(count: int) -> None:
    shared, room, equipment, no_mailbox = count // 10, count // 50, count // 100, count // 20
    users = SyntheticUsers(
        namespace=0xABC,
        domain="x.example",
        count=count,
        shared=shared,
        room=room,
        equipment=equipment,
        no_mailbox=no_mailbox,
        shared_signin_enabled=min(1, shared),
    )
    records = [users.user(i) for i in range(count)]
    purposes = Counter(r.purpose for r in records)
    assert purposes["shared"] == shared and purposes["room"] == room and purposes["equipment"] == equipment
    assert purposes[None] == no_mailbox
    assert len({r.id for r in records}) == count and len({r.user_principal_name for r in records}) == count
    assert sum(r.account_enabled for r in records if r.purpose == "shared") == min(1, shared)
    directory = UserDirectory(synthetic=users)
    probe = records[count // 2]
    assert directory.find(probe.id) == probe
    assert directory.find(probe.user_principal_name.upper()) == probe
    assert directory.find("00000000-0000-0000-0000-000000000000") is None


def test_shared_mailboxes_are_spread_over_pages() -> None:
    users = SyntheticUsers(namespace=1, domain="x.example", count=2000, shared=100)
    first_page = sum(users.user(i).purpose == "shared" for i in range(999))
    assert 20 < first_page < 80


def test_situation_plan_is_exact_and_reproducible() -> None:
    plan = situation_plan(1000, {"compliant": 0.6, "role_missing": 0.3, "not_connected": 0.1}, seed=3)
    assert Counter(plan) == {"compliant": 600, "role_missing": 300, "not_connected": 100}
    assert plan == situation_plan(1000, {"compliant": 0.6, "role_missing": 0.3, "not_connected": 0.1}, seed=3)
    with pytest.raises(ValueError, match="unknown situation"):
        situation_plan(10, {"haunted": 1.0}, seed=0)


def test_every_situation_builds_a_tenant() -> None:
    spec = FleetSpec(tenants=len(SITUATIONS), users=50)
    world = generate_fleet(spec, {name: 1.0 for name in SITUATIONS})
    assert len(world.tenants) == len(SITUATIONS)
    names = " ".join(t.display_name for t in world.tenants.values())
    for situation in SITUATIONS:
        assert situation.replace("_", " ") in names
    compliant = next(t for t in world.tenants.values() if "(compliant)" in t.display_name)
    assert compliant.role_assignments[0]["roleDefinitionId"] == SECURITY_READER
    assert len({u.id for t in world.tenants.values() for u in t.users}) == 50 * len(SITUATIONS)


def test_large_fleet_is_lazy() -> None:
    fixture = fleet_fixture(FleetSpec(tenants=1000, users=2000))
    assert len(fixture["tenants"]) == 1000
    world = world_from_dict(fixture)
    tenant = next(iter(world.tenants.values()))
    assert len(tenant.users) == 2000 and tenant.users.explicit == []
