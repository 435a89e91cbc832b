"""An auditor config pointed at the simulator's demo fleet, and the environment its secrets live in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditor.config import AuditConfig, load_config
from auditor.simulator import GraphSimulator
from tests.conftest import _DEMO


def demo_config_text(
    sim: GraphSimulator,
    *,
    vendor: dict[str, str] | None = None,
    price: float = 2.5,
    extra_tenant_keys: dict[str, dict[str, Any]] | None = None,
) -> str:
    """TOML for `auditor audit` against the demo fleet (secrets by environment variable only)."""
    auditor_app = next(a for a in sim.world.apps.values() if a.env_prefix == "USS_DEMO_AUDITOR")
    relecloud_app = next(a for a in sim.world.apps.values() if a.env_prefix == "USS_DEMO_RELECLOUD")
    host_identity = next(a for a in sim.world.apps.values() if a.env_prefix == "USS_DEMO_HOST_IDENTITY")
    vendor = vendor if vendor is not None else {"publisher_tenant_id": _DEMO["vendor"]["publisher_tenant_id"]}
    lines = [
        "[vendor]",
        *(f'{k} = "{v}"' for k, v in vendor.items()),
        "",
        "[billing]",
        f"price_per_mailbox = {price}",
        'currency = "GBP"',
        "",
        "[run]",
        "concurrency = 6",
        "tenant_timeout_seconds = 120",
        "",
        "[auth]",
        f'client_id = "{auditor_app.client_id}"',
        'method = "secret"',
        'client_secret_env = "USS_DEMO_AUDITOR_SECRET"',
        f'authority = "{sim.authority}"',
        f'graph_endpoint = "{sim.graph_url}"',
        f'ca_bundle = "{sim.ca_file}"',
        "allow_custom_endpoints = true",
        "",
    ]
    for tenant in _DEMO["tenants"]:
        lines += [
            "[[tenants]]",
            f'name = "{tenant["name"]}"',
            f'tenant_id = "{tenant["tenant_id"]}"',
            f'tags = ["demo", "{tenant["key"]}"]',
        ]
        if tenant["key"] == "relecloud":
            lines += [
                f'client_id = "{relecloud_app.client_id}"',
                'client_secret_env = "USS_DEMO_RELECLOUD_PREVIOUS_SECRET"',
            ]
        if tenant["key"] == "bellows":
            # As in the demo: the host's managed identity, whose home is Contoso's tenant (WRONG_TENANT).
            lines += ['method = "managed_identity"', f'client_id = "{host_identity.client_id}"']
        for key, value in (extra_tenant_keys or {}).get(tenant["key"], {}).items():
            lines.append(
                f"{key} = {value!r}".replace("'", '"')
                if not isinstance(value, bool)
                else f"{key} = {str(value).lower()}"
            )
        lines.append("")
    return "\n".join(lines)


def write_demo_config(sim: GraphSimulator, directory: Path, **kwargs: Any) -> AuditConfig:
    path = directory / "audit.toml"
    path.write_text(demo_config_text(sim, **kwargs))
    return load_config(path)
