"""A local Microsoft Graph + Entra identity simulator, served over HTTPS for the real SDKs."""

from .faults import FaultProfile, FaultRule
from .fixtures import FixtureError, load_fixture, world_from_dict
from .server import GraphSimulator, running
from .world import World

__all__ = [
    "FaultProfile",
    "FaultRule",
    "FixtureError",
    "GraphSimulator",
    "World",
    "load_fixture",
    "running",
    "world_from_dict",
]
