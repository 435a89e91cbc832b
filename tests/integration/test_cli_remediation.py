"""`auditor audit --remediate` through the command line, against the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli.main import app
from auditor.simulator import GraphSimulator
from tests.conftest import DEMO_TENANTS
from tests.integration.conftest import write_demo_config

# wingtip holds the role through a group (seen as limited-information objects): nothing to write there.
FIXABLE = {"fabrikam", "northwind", "adatum", "litware", "lucerne", "humongous"}
KEY_BY_ID = {tenant_id: key for key, tenant_id in DEMO_TENANTS.items()}


def invoke(config: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["audit", "--config", str(config), "--out", str(out), "--format", "json", *extra]
    )
    return result.exit_code, result.output


def post_count(sim: GraphSimulator) -> int:
    return sim.count(route="roleAssignments.create")


def test_without_a_terminal_and_without_yes_nothing_is_written(
    fresh_sim_env: GraphSimulator, tmp_path: Path
) -> None:
    write_demo_config(fresh_sim_env, tmp_path)
    code, output = invoke(tmp_path / "audit.toml", tmp_path / "out", "--remediate")
    assert code == 2
    assert "--yes" in output and "nothing was audited or written" in output
    assert "Traceback" not in output
    assert post_count(fresh_sim_env) == 0 and fresh_sim_env.count(route="users.list") == 0
    assert not (tmp_path / "out" / "audit.json").exists()


def test_dry_run_records_the_plan_and_writes_nothing(fresh_sim_env: GraphSimulator, tmp_path: Path) -> None:
    write_demo_config(fresh_sim_env, tmp_path)
    out = tmp_path / "out"
    code, output = invoke(tmp_path / "audit.toml", out, "--remediate", "--dry-run")
    assert code == 3  # the demo fleet has tenants that cannot be audited
    assert post_count(fresh_sim_env) == 0
    run = json.loads((out / "audit.json").read_text())
    assert run["run"]["mode"] == "dry_run"
    planned = {KEY_BY_ID[t["tenant_id"]] for t in run["tenants"] if t["remediation"]["action"] == "planned"}
    assert planned == FIXABLE
    assert "Remediation plan:" in output and "dry run: nothing written" in output
    journal = [json.loads(line) for line in (out / "remediation.jsonl").read_text().splitlines()]
    assert {KEY_BY_ID[line["tenant_id"]] for line in journal} == FIXABLE
    assert all(line["action"] == "plan" for line in journal)


def test_remediate_yes_fixes_and_reports(fresh_sim_env: GraphSimulator, tmp_path: Path) -> None:
    write_demo_config(fresh_sim_env, tmp_path)
    out = tmp_path / "out"
    code, output = invoke(tmp_path / "audit.toml", out, "--remediate", "--yes")
    assert code == 3
    assert post_count(fresh_sim_env) == len(FIXABLE)
    run = json.loads((out / "audit.json").read_text())
    assert run["run"]["mode"] == "remediate"
    statuses = {KEY_BY_ID[t["tenant_id"]]: t["status"] for t in run["tenants"]}
    assert {k for k, s in statuses.items() if s == "remediated"} == FIXABLE
    assert f"Remediation: {len(FIXABLE)} created" in output and "full sync" in output
    creates = [
        json.loads(line)
        for line in (out / "remediation.jsonl").read_text().splitlines()
        if json.loads(line)["action"] == "create"
    ]
    assert len(creates) == len(FIXABLE)
    # and an immediate second run writes nothing: the fixed tenants are now compliant, the demo's
    # unauditable tenants still make it exit 3
    code, _ = invoke(tmp_path / "audit.toml", tmp_path / "out2", "--remediate", "--yes")
    assert code == 3
    assert post_count(fresh_sim_env) == len(FIXABLE)
    second = json.loads((tmp_path / "out2" / "audit.json").read_text())
    fixed = [t for t in second["tenants"] if KEY_BY_ID[t["tenant_id"]] in FIXABLE]
    assert {t["status"] for t in fixed} == {"compliant"}
    assert {t["remediation"]["action"] for t in fixed} == {"none"}


@pytest.mark.parametrize("flag", [["--dry-run"], ["--yes"], ["--max-changes", "2"]])
def test_remediation_flags_need_remediate(tmp_path: Path, flag: list[str]) -> None:
    (tmp_path / "c.toml").write_text("")
    code, output = invoke(tmp_path / "c.toml", tmp_path / "out", *flag)
    assert code == 2 and "only makes sense with --remediate" in output


@pytest.mark.parametrize("answer", [False, True])
def test_at_a_terminal_the_plan_is_confirmed_first(
    fresh_sim_env: GraphSimulator, tmp_path: Path, answer: bool
) -> None:
    import io

    from auditor.app import AuditOptions, audit

    write_demo_config(fresh_sim_env, tmp_path)
    questions: list[str] = []

    def confirm(question: str) -> bool:
        questions.append(question)
        assert post_count(fresh_sim_env) == 0, "nothing is written before the answer"
        return answer

    stdout = io.StringIO()
    options = AuditOptions(
        config=tmp_path / "audit.toml",
        out_dir=tmp_path / "out",
        formats=("json",),
        remediate=True,
        interactive=True,
    )
    outcome = audit(options, stdout=stdout, confirm=confirm)
    assert questions == [f"Apply {len(FIXABLE)} change(s)? [y/N] "]
    assert "Remediation plan:" in stdout.getvalue()
    assert post_count(fresh_sim_env) == (len(FIXABLE) if answer else 0)
    actions = {t.remediation.action.value for t in outcome.run.tenants if KEY_BY_ID[t.tenant_id] in FIXABLE}
    assert actions == ({"created"} if answer else {"planned"})
