"""Acceptance, against the Graph simulator: two audits with one tenant changed in between. The second run's
insights list exactly that change; gap ages and accrued cost follow from the recorded times; the trend
shows both runs; and no secret from the environment ends up in any row (or byte) of the database.

The app glue (auditor.app.audit) is replaced here by the same three calls it makes, so this test does not
depend on it: open_history -> run_fleet -> record.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from auditor.collect import TenantAuditor
from auditor.config import AuditConfig
from auditor.constants import SECURITY_READER_ROLE_ID
from auditor.history import Change, RunInsights, open_history
from auditor.history.insights import DAYS_PER_MONTH
from auditor.model import RunMode, RunResult, Status, money
from auditor.runner import run_fleet
from auditor.simulator import GraphSimulator
from auditor.simulator.world import UserRecord
from tests.conftest import DEMO_TENANTS
from tests.integration.conftest import write_demo_config

CONTOSO = DEMO_TENANTS["contoso"]
NEW_MAILBOX_ID = "0f0f0f0f-1111-4222-8333-444455556666"


async def audit_and_record(config: AuditConfig, *, days_ago: float = 0) -> tuple[RunResult, RunInsights]:
    with open_history(config) as history:
        run = await run_fleet(
            list(config.tenants),
            TenantAuditor(config),
            concurrency=6,
            tenant_timeout=120,
            mode=RunMode.AUDIT,
            currency=config.billing.currency,
        )
        # Pretend the first run happened days ago, so that ages and costs are large enough to check.
        run = replace(
            run,
            started_at=run.started_at - timedelta(days=days_ago),
            finished_at=run.finished_at - timedelta(days=days_ago),
        )
        insights = history.record(run)
    assert isinstance(insights, RunInsights), insights
    return run, insights


def break_contoso(sim: GraphSimulator) -> None:
    """Contoso loses its Security Reader assignment and gains a shared mailbox."""
    tenant = sim.world.tenant(CONTOSO)
    assert tenant is not None
    uss = next(sp for sp in tenant.service_principals if sp["displayName"] == "USS AzureAD")
    tenant.role_assignments[:] = [
        a
        for a in tenant.role_assignments
        if not (a["principalId"] == uss["id"] and a["roleDefinitionId"] == SECURITY_READER_ROLE_ID)
    ]
    tenant.users.add(
        UserRecord(
            id=NEW_MAILBOX_ID,
            display_name="Escrow Desk",
            user_principal_name="escrow@contoso-health.example",
            mail="escrow@contoso-health.example",
            account_enabled=False,
            licensed=False,
            purpose="shared",
        )
    )


@pytest.mark.slow  # about 4 s: two audits of the demo fleet's simulated tenants with the real SDKs
async def test_two_runs_with_one_tenant_changed(fresh_sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(fresh_sim_env, tmp_path)
    first, _ = await audit_and_record(config, days_ago=3)
    break_contoso(fresh_sim_env)
    second, insights = await audit_and_record(config)

    # Exactly that change.
    changes = {
        t.name: t.change
        for t in insights.tenants
        if t.change in (Change.NEW_GAP, Change.FIXED, Change.CHANGED)
    }
    assert changes == {"Contoso Healthcare": Change.NEW_GAP}
    assert [
        (t.name, [m.display_name for m in t.new_shared_mailboxes]) for t in insights.new_shared_mailboxes
    ] == [("Contoso Healthcare", ["Escrow Desk"])]
    before = {t.tenant_id: t.status for t in first.tenants}
    for tenant in insights.tenants:
        if tenant.tenant_id != CONTOSO:
            expected = Change.UNKNOWN if tenant.status is Status.ERROR else Change.UNCHANGED
            assert (tenant.change, tenant.previous_status or before[tenant.tenant_id]) == (
                expected,
                before[tenant.tenant_id],
            )
    assert {t.name for t in insights.unknown} == {
        "Fourth Coffee",
        "Relecloud",
        "Bellows College",
    }  # errors both nights: unknown

    # Gap ages and accrued cost follow from the recorded times.
    elapsed = second.started_at - first.started_at
    costs = {t.tenant_id: t.billing.monthly_cost for t in first.tenants}
    for tenant in insights.open_gaps:
        gap = tenant.open_gap
        assert gap is not None
        if tenant.tenant_id == CONTOSO:
            assert (gap.first_seen, gap.runs, gap.accrued_cost) == (second.started_at, 1, 0.0)
            continue
        assert (gap.first_seen, gap.runs, gap.until) == (first.started_at, 2, second.started_at)
        cost = costs[tenant.tenant_id]
        if cost is None:  # ambiguous: the cost is unknown
            assert gap.accrued_cost is None and tenant.status is Status.AMBIGUOUS
        else:
            expected_cost = money(cost * elapsed.total_seconds() / float(DAYS_PER_MONTH * 86400))
            assert gap.accrued_cost == pytest.approx(expected_cost, abs=0.011)
    fabrikam = insights.for_tenant(DEMO_TENANTS["fabrikam"])
    assert fabrikam is not None and fabrikam.open_gap is not None
    assert fabrikam.open_gap.accrued_cost == pytest.approx(
        62.5 * 3 / 30.4375, abs=0.011
    )  # 25 billed x 2.50 for 3 days

    # The trend shows both runs.
    assert [p.run_id for p in insights.trend] == [first.run_id, second.run_id]
    for point, run in zip(insights.trend, (first, second), strict=True):
        summary = run.summary()
        assert dict(point.by_status) == dict(summary.by_status)
        assert point.estimated_monthly_cost == summary.estimated_monthly_cost
    assert (
        insights.trend[1].by_status[Status.NON_COMPLIANT]
        == insights.trend[0].by_status[Status.NON_COMPLIANT] + 1
    )

    # No secret in any row, nor anywhere in the files.
    secrets = secret_strings(fresh_sim_env)
    database = tmp_path / "history.sqlite"
    assert rows_containing(database, secrets) == []
    assert files_containing(tmp_path, secrets) == []


def secret_strings(sim: GraphSimulator) -> list[str]:
    """Every secret the simulator handed out, and lines of the private key the certificate file holds."""
    values = [v for k, v in sim.credentials.items() if k.endswith("SECRET")]
    for key, path in sim.credentials.items():
        if key.endswith("CERTIFICATE"):
            body = [
                line for line in Path(path).read_text().splitlines() if line and not line.startswith("-----")
            ]
            values += body[:5]
    assert len(values) >= 3
    return values


def files_containing(directory: Path, needles: list[str]) -> list[Path]:
    """History files (the database, its WAL, the lock file) whose raw bytes contain one of ``needles``."""
    paths = list(directory.glob("history.sqlite*"))
    assert paths
    return [path for path in paths if any(n.encode() in path.read_bytes() for n in needles)]


def rows_containing(database: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(table, column) of every cell, in every table, that contains one of ``needles``."""
    hits = []
    with sqlite3.connect(database) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for row in conn.execute(f"SELECT * FROM {table}"):  # noqa: S608 - table names from sqlite_master
                for column, value in zip(columns, row, strict=True):
                    if value is not None and any(n in str(value) for n in needles):
                        hits.append((table, column))
        assert set(tables) >= {"runs", "tenant_results", "findings", "mailbox_sets", "remediation_journal"}
    return hits


def test_the_scan_would_find_a_secret(tmp_path: Path) -> None:
    """The secret scan itself: a planted secret is found."""
    database = tmp_path / "h.sqlite"
    with sqlite3.connect(database) as conn:
        for table in ("runs", "tenant_results", "findings", "mailbox_sets", "remediation_journal"):
            conn.execute(f"CREATE TABLE {table} (x TEXT)")
        conn.execute("INSERT INTO findings VALUES ('has s3cret-value inside')")
    assert rows_containing(database, ["s3cret-value"]) == [("findings", "x")]
