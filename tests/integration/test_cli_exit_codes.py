"""Exit codes 0, 1 and 3 of `auditor audit` through the real CLI and engine against the simulator.

A scheduler acts on these (DESIGN §3.1): 0 every tenant compliant, remediated or not connected; 1 a tenant
has a gap (or is ambiguous); 3 a tenant could not be audited, which wins over 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli.main import app
from auditor.simulator import GraphSimulator
from tests.integration.conftest import write_demo_config


@pytest.mark.parametrize(
    ("tenants", "code", "statuses"),
    [
        (["Contoso Healthcare"], 0, {"compliant"}),
        (["Contoso Healthcare", "Margie's Travel"], 0, {"compliant", "not_connected"}),
        (["Contoso Healthcare", "Fabrikam Retail"], 1, {"compliant", "non_compliant"}),
        (["Proseware"], 1, {"ambiguous"}),
        (["Fabrikam Retail", "Fourth Coffee"], 3, {"non_compliant", "error"}),
    ],
)
def test_exit_code_says_what_the_run_found(
    sim_env: GraphSimulator, tmp_path: Path, tenants: list[str], code: int, statuses: set[str]
) -> None:
    write_demo_config(sim_env, tmp_path)
    out = tmp_path / "out"
    selection = [arg for name in tenants for arg in ("--tenant", name)]
    result = CliRunner().invoke(
        app,
        [
            "audit",
            "--config",
            str(tmp_path / "audit.toml"),
            "--out",
            str(out),
            "--format",
            "json",
            *selection,
        ],
    )
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert f"Exit code {code}:" in result.output
    run = json.loads((out / "audit.json").read_text())
    assert sorted(t["name"] for t in run["tenants"]) == sorted(tenants)
    assert {t["status"] for t in run["tenants"]} == statuses
