"""The history tables and figures exactly as a report reader sees them: headers, labels, formats, notes and
every value of a row (auditor.reporting.rows), from RunInsights built directly."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from auditor.history import (
    Change,
    GapAge,
    HistoryUnavailable,
    MailboxRef,
    RunInsights,
    TenantInsight,
    TrendPoint,
)
from auditor.model import RunMode, Status
from auditor.reporting import rows
from auditor.reporting.rows import Column, ColumnKind, Figure
from tests.history.builders import CONTOSO, DAY, FABRIKAM, NAMES, NORTHWIND, T0, run, tenant

NOW = T0 + 3 * DAY
COUNT, MONEY, DATETIME = ColumnKind.COUNT, ColumnKind.MONEY, ColumnKind.DATETIME

TREND_HEADERS = [
    Column("started_at", "Run started (UTC)", DATETIME),
    Column("run_id", "Run ID"),
    Column("mode", "Mode"),
    Column("tenants", "Tenants", COUNT),
    Column("status_non_compliant", "Non-compliant", COUNT),
    Column("status_error", "Error", COUNT),
    Column("status_ambiguous", "Ambiguous", COUNT),
    Column("status_remediated", "Remediated", COUNT),
    Column("status_not_connected", "Not connected", COUNT),
    Column("status_compliant", "Compliant", COUNT),
    Column("gaps", "Tenants with a gap", COUNT),
    Column("billed_shared_mailboxes", "Shared mailboxes billed", COUNT),
    Column("estimated_monthly_cost", "Estimated monthly cost", MONEY),
    Column("tenants_with_unknown_cost", "Tenants with unknown cost", COUNT),
]


def gap(
    days: float, cost: float | None, *, complete: bool = True, runs: int = 2, currency: str = "GBP"
) -> GapAge:
    return GapAge(NOW - timedelta(days=days), NOW, runs, cost, currency, complete)


def insight(tenant_id: str, status: Status, change: Change, **kwargs: object) -> TenantInsight:
    return TenantInsight(tenant_id, NAMES[tenant_id], status, change, **kwargs)  # type: ignore[arg-type]


def insights(
    *tenants: TenantInsight, previous: bool = True, trend: tuple[TrendPoint, ...] = ()
) -> RunInsights:
    return RunInsights(
        run_id="r2",
        as_of=NOW,
        currency="GBP",
        tenants=tenants,
        trend=trend,
        previous_run_id="r1" if previous else None,
        previous_run_at=NOW - DAY if previous else None,
    )


def test_the_trend_table_has_a_column_per_status_with_its_label() -> None:
    table = rows.trend_rows(insights())
    assert list(table.columns) == TREND_HEADERS
    # TREND_COLUMNS is built once, at import: the builder itself is checked as well, so that a change to it
    # is seen by tests that run after the import (mutation testing imports the module only once).
    assert list(rows._trend_columns()) == TREND_HEADERS
    assert (table.name, table.empty_note, len(table)) == ("Trend", "No complete run in the history yet.", 0)


def test_a_trend_row_holds_every_total_of_its_run() -> None:
    point = TrendPoint(
        "r2",
        NOW,
        None,  # a mode a newer version wrote
        5,
        {Status.NON_COMPLIANT: 2, Status.AMBIGUOUS: 1},  # the other statuses: none
        7,
        17.5,
        "EUR",
        tenants_with_unknown_cost=1,
    )
    audit = replace(point, run_id="r1", mode=RunMode.AUDIT, started_at=NOW - DAY)
    (first, record) = rows.trend_rows(insights(trend=(audit, point))).records()
    assert record == {
        "started_at": NOW,
        "run_id": "r2",
        "mode": "unknown",
        "tenants": 5,
        "status_non_compliant": 2,
        "status_error": 0,
        "status_ambiguous": 1,
        "status_remediated": 0,
        "status_not_connected": 0,
        "status_compliant": 0,
        "gaps": 3,
        "billed_shared_mailboxes": 7,
        "estimated_monthly_cost": 17.5,
        "tenants_with_unknown_cost": 1,
        "currency": "EUR",
        "this_run": True,
    }
    assert (first["mode"], first["this_run"]) == ("audit", False)


def test_history_figures_as_the_summary_shows_them() -> None:
    figures = rows.history_figures(
        insights(
            insight(CONTOSO, Status.NON_COMPLIANT, Change.NEW_GAP, open_gap=gap(0, 0.0, runs=1)),
            insight(FABRIKAM, Status.REMEDIATED, Change.FIXED, closed_gap=gap(2, 5.0)),
            insight(
                NORTHWIND,
                Status.AMBIGUOUS,
                Change.CHANGED,
                open_gap=gap(3, 1.25),
                new_shared_mailboxes=(MailboxRef("m", "M"), MailboxRef("n", "N")),
            ),
            trend=(),
        )
    )
    assert figures == (
        Figure("history.previous_run_at", "Previous run (UTC)", NOW - DAY, DATETIME, ""),
        Figure("history.new_gaps", "New gaps", 1, COUNT),
        Figure("history.fixed_gaps", "Gaps fixed", 1, COUNT),
        Figure("history.status_changes", "Other status changes", 1, COUNT),
        Figure("history.new_shared_mailboxes", "New shared mailboxes", 2, COUNT),
        Figure("history.unknown", "Tenants not audited this run", 0, COUNT, ""),
        Figure("history.open_gaps", "Open gaps", 2, COUNT),
        Figure("history.accrued_cost_total", "Accrued since the gaps opened", 1.25, MONEY, ""),
        Figure("history.trend_runs", "Runs in the trend", 0, COUNT),
    )


def test_history_figures_say_when_the_accrued_cost_is_a_minimum_and_who_was_not_audited() -> None:
    point = TrendPoint("r2", NOW, RunMode.AUDIT, 3, {}, 0, 0.0, "GBP")
    figures = {
        f.key: f
        for f in rows.history_figures(
            insights(
                insight(CONTOSO, Status.NON_COMPLIANT, Change.UNCHANGED, open_gap=gap(1, None)),
                insight(
                    FABRIKAM, Status.NON_COMPLIANT, Change.UNCHANGED, open_gap=gap(1, 2.0, complete=False)
                ),
                insight(NORTHWIND, Status.ERROR, Change.UNKNOWN),
                trend=(point, point),
            )
        )
    }
    total = figures["history.accrued_cost_total"]
    assert total.note == "at least: 2 open gap(s) have an unknown or partly unknown cost"
    assert figures["history.unknown"] == Figure(
        "history.unknown", "Tenants not audited this run", 1, COUNT, "errors: whether they changed is unknown"
    )
    assert figures["history.trend_runs"].value == 2


def test_an_open_gap_costed_in_another_currency_makes_the_total_a_minimum() -> None:
    figures = rows.history_figures(
        insights(
            insight(CONTOSO, Status.NON_COMPLIANT, Change.UNCHANGED, open_gap=gap(1, 2.0, currency="EUR"))
        )
    )
    total = next(f for f in figures if f.key == "history.accrued_cost_total")
    assert total.note == "at least: 1 open gap(s) have an unknown or partly unknown cost"
    fully_known = rows.history_figures(
        insights(insight(CONTOSO, Status.NON_COMPLIANT, Change.UNCHANGED, open_gap=gap(1, 2.0)))
    )
    assert next(f for f in fully_known if f.key == "history.accrued_cost_total").note == ""


def test_history_figures_of_a_first_run_and_of_no_history() -> None:
    assert rows.history_figures(insights(previous=False)) == (
        Figure(
            "history.previous_run_at", "Previous run (UTC)", None, DATETIME, "first run: nothing to compare"
        ),
        Figure("history.open_gaps", "Open gaps", 0, COUNT),
        Figure("history.accrued_cost_total", "Accrued since the gaps opened", 0.0, MONEY, ""),
        Figure("history.trend_runs", "Runs in the trend", 0, COUNT),
    )
    assert rows.history_figures(HistoryUnavailable("locked")) == (
        Figure("history.unavailable", "History", "history unavailable: locked"),
    )
    assert rows.history_figures(None) == ()


def test_gap_rows_one_per_tenant_with_every_value() -> None:
    table = rows.gap_rows(
        insights(
            insight(CONTOSO, Status.NON_COMPLIANT, Change.UNCHANGED, open_gap=gap(1.23456, 3.0, runs=4)),
            insight(FABRIKAM, Status.COMPLIANT, Change.UNCHANGED),
            insight(CONTOSO, Status.COMPLIANT, Change.UNCHANGED),  # listed twice: the first one counts
        )
    )
    assert (table.name, table.empty_note) == ("Gap ages", "")
    assert [(c.key, c.header) for c in table.columns] == [
        ("tenant", "Tenant"),
        ("tenant_id", "Tenant ID"),
        *((c.key, c.header) for c in rows.GAP_COLUMNS),
    ]
    assert list(table.frame.index) == [0, 1]
    assert table.records() == [
        {
            "tenant": "Contoso",
            "tenant_id": CONTOSO,
            "change": "Unchanged",
            "gap_first_seen": NOW - timedelta(days=1.23456),
            "gap_days": 1.23,
            "gap_runs": 4,
            "gap_accrued_cost": 3.0,
            "gap_cost_minimum": False,
        },
        {
            "tenant": "Fabrikam",
            "tenant_id": FABRIKAM,
            "change": "Unchanged",
            "gap_first_seen": None,
            "gap_days": None,
            "gap_runs": 0,
            "gap_accrued_cost": 0.0,
            "gap_cost_minimum": False,
        },
    ]


def test_a_tenant_history_does_not_list_keeps_its_row_in_the_tenants_table() -> None:
    the_run = run(NOW, tenant(CONTOSO, Status.NON_COMPLIANT), tenant(FABRIKAM, Status.COMPLIANT), run_id="r2")
    merged = rows.tenant_rows(the_run, insights(insight(CONTOSO, Status.NON_COMPLIANT, Change.UNCHANGED)))
    assert (merged.name, merged.empty_note) == ("Tenants", "No tenants were audited in this run.")
    by_id = {r["tenant_id"]: r for r in merged.records()}
    assert set(by_id) == {CONTOSO, FABRIKAM}
    assert (by_id[FABRIKAM]["change"], by_id[FABRIKAM]["gap_runs"]) == (None, None)
    assert by_id[CONTOSO]["change"] == "Unchanged"


def test_a_change_row_holds_every_value() -> None:
    table = rows.change_rows(
        insights(
            insight(
                CONTOSO,
                Status.NOT_CONNECTED,
                Change.CHANGED,
                previous_status=Status.NON_COMPLIANT,
                previous_seen_at=NOW - DAY,
                closed_gap=gap(2, 5.0, runs=2),  # the gap ended without a fix: its age is still shown
                new_shared_mailboxes=(MailboxRef("b", "Zeta"),),
            ),
        )
    )
    assert (table.name, table.empty_note) == ("Changes", "Nothing changed since the previous run.")
    assert table.records() == [
        {
            "tenant": "Contoso",
            "tenant_id": CONTOSO,
            "change": "Status changed",
            "previous_status": "non_compliant",
            "status": "not_connected",
            "previous_seen_at": NOW - DAY,
            "new_shared_mailboxes": 1,
            "new_shared_mailbox_names": "Zeta",
            "gap_first_seen": NOW - 2 * DAY,
            "gap_days": 2.0,
            "gap_runs": 2,
            "gap_accrued_cost": 5.0,
            "gap_cost_minimum": False,
            "change_kind": "changed",
            "mailbox_names": ("Zeta",),
        }
    ]


def test_new_mailboxes_of_a_tenant_not_audited_are_listed_after_the_changes() -> None:
    table = rows.change_rows(
        insights(
            insight(CONTOSO, Status.ERROR, Change.UNKNOWN, new_shared_mailboxes=(MailboxRef("m", "M"),)),
            insight(FABRIKAM, Status.NON_COMPLIANT, Change.NEW_GAP, open_gap=gap(0, 0.0, runs=1)),
            insight(
                NORTHWIND, Status.COMPLIANT, Change.UNCHANGED, new_shared_mailboxes=(MailboxRef("n", "N"),)
            ),
        )
    )
    assert [(r["tenant"], r["change"]) for r in table.records()] == [
        ("Fabrikam", "New gap"),
        ("Northwind", "New shared mailboxes"),
        ("Contoso", "Unknown: not audited this run"),
    ]


def test_an_empty_gap_table_still_has_its_columns() -> None:
    table = rows.gap_rows(insights())
    assert list(table.frame.columns) == ["tenant", "tenant_id", *(c.key for c in rows.GAP_COLUMNS)]
    the_run = run(NOW, tenant(CONTOSO, Status.COMPLIANT), run_id="r2")
    (record,) = rows.tenant_rows(the_run, insights()).records()  # history knows none of the run's tenants
    assert (record["change"], record["gap_days"]) == (None, None)
