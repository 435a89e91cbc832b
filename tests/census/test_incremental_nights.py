"""Incremental nights end to end: `auditor audit` (auditor.app.audit) with the real msgraph-sdk and
azure-identity over HTTPS against the simulator, the census stored in a real history database, and a clock
advanced night by night.

What is proved: a second night with no change sends at most 10 % of a full night's Graph requests with
identical verdicts and counts; directory changes (add, rename, soft and hard delete) reach the counts the
next night exactly as a full read counts them; a mailbox converted to shared (no directory change, so no
delta) is caught within census.max_age_days; a token Graph no longer accepts (410), a failed delta read,
`--full-census`, history off and a damaged stored census each make the night a full read.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from auditor.app import AuditOptions, audit
from auditor.model import RunResult
from auditor.simulator import GraphSimulator
from auditor.simulator.faults import FaultRule
from auditor.simulator.fleet import FleetSpec, generate_fleet
from auditor.simulator.world import TenantState, UserRecord

START = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def next_night(self, days: float = 1.0) -> None:
        self.now += timedelta(days=days)


@dataclass
class Fleet:
    sim: GraphSimulator
    directory: Path
    clock: Clock = field(default_factory=Clock)

    @property
    def tenant(self) -> TenantState:
        return next(iter(self.sim.world.tenants.values()))

    def config(
        self,
        *,
        max_age_days: int = 7,
        history: bool = True,
        history_path: Path | None = None,
        name: str = "fleet",
    ) -> Path:
        sim = self.sim
        app = next(iter(sim.world.apps.values()))
        lines = [
            "[auth]",
            f'client_id = "{app.client_id}"',
            f'client_secret_env = "{app.env_prefix}_SECRET"',
            f'authority = "{sim.authority}"',
            f'graph_endpoint = "{sim.graph_url}"',
            f'ca_bundle = "{sim.ca_file}"',
            "allow_custom_endpoints = true",
            "",
            "[billing]",
            "price_per_mailbox = 3.0",
            "",
            "[census]",
            f"max_age_days = {max_age_days}",
            "",
            "[history]",
            f"enabled = {str(history).lower()}",
            *([f'path = "{history_path}"'] if history_path is not None else []),
            "",
        ]
        for tenant in sim.world.tenants.values():
            lines += [
                "[[tenants]]",
                f'name = "{tenant.display_name}"',
                f'tenant_id = "{tenant.tenant_id}"',
                "",
            ]
        path = self.directory / f"{name}.toml"
        path.write_text("\n".join(lines))
        return path

    def night(
        self, *, full_census: bool = False, formats: tuple[str, ...] = ("json",), **config: Any
    ) -> tuple[RunResult, int]:
        """One `auditor audit` run; returns the run and the top-level Graph requests it sent."""
        self.sim.reset_observations()
        outcome = audit(
            AuditOptions(
                config=self.config(**config),
                out_dir=self.directory / "out",
                formats=formats,
                full_census=full_census,
                census_clock=self.clock,
            ),
            stdout=io.StringIO(),
        )
        requests = [r for r in self.sim.requests() if r.batch_parent is None and r.route != "identity.token"]
        return outcome.run, len(requests)


def make_fleet(
    users: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, situation: str = "compliant"
) -> Iterator[Fleet]:
    world = generate_fleet(FleetSpec(tenants=1, users=users, seed=5), mix={situation: 1})
    with GraphSimulator(world, seed=3) as sim:
        for name, value in sim.credentials.items():
            monkeypatch.setenv(name, value)
        yield Fleet(sim, tmp_path)


@pytest.fixture
def small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    # Security Reader missing: the shared mailboxes are billed, so a missed one would show in the cost.
    yield from make_fleet(120, tmp_path, monkeypatch, "role_missing")


def verdicts(run: RunResult) -> list[tuple[str, str, Any, Any]]:
    return [
        (t.tenant_id, t.status.value, t.mailboxes.counts() if t.mailboxes else None, t.billing.monthly_cost)
        for t in run.tenants
    ]


def age(run: RunResult) -> float | None:
    census = run.tenants[0].mailboxes
    assert census is not None
    return census.age_days


@pytest.mark.slow  # about 10 s: two nights of a 2,000-user tenant (200 mailbox $batches) over HTTPS
def test_a_second_night_without_change_sends_at_most_a_tenth_of_the_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for fleet in make_fleet(2000, tmp_path, monkeypatch):
        first, full_requests = fleet.night()
        fleet.clock.next_night()
        second, incremental_requests = fleet.night()
        assert verdicts(second) == verdicts(first)
        assert first.tenants[0].mailboxes is not None and first.tenants[0].mailboxes.shared == 100
        assert age(first) is None  # a full read
        assert age(second) == pytest.approx(1.0)
        assert incremental_requests <= 0.10 * full_requests, (incremental_requests, full_requests)
        # The incremental night read the delta, and no mailbox.
        assert fleet.sim.count(route="users.delta") == 1
        assert fleet.sim.count(route="mailboxSettings.userPurpose") == 0
        assert fleet.sim.count(route="users.list") == 0
        audit_json = (tmp_path / "out" / "audit.json").read_text()
        assert '"census_age_days": 1.0' in audit_json


def test_directory_changes_reach_the_next_night_as_a_full_read_counts_them(small: Fleet) -> None:
    first, _ = small.night()
    users = small.tenant.users
    some = [users[i] for i in range(len(users)) if users[i].purpose == "user"][:3]
    users.add(
        UserRecord(
            id="0f0f0f0f-1111-4222-8333-444455556666",
            display_name="Escrow Desk",
            user_principal_name="escrow@t00000.example",
            mail="escrow@t00000.example",
            account_enabled=False,
            licensed=False,
            purpose="shared",
        )
    )
    users.update(some[0].id, display_name="Renamed Person")
    users.remove(some[1].id)  # soft delete: @removed reason "changed"
    users.remove(some[2].id, hard=True)
    small.clock.next_night()
    second, _ = small.night(formats=("json", "html", "xlsx"))
    # The reports state the census's age (read back from the files written).
    html = (small.directory / "out" / "audit.html").read_text()
    assert "Incremental census: the oldest mailbox classification is 1.0 day(s) old." in html
    sheet = openpyxl.load_workbook(small.directory / "out" / "audit.xlsx", read_only=True)
    headers = [[c.value for c in row] for ws in sheet.worksheets for row in ws.iter_rows(max_row=12) if row]
    assert any("Census age (days)" in row for row in headers)
    # Only the new user's mailbox and the renamed one's were read.
    assert small.sim.count(route="mailboxSettings.userPurpose") == 2
    small.clock.next_night()
    third, _ = small.night(full_census=True)
    assert age(third) is None
    assert small.sim.count(route="users.list") == 1
    assert verdicts(second) == verdicts(third)
    second_census, first_census = second.tenants[0].mailboxes, first.tenants[0].mailboxes
    assert second_census is not None and first_census is not None
    assert second_census.shared == first_census.shared + 1
    assert second_census.user == first_census.user - 2
    names = {m.display_name for m in second_census.shared_mailboxes}
    assert "Escrow Desk" in names


def test_a_mailbox_converted_to_shared_is_caught_within_max_age_days(small: Fleet) -> None:
    first, _ = small.night()
    census = first.tenants[0].mailboxes
    assert census is not None
    users = small.tenant.users
    person = next(users[i] for i in range(len(users)) if users[i].purpose == "user")
    users.convert_mailbox(person.id, "shared")  # Exchange only: no directory change, no delta entry
    caught_on = None
    read_per_night = []
    for night in range(2, 2 + 7):
        small.clock.next_night()
        run, _ = small.night()
        read_per_night.append(small.sim.count(route="mailboxSettings.userPurpose"))
        tonight = run.tenants[0].mailboxes
        assert tonight is not None
        found = any(m.id == person.id for m in tonight.shared_mailboxes)
        if caught_on is None and found:
            caught_on = night
            assert tonight.shared == census.shared + 1
            assert run.tenants[0].billing.billed_shared_mailboxes == census.shared + 1
        if caught_on is not None:
            assert found  # once caught it stays caught
        tonight_age = age(run)
        assert tonight_age is not None and tonight_age <= 7.0
    assert caught_on is not None and caught_on <= 1 + 7
    mailboxes = census.total_users - census.no_mailbox
    # The re-reads are spread: nothing the night after the full read, and no night is a full read again.
    assert read_per_night[0] == 0
    assert max(read_per_night) < mailboxes
    assert sum(read_per_night) >= mailboxes  # every mailbox was re-read within the week


def test_an_expired_delta_token_makes_a_full_read(small: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    first, full_requests = small.night()
    small.tenant.users.token_epoch += 1  # every token issued so far: 410 Gone, resync required
    small.clock.next_night()
    second, requests = small.night()
    assert small.sim.count(route="users.delta", status=410) == 1
    assert small.sim.count(route="users.list") == 1
    assert age(second) is None
    assert verdicts(second) == verdicts(first)
    assert requests == full_requests + 1  # the refused delta round
    assert "410 Gone" in caplog.text
    small.clock.next_night()
    third, _ = small.night()  # the new token works again
    assert age(third) is not None and small.sim.count(route="users.list") == 0


def test_a_failed_delta_read_is_never_taken_for_no_change(small: Fleet) -> None:
    first, _ = small.night()
    small.tenant.users.add(
        UserRecord(
            id="1f0f0f0f-1111-4222-8333-444455556666",
            display_name="Night Desk",
            user_principal_name="night@t00000.example",
            mail="night@t00000.example",
            account_enabled=False,
            licensed=False,
            purpose="shared",
        )
    )
    # Refused outright (a 5xx would be retried for the reader's patience first: the same end, minutes later).
    small.sim.add_fault_rule(FaultRule(route="users.delta", status=400, code="BadRequest", times=50))
    small.clock.next_night()
    second, _ = small.night()
    small.sim.clear_fault_rules()
    assert small.sim.count(route="users.list") == 1  # read in full instead
    census = second.tenants[0].mailboxes
    assert census is not None and age(second) is None
    first_census = first.tenants[0].mailboxes
    assert first_census is not None and census.shared == first_census.shared + 1


@pytest.mark.parametrize("how", ["history_off", "damaged", "full_census"])
def test_full_reads_when_the_stored_census_cannot_be_used(small: Fleet, how: str) -> None:
    first, full_requests = small.night()
    small.clock.next_night()
    if how == "damaged":
        with sqlite3.connect(small.directory / "history.sqlite") as db:
            db.execute("UPDATE census_state SET census_json = x'00ff'")
    options: dict[str, Any] = {"history": False} if how == "history_off" else {}
    second, requests = small.night(full_census=how == "full_census", **options)
    assert age(second) is None
    assert small.sim.count(route="users.list") == 1
    assert verdicts(second) == verdicts(first)
    if how == "history_off":
        assert small.sim.count(route="users.delta") == 0  # no token is asked for: nowhere to keep it
        assert requests == full_requests - 1
    else:
        assert requests == full_requests
    if how != "history_off":
        small.clock.next_night()
        third, _ = small.night()  # the census was stored again: incremental once more
        assert age(third) is not None
