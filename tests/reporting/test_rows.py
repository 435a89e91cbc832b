"""The results -> rows layer both report formats are drawn from."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

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
from auditor.reporting.rows import CheckOutcome, ColumnKind
from tests.reporting.sample import (
    HOSTILE_TENANT_ID,
    HOSTILE_TENANT_NAME,
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


# --- what a reader sees, exactly -----------------------------------------------------------------------------


def _sp_evidence(tenant: TenantResult, how: str, extra: str = "") -> str:
    assert tenant.service_principal is not None
    record = tenant.service_principal.record
    return (
        f"{record.display_name} (object id {record.id}, appId {record.app_id}, published by "
        f"{record.app_owner_organization_id}), identified {how}.{extra}"
    )


BY_APP_ID = "by its appId, pinned in the config (vendor.app_id)"
ROLE = "Security Reader, active, tenant-wide"
EXCHANGE = "Exchange Online permission Exchange.ManageAsApp"
FAILED = "Not confirmed: the audit of this tenant failed (see the error)."
NO_APP = "Not checked: no vendor app."
GRANTED = "No finding: granted (or the check is off in the config)."
HELD = "Held: active, at scope '/'."
ENABLED: tuple[str, str, str, list[str]] = ("Vendor app enabled", "ok", "Enabled for sign-in.", [])


@pytest.mark.parametrize(
    ("name", "how", "expected"),
    [
        (
            "Lucerne Publishing",
            "by display name and the vendor's publisher tenant (vendor.publisher_tenant_id)",
            [
                ENABLED,
                (ROLE, "gap", "Not held as required.", ["ROLE_MISSING", "PIM_UNAVAILABLE"]),
                (EXCHANGE, "ok", GRANTED, []),
                ("Mailbox census", "ok", "2,150 users examined: 64 shared mailbox(es).", []),
            ],
        ),
        (
            "Fabrikam Retail",
            BY_APP_ID,
            [
                ENABLED,
                (ROLE, "gap", "Not held as required.", ["ROLE_MISSING"]),
                (EXCHANGE, "ok", GRANTED, []),
                (
                    "Mailbox census",
                    "warning",
                    "240 users examined: 23 shared mailbox(es).",
                    ["SHARED_MAILBOX_SIGNIN_ENABLED", "SHARED_MAILBOX_LICENSED"],
                ),
            ],
        ),
        (
            HOSTILE_TENANT_NAME,
            BY_APP_ID,
            [
                ENABLED,
                (
                    ROLE,
                    "warning",
                    "Was missing; this run assigned it, but it was not yet visible (directory replication). "
                    "The next run confirms it.",
                    ["ROLE_MISSING"],
                ),
                (
                    EXCHANGE,
                    "gap",
                    "Missing: a Global Administrator must grant admin consent (link below).",
                    ["EXCHANGE_PERMISSION_MISSING"],
                ),
                ("Mailbox census", "ok", "17 users examined: 12 shared mailbox(es).", []),
            ],
        ),
        (
            "Coho Winery",
            BY_APP_ID,
            [
                ("Vendor app enabled", "gap", "Disabled: USS cannot sign in.", ["SP_DISABLED"]),
                (ROLE, "ok", HELD, []),
                (EXCHANGE, "ok", GRANTED, []),
                ("Mailbox census", "ok", "45 users examined: 3 shared mailbox(es).", []),
            ],
        ),
        (
            "Fourth Coffee",
            BY_APP_ID,
            [
                ENABLED,
                (ROLE, "unknown", FAILED, []),
                (EXCHANGE, "unknown", FAILED, []),
                ("Mailbox census", "ok", "70 users examined: 5 shared mailbox(es).", []),
            ],
        ),
        (
            "Adatum Corporation",
            BY_APP_ID,
            [
                ENABLED,
                (ROLE, "ok", "Was missing; this run assigned it and read it back.", ["ROLE_ELIGIBLE_ONLY"]),
                (EXCHANGE, "ok", GRANTED, []),
                ("Mailbox census", "ok", "90 users examined: 6 shared mailbox(es).", []),
            ],
        ),
        (
            "Litware Inc.",
            BY_APP_ID,
            [
                ENABLED,
                (
                    ROLE,
                    "ok",
                    "Was missing; found assigned when re-read before writing (already present).",
                    ["ROLE_MISSING"],
                ),
                (EXCHANGE, "ok", GRANTED, []),
                ("Mailbox census", "ok", "60 users examined: 4 shared mailbox(es).", []),
            ],
        ),
        (
            "Tailspin Toys",
            BY_APP_ID,
            [
                ENABLED,
                (ROLE, "warning", "Held, with a caveat (see below).", ["ROLE_EXPIRING"]),
                (EXCHANGE, "ok", GRANTED, []),
                ("Mailbox census", "ok", "75 users examined: 5 shared mailbox(es).", []),
            ],
        ),
        (
            "Trey Research",
            "by display name only: not pinned in the config",
            [
                ENABLED,
                (ROLE, "ok", HELD, []),
                (EXCHANGE, "ok", GRANTED, []),
                (
                    "Mailbox census",
                    "warning",
                    "80 users examined: 6 shared mailbox(es); 3 could not be classified (a lower bound).",
                    ["MAILBOX_SCAN_INCOMPLETE"],
                ),
            ],
        ),
    ],
)
def test_tenant_checks_read_as_evidence(
    hostile_run: RunResult, name: str, how: str, expected: list[tuple[str, str, str, list[str]]]
) -> None:
    tenant = _tenant(hostile_run, name)
    first, *rest = rows.tenant_checks(tenant)
    identified_outcome = "warning" if name == "Trey Research" else "ok"
    assert (first.name, first.outcome.value) == ("Vendor app identified", identified_outcome)
    ignored = " 1 look-alike app(s) were ignored." if name == "Litware Inc." else ""
    assert first.evidence == _sp_evidence(tenant, how, ignored)
    behind = {"Trey Research": ["SP_NAME_ONLY"], "Litware Inc.": ["SP_LOOKALIKE"]}.get(name, [])
    assert [f.code.value for f in first.findings] == behind
    assert [
        (c.name, c.outcome.value, c.evidence, [f.code.value for f in c.findings]) for c in rest
    ] == expected


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("Relecloud", ("unknown", FAILED, [])),
        ("@SUM(A1) Errors Ltd", ("unknown", FAILED, [])),
        ("Proseware", ("unknown", "Several candidate apps; the config must say which.", ["SP_AMBIGUOUS"])),
        ("Margie's Travel", ("not_applicable", "No vendor app: USS is not connected.", ["SP_NOT_FOUND"])),
    ],
)
def test_tenant_checks_without_a_vendor_app(
    hostile_run: RunResult, name: str, first: tuple[str, str, list[str]]
) -> None:
    tenant = _tenant(hostile_run, name)
    checks = rows.tenant_checks(tenant)
    found = [(c.name, c.outcome.value, c.evidence, [f.code.value for f in c.findings]) for c in checks]
    assert found[0] == ("Vendor app identified", *first)
    assert found[1:3] == [(ROLE, "not_applicable", NO_APP, []), (EXCHANGE, "not_applicable", NO_APP, [])]
    census = tenant.mailboxes
    if census is None:
        assert found[3] == ("Mailbox census", "unknown", "Mailboxes were not classified.", [])
    else:
        assert found[3][:3] == (
            "Mailbox census",
            "ok",
            f"{census.total_users:,} users examined: {census.shared:,} shared mailbox(es).",
        )


def test_tenant_checks_name_look_alikes_publisher_on_premises_and_census_age(hostile_run: RunResult) -> None:
    litware = _tenant(hostile_run, "Litware Inc.")
    assert rows.tenant_checks(litware)[0].evidence == _sp_evidence(
        litware, BY_APP_ID, " 1 look-alike app(s) were ignored."
    )
    assert [f.code.value for f in rows.tenant_checks(litware)[0].findings] == ["SP_LOOKALIKE"]
    lookalike = Finding(FindingCode.SP_LOOKALIKE, Severity.INFO, "A look-alike.")
    proseware = _tenant(hostile_run, "Proseware")
    ambiguous = rows.tenant_checks(replace(proseware, findings=(*proseware.findings, lookalike, lookalike)))
    assert ambiguous[0].evidence == (
        "Several candidate apps; the config must say which. 2 look-alike app(s) were ignored."
    )
    assert [f.code.value for f in ambiguous[0].findings] == ["SP_AMBIGUOUS", "SP_LOOKALIKE", "SP_LOOKALIKE"]
    contoso = _tenant(hostile_run, "Contoso Healthcare")
    assert contoso.service_principal is not None and contoso.mailboxes is not None
    record = replace(contoso.service_principal.record, app_owner_organization_id=None)
    hybrid = replace(
        contoso,
        service_principal=replace(contoso.service_principal, record=record),
        mailboxes=replace(contoso.mailboxes, on_premises=1234, unclassified=2, age_days=3.25),
    )
    checks = rows.tenant_checks(hybrid)
    assert "published by unknown)" in checks[0].evidence
    assert checks[4].outcome is CheckOutcome.OK  # no finding says otherwise
    assert checks[4].evidence == (
        f"{hybrid.mailboxes.total_users:,} users examined: 12 shared mailbox(es); 1,234 mailbox(es) hosted "  # type: ignore[union-attr]
        "on-premises, not classified; 2 could not be classified (a lower bound). Incremental census: the "
        "oldest mailbox classification is 3.2 day(s) old."
    )


def test_run_figures_as_the_summary_shows_them(hostile_run: RunResult) -> None:
    run = hostile_run
    assert rows.run_figures(run) == (
        rows.Figure("run.id", "Run ID", "20251126T020000Z-4f9c2a"),
        rows.Figure("run.started_at", "Started (UTC)", run.started_at, ColumnKind.DATETIME),
        rows.Figure("run.finished_at", "Finished (UTC)", run.finished_at, ColumnKind.DATETIME),
        rows.Figure("run.tool_version", "Tool version", "0.1.0"),
        rows.Figure("run.mode", "Mode", "remediate"),
        rows.Figure("summary.tenants", "Tenants audited", 17, ColumnKind.COUNT),
        rows.Figure("summary.shared_mailboxes", "Shared mailboxes found", 172, ColumnKind.COUNT),
        rows.Figure(
            "summary.billed_shared_mailboxes", "Shared mailboxes billed as users", 128, ColumnKind.COUNT
        ),
        rows.Figure(
            "summary.estimated_monthly_cost",
            "Estimated monthly cost",
            320.0,
            ColumnKind.MONEY,
            "at least: the cost of 4 tenant(s) is unknown (errors, ambiguous)",
        ),
        rows.Figure("summary.currency", "Currency", "GBP"),
        rows.Figure("summary.tenants_with_unknown_cost", "Tenants with unknown cost", 4, ColumnKind.COUNT),
        rows.Figure(
            "summary.remediation",
            "Remediation in this run",
            "1 already_present, 1 created, 1 created_unverified, 1 failed, 1 planned, 2 refused",
        ),
    )


def test_run_figures_lead_with_the_vendor_warning_and_leave_out_what_is_not_there(
    hostile_run: RunResult,
) -> None:
    margies = _tenant(hostile_run, "Margie's Travel")
    nowhere = replace(hostile_run, tenants=(margies, replace(margies, tenant_id="t-2")), vendor_search="x")
    figures = rows.run_figures(nowhere)
    notice = nowhere.vendor_nowhere_notice
    assert notice is not None
    assert figures[0] == rows.Figure("run.vendor_not_found", "WARNING: vendor app found nowhere", notice)
    keys = [f.key for f in figures[1:]]
    assert keys == [f.key for f in rows.run_figures(hostile_run)][:-1]  # no remediation: no such figure
    cost = next(f for f in figures if f.key == "summary.estimated_monthly_cost")
    assert (cost.value, cost.note) == (0.0, "")  # every cost known: no "at least"
    assert rows.run_figures(hostile_run)[0].key == "run.id"  # the vendor was found: no warning


def test_tables_are_named_as_the_workbook_sheets_and_say_why_they_are_empty() -> None:
    run = replace(sample_run(), tenants=())
    tables = [
        rows.tenant_rows(run),
        rows.finding_rows(run),
        rows.shared_mailbox_rows(run),
        rows.remediation_rows(run),
        rows.error_rows(run),
        rows.status_rows(run),
    ]
    assert [(t.name, t.empty_note) for t in tables] == [
        ("Tenants", "No tenants were audited in this run."),
        ("Findings", "No findings in this run."),
        ("Shared mailboxes", "No shared mailboxes were found."),
        ("Remediation", f"No remediation in this run (mode: {run.mode.value})."),
        ("Errors", "Every tenant could be audited: no errors."),
        ("Tenants by status", ""),
    ]
    assert [r["tenants"] for r in rows.status_rows(run).records()] == [0] * len(rows.STATUS_ORDER)


def test_status_rows_read_as_the_status_legend(hostile_run: RunResult) -> None:
    records = rows.status_rows(hostile_run).records()
    assert records == [
        {
            "status": s.value,
            "label": rows.STATUS_INFO[s].label,
            "tenants": sum(t.status is s for t in hostile_run.tenants),
            "meaning": rows.STATUS_INFO[s].meaning,
            "next_step": rows.STATUS_INFO[s].next_step,
        }
        for s in rows.STATUS_ORDER
    ]
    assert [(r["status"], r["label"], r["tenants"]) for r in records] == [
        ("non_compliant", "Non-compliant", 6),
        ("error", "Error", 3),
        ("ambiguous", "Ambiguous", 1),
        ("remediated", "Remediated", 2),
        ("not_connected", "Not connected", 1),
        ("compliant", "Compliant", 4),
    ]
    assert all(type(r["tenants"]) is int for r in records)


def test_error_and_remediation_rows_hold_every_field_a_reader_needs(hostile_run: RunResult) -> None:
    relecloud = _tenant(hostile_run, "Relecloud")
    assert relecloud.error is not None
    errors = {r["tenant"]: r for r in rows.error_rows(hostile_run).records()}
    assert errors["Relecloud"] == {
        "tenant": "Relecloud",
        "tenant_id": relecloud.tenant_id,
        "code": "AUTH_FAILED",
        "message": relecloud.error.message,
        "hint": relecloud.error.hint,
        "anchor": f"tenant-{relecloud.tenant_id}",
    }
    adatum = _tenant(hostile_run, "Adatum Corporation")
    done = {r["tenant"]: r for r in rows.remediation_rows(hostile_run).records()}
    assert done["Adatum Corporation"] == {
        "tenant": "Adatum Corporation",
        "tenant_id": adatum.tenant_id,
        "status": "remediated",
        "action": "created",
        "detail": adatum.remediation.detail,
        "at": adatum.remediation.at,
        "role_assignment_id": adatum.remediation.role_assignment_id,
        "request_id": adatum.remediation.request_id,
        "anchor": f"tenant-{adatum.tenant_id}",
    }
    assert adatum.remediation.detail and adatum.remediation.request_id
    fabrikam = done["Fabrikam Retail"]  # planned: nothing written, so no ids
    assert (fabrikam["action"], fabrikam["role_assignment_id"], fabrikam["request_id"]) == ("planned", "", "")


def test_finding_rows_carry_status_and_anchor(hostile_run: RunResult) -> None:
    fabrikam = _tenant(hostile_run, "Fabrikam Retail")
    records = [r for r in rows.finding_rows(hostile_run).records() if r["tenant"] == "Fabrikam Retail"]
    assert {(r["status"], r["anchor"]) for r in records} == {
        ("non_compliant", f"tenant-{fabrikam.tenant_id}")
    }


def test_shared_mailbox_records_are_whole_rows_in_report_order(hostile_run: RunResult) -> None:
    fabrikam = _tenant(hostile_run, "Fabrikam Retail")
    assert fabrikam.mailboxes is not None
    box = fabrikam.mailboxes.shared_mailboxes[0]
    records = list(rows.tenant_mailbox_records(fabrikam, "tenant-x"))
    assert records[0] == {
        "tenant": "Fabrikam Retail",
        "tenant_id": fabrikam.tenant_id,
        "status": "non_compliant",
        "display_name": box.display_name,
        "user_principal_name": box.user_principal_name,
        "mail": box.mail or "",
        "billed": True,
        "account_enabled": box.account_enabled,
        "licensed": box.licensed,
        "id": box.id,
        "anchor": "tenant-x",
    }
    assert len(records) == len(fabrikam.mailboxes.shared_mailboxes) == 23
    assert len(list(rows.tenant_mailbox_records(fabrikam, "a", limit=2))) == 2
    assert len(list(rows.tenant_mailbox_records(fabrikam, "a", limit=23))) == 23
    assert list(rows.tenant_mailbox_records(_tenant(hostile_run, "Relecloud"), "a")) == []
    without_mail = replace(box, mail=None)
    one = replace(fabrikam, mailboxes=replace(fabrikam.mailboxes, shared_mailboxes=(without_mail,)))
    assert next(rows.tenant_mailbox_records(one, "a"))["mail"] == ""
    streamed = list(rows.shared_mailbox_records(hostile_run))
    assert (
        len(streamed) == rows.shared_mailbox_count(hostile_run) == len(rows.shared_mailbox_rows(hostile_run))
    )
    assert rows.shared_mailbox_count(hostile_run) == sum(
        len(t.mailboxes.shared_mailboxes) for t in hostile_run.tenants if t.mailboxes
    )
    anchors = {r["name"]: r["anchor"] for r in rows.tenant_rows(hostile_run).records()}
    assert all(r["anchor"] == anchors[r["tenant"]] for r in streamed)
    assert streamed[0]["tenant"] == "Lucerne Publishing"  # the most urgent tenant first


def test_tenant_row_holds_every_column(hostile_run: RunResult) -> None:
    records = {r["name"]: r for r in rows.tenant_rows(hostile_run).records()}
    fabrikam = _tenant(hostile_run, "Fabrikam Retail")
    row = records["Fabrikam Retail"]
    assert {
        k: row[k] for k in ("price_per_mailbox", "currency", "shared_mailboxes", "on_premises_mailboxes")
    } == {
        "price_per_mailbox": 2.5,
        "currency": "GBP",
        "shared_mailboxes": 23,
        "on_premises_mailboxes": 0,
    }
    assert (row["census_age_days"], row["vendor_app"], row["vendor_app_id"]) == (
        None,
        "USS AzureAD",
        VENDOR_APP_ID,
    )
    assert (row["severity_rank"], row["status_label"]) == (Severity.HIGH.rank, "Non-compliant")
    assert row["anchor"] == f"tenant-{fabrikam.tenant_id}"
    relecloud = records["Relecloud"]
    assert (relecloud["vendor_app_id"], relecloud["identified_by"], relecloud["severity_rank"]) == (
        "",
        "",
        len(Severity),
    )
    assert (relecloud["on_premises_mailboxes"], relecloud["census_age_days"]) == (None, None)
    assert records["Contoso Healthcare"]["error_code"] == ""
    assert (
        relecloud["search_text"]
        == (f"relecloud {relecloud['tenant_id']} error {relecloud['tags']}   auth_failed").casefold()
    )


def test_a_census_read_incrementally_shows_its_age(hostile_run: RunResult) -> None:
    contoso = _tenant(hostile_run, "Contoso Healthcare")
    assert contoso.mailboxes is not None
    aged = replace(contoso, mailboxes=replace(contoso.mailboxes, age_days=1.5, on_premises=3))
    record = rows.tenant_rows(replace(hostile_run, tenants=(aged,))).records()[0]
    assert (record["census_age_days"], record["on_premises_mailboxes"]) == (1.5, 3)


@pytest.mark.parametrize(
    ("tenant_id", "anchor"),
    [
        ("3C8F1E52-7A41-4D0B", "tenant-3c8f1e52-7a41-4d0b"),
        ("  Contoso.onmicrosoft.com ", "tenant-contoso-onmicrosoft-com"),
        ("--a b--", "tenant-a-b"),
        ("<>", "tenant-unknown"),
        ("", "tenant-unknown"),
    ],
)
def test_tenant_anchors_are_lower_case_slugs(hostile_run: RunResult, tenant_id: str, anchor: str) -> None:
    assert rows.tenant_anchor(replace(hostile_run.tenants[0], tenant_id=tenant_id)) == anchor


def test_the_same_tenant_listed_three_times_gets_numbered_anchors(hostile_run: RunResult) -> None:
    contoso = _tenant(hostile_run, "Contoso Healthcare")
    three = replace(hostile_run, tenants=(contoso, contoso, contoso))
    base = f"tenant-{contoso.tenant_id}"
    assert [r["anchor"] for r in rows.tenant_rows(three).records()] == [base, f"{base}-2", f"{base}-3"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (1.0, "1.0 day"),
        (1.04, "1.0 day"),
        (0.96, "1.0 day"),
        (2.5, "2.5 days"),
        (1234.5, "1,234.5 days"),
    ],
)
def test_format_days(value: float | None, text: str) -> None:
    assert rows.format_days(value) == text


def test_datetimes_show_in_utc_whatever_their_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert rows.format_datetime(datetime(2025, 1, 2, 5, 4, tzinfo=plus_two)) == "2025-01-02 03:04 UTC"
    assert rows.format_datetime(datetime(2025, 1, 2, 3, 4)) == "2025-01-02 03:04 UTC"  # naive: taken as UTC


def test_a_fix_is_split_at_its_first_marker() -> None:
    assert rows.split_fix("A. Fix: B. Fix: C.") == ("A.", "B. Fix: C.")


def test_next_step_for_a_gap_written_but_not_yet_visible(hostile_run: RunResult) -> None:
    hostile = next(t for t in hostile_run.tenants if t.tenant_id == HOSTILE_TENANT_ID)
    assert rows.next_step(hostile) == (
        "Re-run the audit to confirm the Security Reader assignment this run wrote (replicating); have a "
        "Global Administrator open the admin-consent link for the Exchange Online permission. Then start a "
        "full sync in the USS dashboard: shared mailboxes are billed as users until it has run."
    )
    # Not written by this run: an Exchange gap alone, with a remediation that did nothing, still asks for it.
    alpine = _tenant(hostile_run, "Alpine Ski House")
    unverified = replace(
        alpine, remediation=replace(alpine.remediation, action=RemediationAction.CREATED_UNVERIFIED)
    )
    assert rows.next_step(unverified).startswith("Have a Global Administrator open the admin-consent link")


def test_cost_bars_name_each_tenant_and_link_to_it(hostile_run: RunResult) -> None:
    bars = rows.cost_by_tenant(hostile_run, top=2)
    lucerne, fabrikam = _tenant(hostile_run, "Lucerne Publishing"), _tenant(hostile_run, "Fabrikam Retail")
    assert bars[:2] == (
        rows.CostBar("Lucerne Publishing", 160.0, f"tenant-{lucerne.tenant_id}"),
        rows.CostBar("Fabrikam Retail", 57.5, f"tenant-{fabrikam.tenant_id}"),
    )
    assert bars[2] == rows.CostBar("6 other tenant(s)", 102.5)
    assert len(rows.cost_by_tenant(hostile_run)) == 8  # the eight tenants that cost money, ten at most


def test_cost_bars_of_equal_cost_go_by_name_and_count_cents(hostile_run: RunResult) -> None:
    contoso = _tenant(hostile_run, "Contoso Healthcare")

    def costing(name: str, cost: float) -> TenantResult:
        return replace(contoso, name=name, tenant_id=name, billing=Billing(1, cost, cost))

    run = replace(
        hostile_run, tenants=(costing("b", 5.0), costing("a", 5.0), costing("c", 0.5), costing("d", 0.25))
    )
    assert [(b.label, b.value) for b in rows.cost_by_tenant(run, top=3)] == [
        ("a", 5.0),
        ("b", 5.0),
        ("c", 0.5),
        ("1 other tenant(s)", 0.25),
    ]
    twelve = replace(hostile_run, tenants=tuple(costing(f"t{n:02}", float(n)) for n in range(1, 13)))
    bars = rows.cost_by_tenant(twelve)
    assert [b.label for b in bars] == [f"t{n:02}" for n in range(12, 2, -1)] + ["2 other tenant(s)"]
    assert bars[-1].value == 3.0


def test_the_highest_severity_goes_by_urgency_not_by_name(hostile_run: RunResult) -> None:
    contoso = _tenant(hostile_run, "Contoso Healthcare")
    low = Finding(FindingCode.SHARED_MAILBOX_LICENSED, Severity.LOW, "Low.")
    medium = Finding(FindingCode.SHARED_MAILBOX_SIGNIN_ENABLED, Severity.MEDIUM, "Medium.")
    info = Finding(FindingCode.SP_LOOKALIKE, Severity.INFO, "Info.")
    mixed = replace(contoso, findings=(info, low, medium))
    (record,) = rows.tenant_rows(replace(hostile_run, tenants=(mixed,))).records()
    assert (record["highest_severity"], record["severity_rank"]) == ("medium", Severity.MEDIUM.rank)


def test_times_are_shown_in_utc_whatever_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert rows.format_datetime(datetime(2025, 1, 2, 3, 4, tzinfo=UTC)) == "2025-01-02 03:04 UTC"
        assert (
            rows.format_datetime(datetime(2025, 1, 2, 3, 4)) == "2025-01-02 03:04 UTC"
        )  # naive: UTC, not local
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(("value", "text"), [(1.4, "1.4 days"), (0.6, "0.6 days")])
def test_only_one_day_reads_as_singular(value: float, text: str) -> None:
    assert rows.format_days(value) == text


def test_a_consent_link_for_an_authority_with_capitals_is_kept(hostile_run: RunResult) -> None:
    alpine = _tenant(hostile_run, "Alpine Ski House")
    link = (
        f"https://Login.Contoso-Proxy.Example/Entra/{alpine.tenant_id}/adminconsent?client_id={VENDOR_APP_ID}"
    )
    finding = Finding(FindingCode.EXCHANGE_PERMISSION_MISSING, Severity.HIGH, f"Missing. Fix: open {link}")
    assert rows.consent_link(replace(alpine, findings=(finding,))) == link


def test_an_unknown_cost_is_listed_after_the_tenants_that_cost_something(hostile_run: RunResult) -> None:
    fabrikam = _tenant(hostile_run, "Fabrikam Retail")
    cheap = replace(fabrikam, name="B cheap", tenant_id="b", billing=Billing(1, 0.5, 0.5))
    unknown = replace(fabrikam, name="A unknown", tenant_id="a", billing=Billing(None, 0.5, None))
    ordered = rows.ordered_tenants(replace(hostile_run, tenants=(unknown, cheap)))
    assert [t.name for t in ordered] == ["B cheap", "A unknown"]


def test_a_held_role_reads_as_held_whatever_remediation_says(hostile_run: RunResult) -> None:
    alpine = _tenant(hostile_run, "Alpine Ski House")  # its gap is Exchange's; the role is held
    for action in (RemediationAction.CREATED, RemediationAction.CREATED_UNVERIFIED):
        checks = rows.tenant_checks(replace(alpine, remediation=replace(alpine.remediation, action=action)))
        assert (checks[2].outcome, checks[2].evidence) == (CheckOutcome.OK, "Held: active, at scope '/'.")


def test_a_census_not_read_is_not_applicable_unless_the_audit_failed(hostile_run: RunResult) -> None:
    margies = replace(_tenant(hostile_run, "Margie's Travel"), mailboxes=None)
    census = rows.tenant_checks(margies)[-1]
    assert (census.outcome, census.evidence) == (
        CheckOutcome.NOT_APPLICABLE,
        "Mailboxes were not classified.",
    )


def test_a_failed_audit_still_lists_the_findings_behind_each_unconfirmed_check(
    hostile_run: RunResult,
) -> None:
    # Lucerne: the roles were read (PIM unavailable), then a later read failed, so the tenant is an error.
    # The report reader still sees the PIM finding under the role check, and a mailbox finding under the
    # census check even when the census itself is gone.
    lucerne = _tenant(hostile_run, "Lucerne Publishing")
    pim = next(f for f in lucerne.findings if f.code is FindingCode.PIM_UNAVAILABLE)
    incomplete = Finding(
        FindingCode.MAILBOX_SCAN_INCOMPLETE, Severity.MEDIUM, "3 users could not be classified."
    )
    failed = replace(
        lucerne,
        status=Status.ERROR,
        findings=(pim, incomplete),
        mailboxes=None,
        billing=Billing(None, lucerne.billing.price_per_mailbox, None, lucerne.billing.currency),
    )
    found = [(c.name, c.outcome.value, c.evidence, c.findings) for c in rows.tenant_checks(failed)]
    assert found[2] == (ROLE, "unknown", FAILED, (pim,))
    assert found[3] == (EXCHANGE, "unknown", FAILED, ())
    assert found[4] == ("Mailbox census", "unknown", "Mailboxes were not classified.", (incomplete,))
