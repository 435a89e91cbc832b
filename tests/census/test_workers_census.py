"""`auditor audit --workers 2` with the incremental census, end to end (issue 13: both cores and incremental
nights together): the real msgraph-sdk and azure-identity over HTTPS against the simulator, two forked
worker processes, the census stored in a real history database, and a clock advanced night by night.

What is proved: the children read the censuses stored by earlier nights and hand the parent every census to
store (one writer), so a second night is incremental for every tenant, with the same verdicts and counts
as a one-process run; a mailbox converted to shared in a tenant audited by a child is caught within
census.max_age_days.
"""

from __future__ import annotations

import io
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditor.app import AuditOptions, audit
from auditor.model import RunResult
from auditor.simulator import GraphSimulator
from auditor.simulator.fleet import FleetSpec, generate_fleet
from auditor.workers import MIN_TENANTS_PER_WORKER
from tests.census.test_incremental_nights import Clock, Fleet

TENANTS = 2 * MIN_TENANTS_PER_WORKER  # the smallest fleet that is split over two workers


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphSimulator]:
    world = generate_fleet(FleetSpec(tenants=TENANTS, users=60, seed=11), mix={"role_missing": 1})
    with GraphSimulator(world, seed=3) as sim:
        for name, value in sim.credentials.items():
            monkeypatch.setenv(name, value)
        yield sim


def night(sim: GraphSimulator, config: Path, out: Path, clock: Clock, workers: int) -> tuple[RunResult, int]:
    sim.reset_observations()
    outcome = audit(
        AuditOptions(config=config, out_dir=out, formats=("json",), census_clock=clock, workers=workers),
        stdout=io.StringIO(),
    )
    requests = [r for r in sim.requests() if r.batch_parent is None and r.route != "identity.token"]
    return outcome.run, len(requests)


def verdicts(run: RunResult) -> list[tuple[str, str, object, object, object]]:
    return [
        (
            t.tenant_id,
            t.status.value,
            t.mailboxes.counts() if t.mailboxes else None,
            t.billing.monthly_cost,
            t.mailboxes.age_days if t.mailboxes else "no census",
        )
        for t in run.tenants
    ]


def stored_censuses(history: Path) -> dict[str, str]:
    with sqlite3.connect(history) as db:
        return dict(db.execute("SELECT tenant_id, updated_at FROM census_state").fetchall())


@pytest.mark.slow  # about 20 s: four nights of 16 tenants, two of them in forked workers
def test_workers_keep_the_incremental_census_and_match_one_process(
    fleet: GraphSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="auditor.workers")
    history_1, history_2 = tmp_path / "one.sqlite", tmp_path / "two.sqlite"
    config_1 = Fleet(fleet, tmp_path).config(max_age_days=3, history_path=history_1, name="one")
    config_2 = Fleet(fleet, tmp_path).config(max_age_days=3, history_path=history_2, name="two")
    clock_1, clock_2 = Clock(), Clock()

    # Night 1: full reads; the two-worker run stores every tenant's census through the parent.
    one_first, one_full = night(fleet, config_1, tmp_path / "out1", clock_1, workers=1)
    caplog.clear()
    two_first, two_full = night(fleet, config_2, tmp_path / "out2", clock_2, workers=2)
    assert any("Auditing with 2 worker processes" in r.getMessage() for r in caplog.records)
    assert verdicts(two_first) == verdicts(one_first)
    assert two_full == one_full
    assert set(stored_censuses(history_2)) == {t.tenant_id.lower() for t in two_first.tenants}
    assert all(t.mailboxes is not None and t.mailboxes.age_days is None for t in two_first.tenants)

    # A mailbox converted to shared in the last tenant (audited by the second worker): Exchange only, so
    # no directory change and no delta entry.
    tenant = list(fleet.world.tenants.values())[-1]
    person = next(tenant.users[i] for i in range(len(tenant.users)) if tenant.users[i].purpose == "user")
    tenant.users.convert_mailbox(person.id, "shared")

    # Night 2: incremental in every tenant, in both runs, with the same answers.
    clock_1.next_night()
    clock_2.next_night()
    one_second, one_incremental = night(fleet, config_1, tmp_path / "out1", clock_1, workers=1)
    before = stored_censuses(history_2)
    two_second, two_incremental = night(fleet, config_2, tmp_path / "out2", clock_2, workers=2)
    assert verdicts(two_second) == verdicts(one_second)
    assert all(
        t.mailboxes is not None and t.mailboxes.age_days == pytest.approx(1.0) for t in two_second.tenants
    )
    assert two_incremental == one_incremental < two_full
    after = stored_censuses(history_2)
    assert set(after) == set(before) and all(after[t] > before[t] for t in after)  # every census re-stored

    # Within max_age_days (3) the converted mailbox is re-read and billed, by the worker that audits it.
    caught = None
    for night_number in range(3, 3 + 3):
        clock_2.next_night()
        run, _ = night(fleet, config_2, tmp_path / "out2", clock_2, workers=2)
        census = run.tenants[-1].mailboxes
        assert census is not None
        if any(m.id == person.id for m in census.shared_mailboxes):
            caught = night_number
            first_census = two_first.tenants[-1].mailboxes
            assert first_census is not None and census.shared == first_census.shared + 1
            break
    assert caught is not None and caught <= 1 + 3
