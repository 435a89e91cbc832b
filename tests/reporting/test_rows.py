"""The results -> rows layer both report formats are drawn from."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from auditor.model import (
    Billing,
    Finding,
    FindingCode,
    RemediationAction,
    RunResult,
    Severity,
    Status,
    TenantResult,
)
from auditor.reporting import rows
from auditor.reporting.rows import CheckOutcome
from tests.reporting.sample import (
    HOSTILE_TENANT_ID,
    SAVED_RUN,
    VENDOR_APP_ID,
    sample_run,
)


def _tenant(run: RunResult, name: str) -> TenantResult:
    return next(t for t in run.tenants if t.name == name)


def test_saved_sample_is_in_step_with_the_builder() -> None:
    # The screenshots render from the saved file; regenerate with `python -m tests.reporting.sample`.
    saved = json.loads(SAVED_RUN.read_text(encoding="utf-8"))
    assert saved == sample_run().to_dict()
    assert RunResult.from_dict(saved).to_dict() == saved


def test_sample_covers_every_status_and_remediation_outcome(hostile_run: RunResult) -> None:
    assert {t.status for t in hostile_run.tenants} == set(Status)
    actions = {t.remediation.action for t in hostile_run.tenants}
    assert actions == set(RemediationAction)
    assert any(t.billing.monthly_cost is None for t in hostile_run.tenants)


def test_tenant_rows_one_per_tenant_most_urgent_first(hostile_run: RunResult) -> None:
    table = rows.tenant_rows(hostile_run)
    records = table.records()
    assert len(records) == len(hostile_run.tenants)
    assert {r["tenant_id"] for r in records} == {t.tenant_id for t in hostile_run.tenants}
    order = [rows.STATUS_ORDER.index(Status(r["status"])) for r in records]
    assert order == sorted(order)
    costs = [r["monthly_cost"] for r in records if r["status"] == "non_compliant"]
    assert costs == sorted(costs, reverse=True)


def test_tenant_rows_keep_unknown_as_none_and_ints_as_ints(hostile_run: RunResult) -> None:
    records = {r["tenant_id"]: r for r in rows.tenant_rows(hostile_run).records()}
    for tenant in hostile_run.tenants:
        record = records[tenant.tenant_id]
        assert record["monthly_cost"] == tenant.billing.monthly_cost
        assert record["billed_shared_mailboxes"] == tenant.billing.billed_shared_mailboxes
        assert type(record["findings"]) is int
        if tenant.billing.monthly_cost is None:
            assert record["monthly_cost"] is None
        else:
            assert isinstance(record["monthly_cost"], float)


def test_tenant_row_values(hostile_run: RunResult) -> None:
    records = {r["name"]: r for r in rows.tenant_rows(hostile_run).records()}
    fabrikam = records["Fabrikam Retail"]
    assert fabrikam["status"] == "non_compliant"
    assert fabrikam["tags"] == "gold, retail"
    assert fabrikam["tag_list"] == ("gold", "retail")
    assert fabrikam["highest_severity"] == "high"
    assert fabrikam["finding_codes"] == "ROLE_MISSING, SHARED_MAILBOX_SIGNIN_ENABLED, SHARED_MAILBOX_LICENSED"
    assert fabrikam["remediation"] == "planned"
    assert fabrikam["identified_by"] == "app_id"
    assert fabrikam["next_step"] == (
        "Assign it Security Reader, active and tenant-wide (or run `auditor audit --remediate`). Then start "
        "a full sync in the USS dashboard: shared mailboxes are billed as users until it has run."
    )
    alpine = records["Alpine Ski House"]
    assert alpine["next_step"].startswith("Have a Global Administrator open the admin-consent link")
    coho = records["Coho Winery"]
    assert coho["next_step"].startswith("Enable the USS AzureAD app for sign-in")
    assert records["Contoso Healthcare"]["next_step"] == "Nothing to do."
    remediated = records["Adatum Corporation"]["next_step"]
    assert remediated == rows.STATUS_INFO[Status.REMEDIATED].next_step
    assert "start a full sync in the USS dashboard" in remediated
    assert "fabrikam retail" in fabrikam["search_text"]
    relecloud = records["Relecloud"]
    assert relecloud["vendor_app"] == ""
    assert relecloud["error_code"] == "AUTH_FAILED"
    assert relecloud["shared_mailboxes"] is None
    assert relecloud["highest_severity"] == ""


def test_anchors_are_unique_and_safe_even_for_duplicate_tenants(hostile_run: RunResult) -> None:
    doubled = replace(hostile_run, tenants=hostile_run.tenants + hostile_run.tenants[:2])
    anchors = [r["anchor"] for r in rows.tenant_rows(doubled).records()]
    assert len(set(anchors)) == len(anchors)
    assert all(a.startswith("tenant-") and a.replace("-", "").isalnum() for a in anchors)


def test_finding_rows_split_what_and_fix(hostile_run: RunResult) -> None:
    table = rows.finding_rows(hostile_run)
    assert len(table) == sum(len(t.findings) for t in hostile_run.tenants)
    role = next(
        r for r in table.records() if r["tenant"] == "Fabrikam Retail" and r["code"] == "ROLE_MISSING"
    )
    assert role["what"].endswith("bills them as users.")
    assert role["fix"].startswith("Entra admin center > Roles and administrators")
    assert role["message"] == role["what"] + " Fix: " + role["fix"]
    no_fix = next(r for r in table.records() if r["code"] == "SP_NOT_FOUND")
    assert no_fix["fix"] == ""
    assert no_fix["what"] == no_fix["message"]


def test_findings_most_severe_first_within_a_tenant(hostile_run: RunResult) -> None:
    by_tenant: dict[str, list[int]] = {}
    for record in rows.finding_rows(hostile_run).records():
        by_tenant.setdefault(record["tenant_id"], []).append(Severity(record["severity"]).rank)
    assert all(ranks == sorted(ranks) for ranks in by_tenant.values())


def test_consent_link_comes_from_the_evaluator_and_ignores_planted_links(hostile_run: RunResult) -> None:
    alpine = _tenant(hostile_run, "Alpine Ski House")
    assert rows.consent_link(alpine) == (
        f"https://login.microsoftonline.com/{alpine.tenant_id}/adminconsent?client_id={VENDOR_APP_ID}"
    )
    hostile = next(t for t in hostile_run.tenants if t.tenant_id == HOSTILE_TENANT_ID)
    link = rows.consent_link(hostile)
    assert link is not None
    assert link.startswith("https://login.microsoftonline.com/")
    assert "evil" not in link
    # Only the Exchange finding carries it.
    records = [r for r in rows.finding_rows(hostile_run).records() if r["consent_link"]]
    assert {r["code"] for r in records} == {"EXCHANGE_PERMISSION_MISSING"}
    assert rows.consent_link(_tenant(hostile_run, "Contoso Healthcare")) is None


def test_consent_link_keeps_the_cloud_and_falls_back_to_global(hostile_run: RunResult) -> None:
    alpine = _tenant(hostile_run, "Alpine Ski House")
    gov = f"https://login.microsoftonline.us/{alpine.tenant_id}/adminconsent?client_id={VENDOR_APP_ID}"
    finding = Finding(
        FindingCode.EXCHANGE_PERMISSION_MISSING, Severity.HIGH, f"Missing. Fix: go to {gov} now."
    )
    assert rows.consent_link(replace(alpine, findings=(finding,))) == gov
    bare = Finding(FindingCode.EXCHANGE_PERMISSION_MISSING, Severity.HIGH, "Missing.")
    assert rows.consent_link(replace(alpine, findings=(bare,))) == (
        f"https://login.microsoftonline.com/{alpine.tenant_id}/adminconsent?client_id={VENDOR_APP_ID}"
    )


def test_shared_mailbox_rows(hostile_run: RunResult) -> None:
    table = rows.shared_mailbox_rows(hostile_run)
    assert len(table) == sum(t.mailboxes.shared for t in hostile_run.tenants if t.mailboxes)
    billed = {r["tenant"] for r in table.records() if r["billed"]}
    assert "Fabrikam Retail" in billed
    assert "Contoso Healthcare" not in billed
    fabrikam = [r for r in table.records() if r["tenant"] == "Fabrikam Retail"]
    assert sum(r["account_enabled"] for r in fabrikam) == 1
    assert sum(r["licensed"] for r in fabrikam) == 1


def test_remediation_rows_skip_none(hostile_run: RunResult) -> None:
    records = rows.remediation_rows(hostile_run).records()
    assert {r["action"] for r in records} == set(RemediationAction) - {RemediationAction.NONE}
    created = next(r for r in records if r["tenant"] == "Adatum Corporation")
    assert isinstance(created["at"], datetime)
    assert created["role_assignment_id"]


def test_error_rows(hostile_run: RunResult) -> None:
    records = rows.error_rows(hostile_run).records()
    assert {r["tenant"] for r in records} == {t.name for t in hostile_run.tenants if t.error}
    assert all(r["hint"] for r in records)


def test_status_rows_list_every_status_and_add_up(hostile_run: RunResult) -> None:
    records = rows.status_rows(hostile_run).records()
    assert [r["status"] for r in records] == [s.value for s in rows.STATUS_ORDER]
    summary = hostile_run.summary()
    assert {r["status"]: r["tenants"] for r in records} == {s.value: n for s, n in summary.by_status.items()}


def test_run_figures_match_the_summary(hostile_run: RunResult) -> None:
    figures = {f.key: f.value for f in rows.run_figures(hostile_run)}
    summary = hostile_run.to_dict()["summary"]
    for key, value in summary.items():
        if key not in ("by_status", "remediation"):
            assert figures[f"summary.{key}"] == value
    fixed = ", ".join(f"{n} {action}" for action, n in summary["remediation"].items())
    assert figures.get("summary.remediation", "") == fixed
    cost = next(f for f in rows.run_figures(hostile_run) if f.key == "summary.estimated_monthly_cost")
    assert cost.note.startswith("at least")


def test_cost_by_tenant_top_n_and_the_rest(hostile_run: RunResult) -> None:
    bars = rows.cost_by_tenant(hostile_run, top=3)
    costly = sorted((t.billing.monthly_cost or 0 for t in hostile_run.tenants), reverse=True)
    costly = [c for c in costly if c > 0]
    assert [b.value for b in bars[:3]] == costly[:3]
    assert bars[3].label == f"{len(costly) - 3} other tenant(s)"
    assert bars[3].value == pytest.approx(sum(costly[3:]))
    assert bars[3].anchor == ""
    assert sum(b.value for b in bars) == pytest.approx(hostile_run.summary().estimated_monthly_cost)


def test_cost_by_tenant_empty_when_nothing_costs() -> None:
    run = sample_run()
    free = replace(
        run,
        tenants=tuple(replace(t, billing=Billing(0, 2.5, 0.0)) for t in run.tenants),
    )
    assert rows.cost_by_tenant(free) == ()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Contoso Healthcare", ["ok", "ok", "ok", "ok", "ok"]),
        ("Fabrikam Retail", ["ok", "ok", "gap", "ok", "warning"]),
        ("Alpine Ski House", ["ok", "ok", "ok", "gap", "ok"]),
        ("Coho Winery", ["ok", "gap", "ok", "ok", "ok"]),
        ("Litware Inc.", ["ok", "ok", "ok", "ok", "ok"]),  # role gap closed by this run
        ("Woodgrove Bank", ["ok", "ok", "warning", "ok", "ok"]),
        ("Trey Research", ["warning", "ok", "ok", "ok", "warning"]),
        ("Margie's Travel", ["not_applicable", "not_applicable", "not_applicable", "ok"]),
        ("Proseware", ["unknown", "not_applicable", "not_applicable", "ok"]),
        ("Fourth Coffee", ["ok", "ok", "unknown", "unknown", "ok"]),
        ("Relecloud", ["unknown", "not_applicable", "not_applicable", "unknown"]),
    ],
)
def test_tenant_checks(hostile_run: RunResult, name: str, expected: list[str]) -> None:
    checks = rows.tenant_checks(_tenant(hostile_run, name))
    assert [c.outcome.value for c in checks] == expected
    assert all(c.evidence for c in checks)


def test_litware_check_names_the_ignored_lookalike(hostile_run: RunResult) -> None:
    checks = rows.tenant_checks(_tenant(hostile_run, "Litware Inc."))
    assert "1 look-alike app(s) were ignored" in checks[0].evidence
    assert checks[2].outcome is CheckOutcome.OK
    assert "already present" in checks[2].evidence
    adatum = rows.tenant_checks(_tenant(hostile_run, "Adatum Corporation"))
    assert "this run assigned it and read it back" in adatum[2].evidence


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1234.5, "GBP", "£1,234.50"),
        (0.0, "EUR", "€0.00"),
        (-3.0, "USD", "-$3.00"),
        (12.0, "CHF", "CHF 12.00"),
        (None, "GBP", "unknown"),
    ],
)
def test_format_money(amount: float | None, currency: str, text: str) -> None:
    assert rows.format_money(amount, currency) == text


def test_format_helpers() -> None:
    assert rows.format_count(None) == "unknown"
    assert rows.format_count(12345) == "12,345"
    assert rows.format_datetime(datetime(2025, 1, 2, 3, 4, tzinfo=UTC)) == "2025-01-02 03:04 UTC"
    assert rows.format_datetime(None) == ""
    assert rows.split_fix("A. Fix: B.") == ("A.", "B.")


def test_empty_run_has_notes() -> None:
    run = replace(sample_run(), tenants=())
    for table in (
        rows.tenant_rows(run),
        rows.finding_rows(run),
        rows.shared_mailbox_rows(run),
        rows.remediation_rows(run),
        rows.error_rows(run),
    ):
        assert len(table) == 0
        assert table.empty_note
        assert list(table.frame.columns)[: len(table.columns)] == [c.key for c in table.columns]
