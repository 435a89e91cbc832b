"""The doctor's own simulator fleet (tests/doctor/doctor-fleet.toml) and an auditor config for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.simulator import GraphSimulator, load_fixture
from auditor.simulator.fixtures import DEFAULT_VENDOR

FLEET = Path(__file__).with_name("doctor-fleet.toml")
UNSET_ENV = "USS_DOCTOR_NOT_SET_ANYWHERE"


@pytest.fixture(scope="session")
def doctor_sim() -> Iterator[GraphSimulator]:
    with GraphSimulator(load_fixture(FLEET), seed=3) as sim:
        yield sim


def client_id(sim: GraphSimulator, prefix: str) -> str:
    return next(a.client_id for a in sim.world.apps.values() if a.env_prefix == prefix)


def doctor_config(sim: GraphSimulator, directory: Path) -> Path:
    """TOML for the doctor fleet: certificates by path, secrets by environment variable only."""
    creds = sim.credentials
    text = f"""
[vendor]
publisher_tenant_id = "{DEFAULT_VENDOR["publisher_tenant_id"]}"

[run]
concurrency = 4
tenant_timeout_seconds = 60

[auth]
client_id = "{client_id(sim, "USS_DOCTOR_LONG")}"
certificate_path = "{creds["USS_DOCTOR_LONG_CERTIFICATE"]}"
authority = "{sim.authority}"
graph_endpoint = "{sim.graph_url}"
ca_bundle = "{sim.ca_file}"
allow_custom_endpoints = true

[[tenants]]
name = "Expiring Certificate Ltd"
tenant_id = "d0c70000-0000-4000-8000-000000000001"
client_id = "{client_id(sim, "USS_DOCTOR_SHORT")}"
certificate_path = "{creds["USS_DOCTOR_SHORT_CERTIFICATE"]}"
[tenants.remediation_auth]
client_id = "{client_id(sim, "USS_DOCTOR_WRITER")}"
client_secret_env = "USS_DOCTOR_WRITER_SECRET"

[[tenants]]
name = "Healthy Inc"
tenant_id = "d0c70000-0000-4000-8000-000000000002"

[[tenants]]
name = "Rotated Secret GmbH"
tenant_id = "d0c70000-0000-4000-8000-000000000003"
client_id = "{client_id(sim, "USS_DOCTOR_ROTATED")}"
client_secret_env = "USS_DOCTOR_ROTATED_PREVIOUS_SECRET"

[[tenants]]
name = "Broad Permissions BV"
tenant_id = "d0c70000-0000-4000-8000-000000000004"
remediate = false

[[tenants]]
name = "Writer Without Rights SA"
tenant_id = "d0c70000-0000-4000-8000-000000000005"
[tenants.remediation_auth]
client_id = "{client_id(sim, "USS_DOCTOR_WRITER")}"
client_secret_env = "USS_DOCTOR_WRITER_SECRET"

[[tenants]]
name = "Unset Variable Co"
tenant_id = "d0c70000-0000-4000-8000-000000000006"
client_secret_env = "{UNSET_ENV}"
"""
    path = directory / "doctor.toml"
    path.write_text(text)
    return path
