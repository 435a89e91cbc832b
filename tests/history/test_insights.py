"""Changes since the previous run, gap age, accrued cost and trend: the definitions in
auditor/history/insights.py, table by table, then over several recorded runs with fixed timestamps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from auditor.history.insights import (
    TREND_RUNS,
    Change,
    MailboxRef,
    Observation,
    accrued_cost,
    gap_streak,
    tenant_insight,
)
from auditor.model import RemediationAction, RunMode, Status
from tests.history.builders import CONTOSO, DAY, FABRIKAM, NORTHWIND, T0, record_all, run, tenant

C, N, A, R, X, E = (
    Status.COMPLIANT,
    Status.NON_COMPLIANT,
    Status.AMBIGUOUS,
    Status.REMEDIATED,
    Status.NOT_CONNECTED,
    Status.ERROR,
)


def observations(*statuses: Status, costs: Sequence[float | None] | None = None) -> list[Observation]:
    """One observation a day from T0."""
    costs = (
        costs if costs is not None else [10.0 if s is N else None if s in (A, E) else 0.0 for s in statuses]
    )
    return [
        Observation(f"r{i}", T0 + i * DAY, s, c) for i, (s, c) in enumerate(zip(statuses, costs, strict=True))
    ]


# --- gap streak --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "first_day", "runs"),
    [
        ((C, N, N), 1, 2),
        ((N, E, N), 0, 2),  # an error inside the streak neither breaks nor counts
        ((C, E, N), 2, 1),  # nor extends it backwards past a known non-gap
        ((N, A, N), 0, 3),  # ambiguous and non_compliant are both gaps
        ((N, X, N), 2, 1),
        ((N, R, N), 2, 1),  # a remediated run ended the earlier streak
        ((N, E), 0, 1),  # trailing error: the last known gap's streak
        ((C,), None, 0),
        ((E, E), None, 0),
        ((), None, 0),
    ],
)
def test_gap_streak(statuses: tuple[Status, ...], first_day: int | None, runs: int) -> None:
    streak = gap_streak(observations(*statuses))
    assert len(streak) == runs
    assert (streak[0].at if streak else None) == (None if first_day is None else T0 + first_day * DAY)


# --- accrued cost ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("costs", "until_day", "expected", "complete"),
    [
        ([10.0], 0, 0.0, True),  # the night a gap is first seen
        ([10.0], 3, 0.99, True),  # 10 * 3 / 30.4375 = 0.9856
        ([10.0, 20.0], 3, 1.64, True),  # 10 * 1 + 20 * 2 = 50 day-units / 30.4375 = 1.6427
        ([30.0], 30.4375, 30.0, True),  # one average month costs the monthly price
        ([10.0, None], 2, 0.66, True),  # an unknown cost carries the last known one forward
        ([None, 10.0], 2, 0.33, False),  # no cost known for the first day: a minimum
        ([None], 1, None, False),
    ],
)
def test_accrued_cost(
    costs: list[float | None], until_day: float, expected: float | None, complete: bool
) -> None:
    streak = observations(*(N if c is not None else A for c in costs), costs=costs)
    assert accrued_cost(streak, T0 + until_day * DAY, "GBP") == (expected, complete)


def test_accrued_cost_ignores_another_currency_and_says_so() -> None:
    streak = [Observation("r0", T0, N, 10.0, "USD"), Observation("r1", T0 + DAY, N, 10.0, "GBP")]
    assert accrued_cost(streak, T0 + 2 * DAY, "GBP") == (0.33, False)


# --- change against the baseline ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earlier", "now", "change", "previous"),
    [
        ((), C, Change.FIRST_SEEN, None),
        ((), N, Change.NEW_GAP, None),
        ((), E, Change.UNKNOWN, None),
        ((C,), N, Change.NEW_GAP, C),
        ((X,), A, Change.NEW_GAP, X),
        ((N,), C, Change.FIXED, N),
        ((A,), R, Change.FIXED, A),
        ((N,), E, Change.UNKNOWN, N),  # an error is never a fix
        ((N, E), C, Change.FIXED, N),  # the baseline skips the error run
        ((C, E), N, Change.NEW_GAP, C),
        ((E,), C, Change.FIRST_SEEN, None),
        ((N,), A, Change.CHANGED, N),  # still a gap, another kind
        ((N,), X, Change.CHANGED, N),  # gap gone, but not fixed
        ((R,), C, Change.CHANGED, R),  # the vendor's full sync after a remediation
        ((C,), C, Change.UNCHANGED, C),
        ((N, N), N, Change.UNCHANGED, N),
    ],
)
def test_change(earlier: tuple[Status, ...], now: Status, change: Change, previous: Status | None) -> None:
    history = observations(*earlier, now)
    insight = tenant_insight(tenant_id=CONTOSO, name="Contoso", current=history[-1], earlier=history[:-1])
    assert (insight.change, insight.previous_status) == (change, previous)
    assert (insight.open_gap is not None) == (now in (N, A))
    assert (insight.closed_gap is not None) == (now not in (N, A, E) and previous in (N, A))


def test_gap_age_of_an_open_and_of_a_closed_gap() -> None:
    history = observations(C, N, E, N, C)
    still_open = tenant_insight(tenant_id=CONTOSO, name="Contoso", current=history[3], earlier=history[:3])
    assert still_open.open_gap is not None
    assert (still_open.open_gap.first_seen, still_open.open_gap.days_open, still_open.open_gap.runs) == (
        T0 + DAY,
        2.0,
        2,
    )
    assert still_open.open_gap.accrued_cost == 0.66  # 10 a month for two days
    fixed = tenant_insight(tenant_id=CONTOSO, name="Contoso", current=history[4], earlier=history[:4])
    assert fixed.change is Change.FIXED and fixed.open_gap is None and fixed.closed_gap is not None
    assert (fixed.closed_gap.first_seen, fixed.closed_gap.until, fixed.closed_gap.accrued_cost) == (
        T0 + DAY,
        T0 + 4 * DAY,
        0.99,
    )


@pytest.mark.parametrize(
    ("now", "before", "new"),
    [
        (["a", "b", "c"], ["a", "b"], ["c"]),
        (["a"], ["a", "b"], []),  # removed ones are not "new"
        (["a", "b"], None, []),  # no earlier census: this one is the baseline
        (None, ["a"], []),  # no census now
        (["z", "y"], [], ["y", "z"]),  # sorted by display name
    ],
)
def test_new_shared_mailboxes(now: list[str] | None, before: list[str] | None, new: list[str]) -> None:
    history = observations(N, N)
    insight = tenant_insight(
        tenant_id=CONTOSO,
        name="Contoso",
        current=history[1],
        earlier=history[:1],
        shared_mailboxes=None if now is None else [MailboxRef(i, f"Mailbox {i}") for i in now],
        previous_mailbox_ids=before,
    )
    assert [m.id for m in insight.new_shared_mailboxes] == new


# --- over recorded runs -------------------------------------------------------------------------------------


def test_several_runs(tmp_path: Path) -> None:
    """Fabrikam's gap (10 a month) is fixed after three days; Contoso's opens on day 1 with a new mailbox and
    is remediated on day 4 in a run of its own; Northwind cannot be audited on day 1."""
    store = record_all(
        tmp_path / "h.sqlite",
        run(
            T0,
            tenant(CONTOSO, C),
            tenant(FABRIKAM, N, shared=("f1", "f2", "f3", "f4")),
            tenant(NORTHWIND, C),
            run_id="d0",
        ),
        run(
            T0 + DAY,
            tenant(CONTOSO, N, shared=("m1", "m2", "m3")),
            tenant(FABRIKAM, N, shared=("f1", "f2", "f3", "f4")),
            tenant(NORTHWIND, E),
            run_id="d1",
        ),
        run(
            T0 + 3 * DAY,
            tenant(CONTOSO, N, shared=("m1", "m2", "m3")),
            tenant(FABRIKAM, C, shared=("f1", "f2", "f3", "f4", "f5")),
            tenant(NORTHWIND, C),
            run_id="d3",
        ),
        run(
            T0 + 4 * DAY,
            tenant(CONTOSO, R, shared=("m1", "m2", "m3"), remediation=RemediationAction.CREATED),
            run_id="d4",
            mode=RunMode.REMEDIATE,
        ),
    )

    first = store.insights("d0")
    assert first.previous_run_id is None and len(first.trend) == 1
    assert [t.change for t in first.tenants] == [Change.FIRST_SEEN, Change.NEW_GAP, Change.FIRST_SEEN]
    assert first.new_shared_mailboxes == ()  # a first census is the baseline

    d1 = store.insights("d1")
    assert (d1.previous_run_id, d1.previous_run_at) == ("d0", T0)
    assert [t.name for t in d1.new_gaps] == ["Contoso"] and d1.fixed_gaps == ()
    contoso = d1.for_tenant(CONTOSO)
    assert contoso is not None and [m.id for m in contoso.new_shared_mailboxes] == ["m3"]
    assert [m.display_name for m in contoso.new_shared_mailboxes] == ["Mailbox m3"]
    assert contoso.open_gap is not None and contoso.open_gap.first_seen == T0 + DAY
    assert contoso.open_gap.accrued_cost == 0.0
    northwind = d1.for_tenant(NORTHWIND)
    assert northwind is not None and northwind.change is Change.UNKNOWN and northwind.previous_status is C
    assert [t.name for t in d1.unknown] == ["Northwind"]
    fabrikam = d1.for_tenant(FABRIKAM)
    assert fabrikam is not None and fabrikam.change is Change.UNCHANGED
    assert fabrikam.open_gap is not None and fabrikam.open_gap.accrued_cost == 0.33  # 10 * 1 / 30.4375

    d3 = store.insights("d3")
    assert d3.new_gaps == () and [t.name for t in d3.fixed_gaps] == ["Fabrikam"]
    fixed = d3.for_tenant(FABRIKAM)
    assert fixed is not None and fixed.closed_gap is not None
    assert (fixed.closed_gap.first_seen, fixed.closed_gap.runs, fixed.closed_gap.accrued_cost) == (
        T0,
        2,
        0.99,
    )
    assert [m.id for m in fixed.new_shared_mailboxes] == ["f5"]
    assert d3.for_tenant(NORTHWIND).change is Change.UNCHANGED  # type: ignore[union-attr]
    open_gap = d3.for_tenant(CONTOSO).open_gap  # type: ignore[union-attr]
    assert open_gap is not None and (open_gap.first_seen, open_gap.days_open) == (T0 + DAY, 2.0)
    assert open_gap.accrued_cost == 0.49  # 7.50 a month for two days
    assert [t.name for t in d3.open_gaps] == ["Contoso"] and d3.accrued_cost_total == 0.49

    d4 = store.insights("d4")  # a run of one tenant: the others keep their own history
    assert [t.tenant_id for t in d4.tenants] == [CONTOSO]
    assert d4.for_tenant(CONTOSO).change is Change.FIXED  # type: ignore[union-attr]
    assert d4.for_tenant(CONTOSO).closed_gap.accrued_cost == 0.74  # type: ignore[union-attr]  # 7.5 * 3 / 30.4375
    assert [(p.run_id, p.tenants, p.gaps) for p in d4.trend] == [
        ("d0", 3, 1),
        ("d1", 3, 2),
        ("d3", 3, 1),
        ("d4", 1, 0),
    ]
    assert d4.trend[1].tenants_with_unknown_cost == 1 and d4.trend[1].estimated_monthly_cost == 17.5
    assert d4.trend[-1].mode is RunMode.REMEDIATE and d4.trend[-1].by_status[R] == 1


def test_trend_is_the_last_thirty_runs_up_to_the_run(tmp_path: Path) -> None:
    runs = [
        run(T0 + i * DAY, tenant(CONTOSO, N if i % 2 else C), run_id=f"r{i:02}")
        for i in range(TREND_RUNS + 5)
    ]
    store = record_all(tmp_path / "h.sqlite", *runs)
    latest = store.insights(runs[-1].run_id)
    assert [p.run_id for p in latest.trend] == [r.run_id for r in runs[-TREND_RUNS:]]
    assert [p.started_at for p in latest.trend] == sorted(p.started_at for p in latest.trend)
    older = store.insights("r09")  # later runs do not leak into an older run's view
    assert [p.run_id for p in older.trend] == [f"r{i:02}" for i in range(10)]
    assert older.previous_run_id == "r08"


def test_insights_serialise_to_json(tmp_path: Path) -> None:
    import dataclasses
    import json

    store = record_all(
        tmp_path / "h.sqlite",
        run(T0, tenant(CONTOSO, N), run_id="a"),
        run(T0 + DAY, tenant(CONTOSO, N, shared=("m1", "m2", "m9")), run_id="b"),
    )
    insights = store.insights("b")
    assert dataclasses.asdict(insights)["tenants"][0]["tenant_id"] == CONTOSO  # plain data all the way down
    data = json.loads(json.dumps(insights.to_dict()))
    (contoso,) = data["tenants"]
    assert contoso["change"] == "unchanged" and contoso["new_shared_mailboxes"] == [
        {"id": "m9", "display_name": "Mailbox m9"}
    ]
    assert contoso["open_gap"]["first_seen"] == T0.isoformat() and contoso["open_gap"]["days_open"] == 1.0
    assert [p["run_id"] for p in data["trend"]] == ["a", "b"]
    assert isinstance(datetime.fromisoformat(data["as_of"]), datetime)


# --- last_status: what `on_change` notifications compare with ------------------------------------------------


@pytest.mark.parametrize(
    ("earlier", "expected"),
    [
        ((), None),  # never seen: a change
        ((C, N), N),
        ((N, E), E),  # error included: error -> error is no change
        ((E, C), C),
    ],
)
def test_last_status_is_the_latest_earlier_status(
    earlier: tuple[Status, ...], expected: Status | None
) -> None:
    history = observations(*earlier, E)
    insight = tenant_insight(tenant_id=CONTOSO, name="Contoso", current=history[-1], earlier=history[:-1])
    assert insight.last_status is expected


def test_last_status_skips_runs_that_did_not_include_the_tenant(tmp_path: Path) -> None:
    """A night with only some tenants (--tenant) in between: the others compare with the night before."""
    store = record_all(
        tmp_path / "h.sqlite",
        run(T0, tenant(CONTOSO, C), tenant(FABRIKAM, E), run_id="full1"),
        run(T0 + DAY, tenant(CONTOSO, N), run_id="contoso-only"),
        run(T0 + 2 * DAY, tenant(CONTOSO, N), tenant(FABRIKAM, E), tenant(NORTHWIND, C), run_id="full2"),
    )
    latest = store.insights("full2")
    assert latest.previous_run_id == "contoso-only"
    last = {t.tenant_id: t.last_status for t in latest.tenants}
    assert last == {CONTOSO: N, FABRIKAM: E, NORTHWIND: None}
    fabrikam = latest.for_tenant(FABRIKAM)
    assert fabrikam is not None and fabrikam.previous_status is None  # the gap baseline ignores errors
