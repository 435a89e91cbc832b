"""Acceptance ("Nightly operations", item 2), end to end through `auditor.app.audit` and the simulator: two
nightly runs with one tenant changed in between. The second night's audit.html and audit.xlsx list exactly
that change, the gap ages and accrued cost follow from the history, and the trend shows both runs.

The first run is made to start three days earlier (the runner's clock is shifted), so ages and costs are
large enough to check; everything else is the real thing: config, [history] default path, the Graph SDK
against the simulator, the history database, both report writers.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import openpyxl
import pytest

import auditor.runner
from auditor.app import AuditOptions, audit
from auditor.constants import SECURITY_READER_ROLE_ID
from auditor.history.insights import DAYS_PER_MONTH
from auditor.model import money
from auditor.simulator import GraphSimulator
from auditor.simulator.world import UserRecord
from tests.conftest import DEMO_TENANTS
from tests.integration.conftest import write_demo_config
from tests.reporting.test_html import _Tree

CONTOSO = DEMO_TENANTS["contoso"]
FABRIKAM = DEMO_TENANTS["fabrikam"]
NEW_MAILBOX = "Escrow Desk"
SHIFT = timedelta(days=3)


class _ThreeDaysAgo(datetime):
    """The runner's clock for the first night."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> _ThreeDaysAgo:
        real = datetime.now(tz) - SHIFT
        return cls.fromtimestamp(real.timestamp(), tz)


def _break_contoso(sim: GraphSimulator) -> None:
    """The one change between the nights: Contoso loses the vendor app's Security Reader assignment and
    gains a shared mailbox."""
    tenant = sim.world.tenant(CONTOSO)
    assert tenant is not None
    uss = next(sp for sp in tenant.service_principals if sp["displayName"] == "USS AzureAD")
    before = len(tenant.role_assignments)
    tenant.role_assignments[:] = [
        a
        for a in tenant.role_assignments
        if not (a["principalId"] == uss["id"] and a["roleDefinitionId"] == SECURITY_READER_ROLE_ID)
    ]
    assert len(tenant.role_assignments) == before - 1
    tenant.users.add(
        UserRecord(
            id="0f0f0f0f-1111-4222-8333-444455556666",
            display_name=NEW_MAILBOX,
            user_principal_name="escrow@contoso-health.example",
            mail="escrow@contoso-health.example",
            account_enabled=False,
            licensed=False,
            purpose="shared",
        )
    )


def _records(sheet: Any) -> list[dict[str, Any]]:
    values = list(sheet.iter_rows(values_only=True))
    header = [str(h) for h in values[0]]
    return [dict(zip(header, row, strict=True)) for row in values[1:]]


