"""Synthetic fleets: N tenants x U users with a chosen mix of the situations in DESIGN §3.4.

Each tenant is built from the same fixture dictionaries a hand-written fixture uses, and its users are
computed on demand (`SyntheticUsers`), so a 1,000 x 2,000 fleet is built in well under a second and
holds no per-user objects until a request pages through them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .fixtures import DEFAULT_VENDOR, world_from_dict
from .world import World

# Situation name -> the fixture fragment that creates it (on top of a vendor SP and audit consent).
SITUATIONS: dict[str, dict[str, Any]] = {
    "compliant": {
        "roles": [{"principal": "uss"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
    },
    "role_missing": {"app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}]},
    "role_scoped": {
        "roles": [{"principal": "uss", "scope": "au:Head Office"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
    },
    "eligible_only": {
        "eligible": [{"principal": "uss"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
    },
    "expiring": {
        "roles": [{"principal": "uss", "expires_in_days": 9}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
    },
    "via_group": {
        "groups": [{"key": "uss-readers", "display_name": "USS Security Readers", "members": ["uss"]}],
        "roles": [{"principal": "group:uss-readers"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
    },
    "lookalike": {
        "roles": [{"principal": "uss"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
        "service_principals": [{"key": "lookalike", "owner": "tenant"}],
    },
    "ambiguous": {"service_principals": [{"key": "second", "owner": "b5f1c7d2-3e4a-4f6b-8c9d-0e1f2a3b4c5d"}]},
    "not_connected": {"vendor": False},
    "exchange_missing": {"roles": [{"principal": "uss"}]},
    "sp_disabled": {
        "vendor": {"enabled": False},
        "roles": [{"principal": "uss"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
    },
    "permission_missing": {
        "consent": {
            "auditor": [
                "Application.Read.All",
                "User.Read.All",
                "MailboxSettings.Read",
                "Organization.Read.All",
            ]
        }
    },
    "no_p2": {
        "p2": False,
        "roles": [{"principal": "uss"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
    },
    "not_consented": {"consent": {}},
    # A hybrid tenant: a share of the mailbox users are synced and hosted in on-premises Exchange
    # (fleet_fixture sets users.on_premises; see world.ON_PREMISES_ANSWERS for how Graph answers).
    "hybrid": {
        "roles": [{"principal": "uss"}],
        "app_roles": [{"principal": "uss", "role": "Exchange.ManageAsApp"}],
    },
}
HYBRID_ON_PREMISES_SHARE = 0.3  # of all users, in a "hybrid" tenant

DEFAULT_MIX = {
    "compliant": 0.6,
    "role_missing": 0.2,
    "exchange_missing": 0.05,
    "role_scoped": 0.025,
    "eligible_only": 0.025,
    "expiring": 0.025,
    "via_group": 0.025,
    "no_p2": 0.025,
    "not_connected": 0.025,
}


@dataclass(frozen=True)
class FleetSpec:
    tenants: int
    users: int
    mailbox_share: float = 0.9  # users that have a mailbox (the rest get 404 MailboxNotEnabledForRESTAPI)
    shared_share: float = 0.05  # of all users, shared mailboxes
    room_share: float = 0.005
    equipment_share: float = 0.002
    seed: int = 1


def situation_plan(count: int, mix: Mapping[str, float], seed: int) -> list[str]:
    """Exactly `count` situations in the given proportions (largest remainders), shuffled reproducibly."""
    unknown = set(mix) - set(SITUATIONS)
    if unknown:
        raise ValueError(
            f"unknown situation(s): {', '.join(sorted(unknown))}; known: {', '.join(SITUATIONS)}"
        )
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("the situation mix must have a positive weight")
    exact = {name: count * weight / total for name, weight in mix.items()}
    counts = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)[
        : count - sum(counts.values())
    ]:
        counts[name] += 1
    plan = [name for name, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(plan)
    return plan


def fleet_fixture(spec: FleetSpec, mix: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The fixture dictionary for a synthetic fleet (what `generate_fleet` loads)."""
    plan = situation_plan(spec.tenants, mix or DEFAULT_MIX, spec.seed)
    shared = round(spec.users * spec.shared_share)
    room = round(spec.users * spec.room_share)
    equipment = round(spec.users * spec.equipment_share)
    no_mailbox = max(
        0, min(spec.users - shared - room - equipment, round(spec.users * (1 - spec.mailbox_share)))
    )
    tenants = []
    for index, situation in enumerate(plan):
        tenant: dict[str, Any] = {
            "key": f"t{index:05d}",
            # The index sits in the high bits: each tenant's user ids get their own 64-bit prefix.
            "tenant_id": str(uuid.UUID(int=((0x5E7A0000 + index) << 96) | (spec.seed << 64) | 0xC0FFEE)),
            "name": f"Tenant {index:05d} ({situation.replace('_', ' ')})",
            "domain": f"t{index:05d}.example",
            "consent": {"auditor": "audit"},
            "users": {
                "count": spec.users,
                "shared": shared,
                "room": room,
                "equipment": equipment,
                "no_mailbox": no_mailbox,
            },
        }
        tenant.update({k: v for k, v in SITUATIONS[situation].items()})
        if situation == "hybrid":
            spare = spec.users - shared - room - equipment - no_mailbox
            tenant["users"]["on_premises"] = max(0, min(spare, round(spec.users * HYBRID_ON_PREMISES_SHARE)))
        tenants.append(tenant)
    return {
        "vendor": dict(DEFAULT_VENDOR),
        "apps": [{"key": "auditor", "name": "MSP Auditor", "credentials": ["secret"]}],
        "tenants": tenants,
    }


def generate_fleet(spec: FleetSpec, mix: Mapping[str, float] | None = None) -> World:
    """A synthetic fleet as a World, ready to serve."""
    return world_from_dict(fleet_fixture(spec, mix))
