"""The history rows (auditor.reporting.rows): changes, gap ages merged into the tenants table, the trend
and the history figures, from RunInsights built directly, so each case states exactly what it means."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

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
from tests.history.builders import CONTOSO, DAY, FABRIKAM, NAMES, NORTHWIND, T0, run, tenant

NOW = T0 + 3 * DAY


def gap(days: float, cost: float | None, *, complete: bool = True, runs: int = 2) -> GapAge:
    return GapAge(NOW - timedelta(days=days), NOW, runs, cost, "GBP", complete)


def insight(tenant_id: str, status: Status, change: Change, **kwargs: Any) -> TenantInsight:
    return TenantInsight(tenant_id, NAMES[tenant_id], status, change, **kwargs)


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


@pytest.mark.parametrize(
    ("tenant_insight", "previous", "expected"),
    [
        pytest.param(
            insight(
                CONTOSO,
                Status.NON_COMPLIANT,
                Change.NEW_GAP,
                previous_status=Status.COMPLIANT,
                previous_seen_at=NOW - DAY,
                open_gap=gap(0, 0.0, runs=1),
            ),
            True,
            {
                "change": "New gap",
                "previous_status": "compliant",
                "status": "non_compliant",
                "gap_days": 0.0,
                "gap_accrued_cost": 0.0,
                "new_shared_mailboxes": 0,
            },
            id="new-gap",
        ),
        pytest.param(
            insight(
                CONTOSO,
                Status.REMEDIATED,
                Change.FIXED,
                previous_status=Status.NON_COMPLIANT,
                closed_gap=gap(3, 2.46),
            ),
            True,
            {
                "change": "Gap fixed",
                "previous_status": "non_compliant",
                "status": "remediated",
                "gap_days": 3.0,
                "gap_accrued_cost": 2.46,
                "gap_first_seen": NOW - 3 * DAY,
            },
            id="fixed-with-closed-gap",
        ),
        pytest.param(
            insight(
                CONTOSO,
                Status.AMBIGUOUS,
                Change.CHANGED,
                previous_status=Status.NON_COMPLIANT,
                open_gap=gap(2, 1.5, complete=False),
            ),
            True,
            {"change": "Status changed", "gap_cost_minimum": True, "gap_accrued_cost": 1.5},
            id="changed-partial-cost",
        ),
        pytest.param(
            insight(
                CONTOSO,
                Status.COMPLIANT,
                Change.UNCHANGED,
                previous_status=Status.COMPLIANT,
                new_shared_mailboxes=(MailboxRef("b", "Zeta"), MailboxRef("a", "<b>Alpha</b>")),
            ),
            True,
            {
                "change": "New shared mailboxes",
                "new_shared_mailboxes": 2,
                "new_shared_mailbox_names": "Zeta; <b>Alpha</b>",
                "gap_accrued_cost": 0.0,
                "gap_days": None,
            },
            id="new-mailboxes-only",
        ),
        pytest.param(
            insight(CONTOSO, Status.COMPLIANT, Change.FIRST_SEEN),
            True,
            {"change": "New tenant", "previous_status": ""},
            id="tenant-added-since",
        ),
    ],
)
def test_change_rows(tenant_insight: TenantInsight, previous: bool, expected: dict[str, Any]) -> None:
    table = rows.change_rows(insights(tenant_insight, previous=previous))
    assert [c.key for c in table.columns] == [c.key for c in rows.CHANGE_COLUMNS]
    (record,) = table.records()
    assert record["tenant"] == NAMES[CONTOSO] and record["tenant_id"] == CONTOSO
    for key, value in expected.items():
        assert record[key] == value, key


@pytest.mark.parametrize(
    ("tenant_insight", "previous"),
    [
        pytest.param(
            insight(CONTOSO, Status.COMPLIANT, Change.UNCHANGED, previous_status=Status.COMPLIANT),
            True,
            id="unchanged",
        ),
        pytest.param(
            insight(CONTOSO, Status.ERROR, Change.UNKNOWN, previous_status=Status.NON_COMPLIANT),
            True,
            id="error-is-never-a-change",
        ),
        pytest.param(insight(CONTOSO, Status.COMPLIANT, Change.FIRST_SEEN), False, id="first-run"),
        pytest.param(
            insight(CONTOSO, Status.NON_COMPLIANT, Change.NEW_GAP, open_gap=gap(0, 0.0, runs=1)),
            False,
            id="first-run-gaps-are-not-news",
        ),
    ],
)
def test_not_listed_as_changes(tenant_insight: TenantInsight, previous: bool) -> None:
    table = rows.change_rows(insights(tenant_insight, previous=previous))
    assert len(table) == 0
    assert table.empty_note == (
        "Nothing changed since the previous run."
        if previous
        else "First run: nothing to compare (history starts with this run)."
    )


def test_changes_are_ordered_new_gaps_first() -> None:
    table = rows.change_rows(
        insights(
            insight(
                CONTOSO,
                Status.REMEDIATED,
                Change.FIXED,
                previous_status=Status.NON_COMPLIANT,
                closed_gap=gap(1, 1.0),
            ),
            insight(NORTHWIND, Status.NON_COMPLIANT, Change.NEW_GAP, open_gap=gap(0, 0.0, runs=1)),
            insight(
                FABRIKAM,
                Status.AMBIGUOUS,
                Change.CHANGED,
                previous_status=Status.NON_COMPLIANT,
                open_gap=gap(1, None),
            ),
        )
    )
    assert [r["change_kind"] for r in table.records()] == ["new_gap", "changed", "fixed"]


def test_gap_columns_are_merged_into_the_tenants_table_only_with_insights() -> None:
    the_run = run(
        NOW,
        tenant(CONTOSO, Status.NON_COMPLIANT),
        tenant(FABRIKAM, Status.COMPLIANT),
        tenant(NORTHWIND, Status.ERROR),
        run_id="r2",
    )
    plain = rows.tenant_rows(the_run)
    assert plain.columns == rows.TENANT_COLUMNS
    assert rows.tenant_rows(the_run, None).columns == plain.columns
    assert rows.tenant_rows(the_run, HistoryUnavailable("off")).columns == plain.columns

    merged = rows.tenant_rows(
        the_run,
        insights(
            insight(CONTOSO, Status.NON_COMPLIANT, Change.UNCHANGED, open_gap=gap(2.5, 4.11, runs=3)),
            insight(FABRIKAM, Status.COMPLIANT, Change.UNCHANGED),
            insight(NORTHWIND, Status.ERROR, Change.UNKNOWN),
        ),
    )
    assert [c.key for c in merged.columns] == [
        *(c.key for c in rows.TENANT_COLUMNS[:7]),
        *(c.key for c in rows.GAP_COLUMNS),
        *(c.key for c in rows.TENANT_COLUMNS[7:]),
    ]
    by_id = {r["tenant_id"]: r for r in merged.records()}
    # The plain columns are untouched, in the same order.
    assert [r["tenant_id"] for r in merged.records()] == [r["tenant_id"] for r in plain.records()]
    gap_keys = ("change", "gap_first_seen", "gap_days", "gap_runs", "gap_accrued_cost", "gap_cost_minimum")
    assert [by_id[CONTOSO][k] for k in gap_keys] == ["Unchanged", NOW - 2.5 * DAY, 2.5, 3, 4.11, False]
    assert [by_id[FABRIKAM][k] for k in gap_keys] == ["Unchanged", None, None, 0, 0.0, False]
    # An error is unknown: never "nothing accrued".
    assert [by_id[NORTHWIND][k] for k in gap_keys] == [
        "Unknown: not audited this run",
        None,
        None,
        None,
        None,
        False,
    ]


def _point(run_id: str, days: int, non_compliant: int, cost: float) -> TrendPoint:
    by_status = {s: 0 for s in Status} | {Status.NON_COMPLIANT: non_compliant, Status.COMPLIANT: 1}
    return TrendPoint(
        run_id, T0 + days * DAY, RunMode.AUDIT, non_compliant + 1, by_status, non_compliant * 2, cost, "GBP"
    )


def test_trend_rows() -> None:
    trend = (_point("r0", 0, 1, 5.0), _point("r1", 1, 2, 10.0), _point("r2", 3, 0, 0.0))
    table = rows.trend_rows(insights(trend=trend))
    assert [c.key for c in table.columns] == [c.key for c in rows.TREND_COLUMNS]
    records = table.records()
    assert [
        (r["run_id"], r["started_at"], r["gaps"], r["estimated_monthly_cost"], r["this_run"]) for r in records
    ] == [
        ("r0", T0, 1, 5.0, False),
        ("r1", T0 + DAY, 2, 10.0, False),
        ("r2", T0 + 3 * DAY, 0, 0.0, True),
    ]
    assert [r["status_non_compliant"] for r in records] == [1, 2, 0]
    assert [r["status_compliant"] for r in records] == [1, 1, 1]


def test_history_figures() -> None:
    assert rows.history_figures(None) == ()
    (unavailable,) = rows.history_figures(HistoryUnavailable("the database is locked"))
    assert unavailable.value == "history unavailable: the database is locked"
    assert rows.history_notice(HistoryUnavailable("x")) == "history unavailable: x"
    assert rows.history_notice(None) is None

    figures = {
        f.key: f
        for f in rows.history_figures(
            insights(
                insight(
                    CONTOSO,
                    Status.NON_COMPLIANT,
                    Change.NEW_GAP,
                    open_gap=gap(0, 0.0, runs=1),
                    new_shared_mailboxes=(MailboxRef("m", "M"),),
                ),
                insight(FABRIKAM, Status.AMBIGUOUS, Change.UNCHANGED, open_gap=gap(3, 1.25, complete=False)),
                insight(NORTHWIND, Status.ERROR, Change.UNKNOWN),
            )
        )
    }
    values = {k: f.value for k, f in figures.items()}
    assert values == {
        "history.previous_run_at": NOW - DAY,
        "history.new_gaps": 1,
        "history.fixed_gaps": 0,
        "history.status_changes": 0,
        "history.new_shared_mailboxes": 1,
        "history.unknown": 1,
        "history.open_gaps": 2,
        "history.accrued_cost_total": 1.25,
        "history.trend_runs": 0,
    }
    assert figures["history.accrued_cost_total"].note.startswith("at least")
    first = {f.key: f for f in rows.history_figures(insights(previous=False))}
    assert list(first) == [
        "history.previous_run_at",
        "history.open_gaps",
        "history.accrued_cost_total",
        "history.trend_runs",
    ]
    assert first["history.previous_run_at"].value is None
    assert first["history.previous_run_at"].note == "first run: nothing to compare"