def _naive(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


@pytest.mark.slow  # two audits of the demo fleet's simulated tenants with the real SDKs
def test_second_report_lists_exactly_the_change(
    fresh_sim_env: GraphSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_sim = fresh_sim_env
    config = write_demo_config(fresh_sim, tmp_path).path  # history: tmp_path/history.sqlite (the default)
    formats = ("json", "html", "xlsx")
    with monkeypatch.context() as clock:
        clock.setattr(auditor.runner, "datetime", _ThreeDaysAgo)
        audit(AuditOptions(config=config, out_dir=tmp_path / "run1", formats=formats), stdout=io.StringIO())
    _break_contoso(fresh_sim)
    audit(AuditOptions(config=config, out_dir=tmp_path / "run2", formats=formats), stdout=io.StringIO())

    first = json.loads((tmp_path / "run1" / "audit.json").read_text(encoding="utf-8"))
    second = json.loads((tmp_path / "run2" / "audit.json").read_text(encoding="utf-8"))
    start1, start2 = (datetime.fromisoformat(r["run"]["started_at"]) for r in (first, second))
    assert timedelta(days=2.9) < start2 - start1 < timedelta(days=3.1)
    elapsed_days = (start2 - start1) / timedelta(days=1)
    status1 = {t["tenant_id"]: t["status"] for t in first["tenants"]}
    status2 = {t["tenant_id"]: t["status"] for t in second["tenants"]}
    assert (status1[CONTOSO], status2[CONTOSO]) == ("compliant", "non_compliant")
    persisting = [
        t
        for t in first["tenants"]
        if t["status"] in ("non_compliant", "ambiguous") and t["tenant_id"] != CONTOSO
    ]
    assert FABRIKAM in {t["tenant_id"] for t in persisting}
    costs = {t["tenant_id"]: t["billing"]["monthly_cost"] for t in first["tenants"]}

    def accrued(tenant_id: str) -> float | None:
        cost = costs[tenant_id]
        return None if cost is None else money(cost * elapsed_days / float(DAYS_PER_MONTH))

    # --- audit.html ---------------------------------------------------------------------------------
    tree = _Tree((tmp_path / "run2" / "audit.html").read_text(encoding="utf-8"))
    (changes,) = tree.all("section", id="changes")
    listed = [
        (e.attrs["data-tenant-id"], e.attrs["data-change"])
        for e in changes.iter()
        if "data-change" in e.attrs
    ]
    assert listed == [(CONTOSO, "new_gap")]
    assert [e.text() for e in changes.iter() if e.tag == "li"] == [NEW_MAILBOX]
    previous = [e for e in changes.iter() if e.attrs.get("data-figure") == "history.previous_run_at"]
    assert [datetime.fromisoformat(e.attrs["datetime"]) for e in previous] == [start1]

    headers = [th.attrs["data-key"] for th in tree.all("th") if "data-key" in th.attrs]
    days_at, cost_at = headers.index("gap_days"), headers.index("gap_accrued_cost")
    table_rows = {e.attrs["data-tenant-id"]: e for e in tree.all("tr") if "data-status" in e.attrs}
    for tenant in persisting:
        cells = [c for c in table_rows[tenant["tenant_id"]].children if c.tag in ("th", "td")]
        assert float(cells[days_at].attrs["data-value"]) == pytest.approx(elapsed_days, abs=0.01)
        value = cells[cost_at].attrs["data-value"]
        expected = accrued(tenant["tenant_id"])
        if expected is None:
            assert value == ""
        else:
            assert float(value) == pytest.approx(expected, abs=0.011)
        (detail,) = tree.all("details", data_tenant_id=tenant["tenant_id"])
        times = [e.attrs["datetime"] for e in detail.iter() if e.tag == "time"]
        assert [datetime.fromisoformat(t) for t in times] == [start1]  # gap first seen: run 1's start
    assert float(
        next(
            e for e in tree.with_attr("data-figure") if e.attrs["data-figure"] == "history.accrued_cost_total"
        ).attrs["data-value"]
    ) == pytest.approx(sum(a for t in persisting if (a := accrued(t["tenant_id"])) is not None), abs=0.02)

    (trend,) = tree.all("table", id="trend-table")
    assert [e.attrs["data-run-id"] for e in trend.iter() if "data-run-id" in e.attrs] == [
        first["run"]["id"],
        second["run"]["id"],
    ]
    assert "Trend over the last 2 runs" in tree.all("section", id="trend")[0].text()

    # --- audit.xlsx ---------------------------------------------------------------------------------
    book = openpyxl.load_workbook(tmp_path / "run2" / "audit.xlsx")
    (change,) = _records(book["Changes"])
    assert (change["Tenant ID"], change["Change"], change["Previous status"], change["Status"]) == (
        CONTOSO,
        "New gap",
        "compliant",
        "non_compliant",
    )
    assert (change["New shared mailboxes"], change["New shared mailbox names"]) == (1, NEW_MAILBOX)
    assert change["Gap open (days)"] == 0 and change["Accrued while open"] == 0

    tenants = {r["Tenant ID"]: r for r in _records(book["Tenants"])}
    assert tenants[CONTOSO]["Change since the previous run"] == "New gap"
    for tenant in persisting:
        row = tenants[tenant["tenant_id"]]
        assert abs(row["Gap first seen (UTC)"] - _naive(first["run"]["started_at"])) < timedelta(seconds=1)
        assert row["Runs with the gap"] == 2
        expected = accrued(tenant["tenant_id"])
        if expected is None:
            assert row["Accrued since the gap opened"] == "unknown"
        else:
            assert row["Accrued since the gap opened"] == pytest.approx(expected, abs=0.011)
    fabrikam = tenants[FABRIKAM]["Accrued since the gap opened"]
    assert fabrikam == pytest.approx(costs[FABRIKAM] * elapsed_days / 30.4375, abs=0.011)

    trend_rows = _records(book["Trend"])
    assert [r["Run ID"] for r in trend_rows] == [first["run"]["id"], second["run"]["id"]]
    assert [r["Non-compliant"] for r in trend_rows] == [
        first["summary"]["by_status"]["non_compliant"],
        second["summary"]["by_status"]["non_compliant"],
    ]
    assert trend_rows[1]["Non-compliant"] == trend_rows[0]["Non-compliant"] + 1
    assert [r["Estimated monthly cost"] for r in trend_rows] == [
        first["summary"]["estimated_monthly_cost"],
        second["summary"]["estimated_monthly_cost"],
    ]
