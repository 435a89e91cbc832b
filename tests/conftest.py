"""Shared fixtures: the Graph simulator serving the demo fleet, and real SDK clients for its tenants."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from auditor.graph.client import ConnectionSettings, GraphSession, open_session
from auditor.simulator import GraphSimulator, load_fixture

# The local SMTP server and webhook receiver fixtures, for the notification tests in every directory.
pytest_plugins = ["tests.receivers"]

ROOT = Path(__file__).resolve().parent.parent
DEMO_FLEET = ROOT / "config" / "demo-fleet.toml"
_DEMO = tomllib.loads(DEMO_FLEET.read_text())
DEMO_TENANTS: dict[str, str] = {t["key"]: t["tenant_id"] for t in _DEMO["tenants"]}
APP_PREFIX = {a["key"]: a["env_prefix"] for a in _DEMO["apps"]}


@pytest.fixture(scope="session")
def demo_sim() -> Iterator[GraphSimulator]:
    """One simulator for the session (starting one costs ~0.3 s of key generation)."""
    with GraphSimulator(load_fixture(DEMO_FLEET), seed=7) as sim:
        yield sim


@pytest.fixture
def sim(demo_sim: GraphSimulator) -> Iterator[GraphSimulator]:
    """The session simulator with a clean request log and no test's faults left behind."""
    default_faults = demo_sim.world.default_faults
    tenant_faults = {tenant_id: tenant.faults for tenant_id, tenant in demo_sim.world.tenants.items()}
    demo_sim.clear_fault_rules()
    demo_sim.reset_observations()
    yield demo_sim
    demo_sim.clear_fault_rules()
    demo_sim.set_faults(default_faults)
    for tenant_id, faults in tenant_faults.items():
        demo_sim.set_faults(faults, tenant_id)


@pytest.fixture
def fresh_sim() -> Iterator[GraphSimulator]:
    """A simulator of its own, for tests that change the directory (writes)."""
    with GraphSimulator(load_fixture(DEMO_FLEET), seed=11) as sim:
        yield sim


def put_credentials_in_environment(sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch) -> GraphSimulator:
    """The simulator's credentials in the environment, as a scheduler would provide them."""
    for name, value in sim.credentials.items():
        monkeypatch.setenv(name, value)
    return sim


@pytest.fixture
def sim_env(sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch) -> GraphSimulator:
    """The session simulator, its credentials in the environment."""
    return put_credentials_in_environment(sim, monkeypatch)


@pytest.fixture
def fresh_sim_env(fresh_sim: GraphSimulator, monkeypatch: pytest.MonkeyPatch) -> GraphSimulator:
    """A simulator of its own (for writes), its credentials in the environment."""
    return put_credentials_in_environment(fresh_sim, monkeypatch)


def settings_for(
    sim: GraphSimulator, tenant: str, *, method: str = "secret", app: str = "auditor", **overrides: Any
) -> ConnectionSettings:
    """Connection settings for a demo tenant (by key) as the given demo app."""
    prefix = APP_PREFIX[app]
    client_id = next(a.client_id for a in sim.world.apps.values() if a.env_prefix == prefix)
    values: dict[str, Any] = {
        "tenant_id": DEMO_TENANTS.get(tenant, tenant),
        "client_id": client_id,
        "method": method,
        "authority": sim.authority,
        "graph_endpoint": sim.graph_url,
        "scope": sim.scope,
        "ca_bundle": sim.ca_file,
        "timeout_seconds": 20.0,
    }
    if method == "secret":
        values["client_secret"] = sim.credentials[f"{prefix}_SECRET"]
    elif method == "certificate":
        values["certificate_path"] = Path(sim.credentials[f"{prefix}_CERTIFICATE"])
    values.update(overrides)
    return ConnectionSettings(**values)


@asynccontextmanager
async def graph_session(sim: GraphSimulator, tenant: str, **kwargs: Any) -> AsyncIterator[GraphSession]:
    async with open_session(settings_for(sim, tenant, **kwargs)) as session:
        yield session
