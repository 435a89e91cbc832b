"""The applier when a new assignment takes a while to be readable (issue 10 case 8), with fakes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import ErrorCode, GraphError
from auditor.model import RemediationAction
from auditor.remediation import Applier, Journal
from tests.unit.test_evaluate import make_sp
from tests.unit.test_remediation import Answer, FakeGraph, _entry


@dataclass
class Replicating(FakeGraph):
    """A FakeGraph whose writes become readable only after `lag` more reads (None: never in this run)."""

    lag: int | None = 0
    filters: list[str] = field(default_factory=list)
    written_at_read: int | None = None

    async def role_assignments(self, odata_filter: str) -> list[dict[str, Any]]:
        self.filters.append(odata_filter)
        visible = self.present and (
            self.written_at_read is None
            or (self.lag is not None and self.reads - self.written_at_read >= self.lag)
        )
        self.reads += 1
        self.log.append("read")
        return [
            {"id": "ra-1", "principalId": make_sp().id, "roleDefinitionId": "x", "directoryScopeId": "/"}
        ] + (
            [
                {
                    "id": "ra-1",
                    "principalId": make_sp().id,
                    "roleDefinitionId": "5d6b6bb7-de71-4623-b4af-96380a352509",
                    "directoryScopeId": "/",
                }
            ]
            if visible
            else []
        )

    async def create(self, principal_id: str, role: str, scope: str) -> Answer:
        was_present = self.present
        answer = await super().create(principal_id, role, scope)
        if self.present and not was_present:
            self.written_at_read = self.reads
        return answer


class Clock:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.mark.parametrize(
    ("make_graph", "action", "posts"),
    [
        # created, readable after three more reads: waited for, confirmed
        (lambda: Replicating([Answer(201, "ra-1")], [True], lag=3), RemediationAction.CREATED, 1),
        # created, never readable within the verify window: its own outcome, one POST only
        (
            lambda: Replicating([Answer(201, "ra-1")], [True], lag=None),
            RemediationAction.CREATED_UNVERIFIED,
            1,
        ),
        # the answer was lost, the write landed and shows after two reads: confirmed, never posted again
        (lambda: Replicating([Answer(0)], [True], lag=2), RemediationAction.CREATED, 1),
        # lost, landed, and still invisible after the whole window: a second POST only then, which Graph
        # refuses as a conflict: written, not verified (not a failure that invites a third)
        (
            lambda: Replicating(
                [Answer(0), Answer(400, code="Request_BadRequest", message="A conflicting object")],
                [True, True],
                lag=None,
            ),
            RemediationAction.CREATED_UNVERIFIED,
            2,
        ),
        # a 5xx before anything was applied: absent over the window, so posting again is right
        (
            lambda: Replicating([Answer(503), Answer(201, "ra-1")], [False, True], lag=0),
            RemediationAction.CREATED,
            2,
        ),
    ],
)
async def test_the_read_back_waits_out_replication(
    make_graph: Callable[[], Replicating], action: RemediationAction, posts: int, tmp_path: Path
) -> None:
    graph = make_graph()  # made afresh: the test may run twice in one process (mutation testing does)
    clock = Clock()
    journal = Journal(tmp_path / "remediation.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=clock.sleep, verify_timeout=20).apply(_entry())
    assert outcome.action is action, outcome.detail
    assert graph.posts == posts
    # principalId only (documented); the role and scope are matched in code (the decoy above is ignored)
    assert set(graph.filters) == {f"principalId eq '{make_sp().id}'"}
    # Back-off between reads, never more than the verify window in all, never a busy loop.
    waits = [s for s in clock.slept if s]
    assert all(0 < s <= 10 for s in waits)
    if action is RemediationAction.CREATED_UNVERIFIED:
        assert "next run confirms" in outcome.detail
        assert sum(clock.slept) == pytest.approx(20 * posts, abs=1e-6)


async def test_verify_timeout_zero_reads_back_once(tmp_path: Path) -> None:
    graph = Replicating([Answer(201, "ra-1")], [True], lag=None)
    clock = Clock()
    applier = Applier(graph, graph, Journal(tmp_path / "j"), sleep=clock.sleep, verify_timeout=0)
    outcome = await applier.apply(_entry())
    assert outcome.action is RemediationAction.CREATED_UNVERIFIED
    assert graph.log == ["read", "post", "read"] and clock.slept == []


async def test_a_throttled_post_does_not_use_up_the_attempts(tmp_path: Path) -> None:
    answers = [Answer(429, retry_after=1)] * 4 + [Answer(201, "ra-1")]
    graph = Replicating(answers, [False] * 4 + [True], lag=0)
    clock = Clock()
    outcome = await Applier(graph, graph, Journal(tmp_path / "j"), sleep=clock.sleep).apply(_entry())
    assert outcome.action is RemediationAction.CREATED, outcome.detail
    assert graph.posts == 5 and clock.slept.count(1) == 4  # each Retry-After waited out, then one read


# --- what the journal and the outcome say, step by step (an auditor of the change reads them) ------------


def journal_lines(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    base = ("time", "tenant", "tenant_id", "app_id", "role", "role_name", "scope", "service_principal_id")
    return [{k: v for k, v in line.items() if k not in base} for line in lines]


async def test_the_read_back_backs_off_from_half_a_second_doubling(tmp_path: Path) -> None:
    graph = Replicating([Answer(201, "ra-1")], [True], lag=4)
    clock = Clock()
    journal = Journal(tmp_path / "j")
    outcome = await Applier(graph, graph, journal, sleep=clock.sleep, verify_timeout=60).apply(_entry())
    assert outcome.action is RemediationAction.CREATED
    assert outcome.detail == "created and read back"
    assert clock.slept == [0.5, 1.0, 2.0, 4.0]
    assert journal_lines(tmp_path / "j")[-1] == {
        "action": "verify",
        "outcome": "created",
        "assignment_id": "ra-1",
        "waited_seconds": 7.5,
    }


async def test_a_write_not_yet_visible_is_journalled_with_how_long_it_was_waited_for(tmp_path: Path) -> None:
    graph = Replicating([Answer(201, "ra-1")], [True], lag=None)
    clock = Clock()
    outcome = await Applier(
        graph, graph, Journal(tmp_path / "j"), sleep=clock.sleep, verify_timeout=3.25
    ).apply(_entry())
    assert outcome.action is RemediationAction.CREATED_UNVERIFIED
    assert outcome.detail == (
        "Graph created the assignment (201) but it was not yet visible after 3 s (directory replication); "
        "the next run confirms it. Do not create it again by hand"
    )
    assert journal_lines(tmp_path / "j")[-1] == {
        "action": "verify",
        "outcome": "created_unverified",
        "waited_seconds": 3.2,
    }


async def test_the_wait_before_a_write_showed_is_journalled_to_a_tenth_of_a_second(tmp_path: Path) -> None:
    # Reads after 0.5, 1 and (the window's last) 1.75 s: it shows on the fourth read, 3.25 s in.
    graph = Replicating([Answer(201, "ra-1")], [True], lag=3)
    clock = Clock()
    outcome = await Applier(
        graph, graph, Journal(tmp_path / "j"), sleep=clock.sleep, verify_timeout=3.25
    ).apply(_entry())
    assert outcome.action is RemediationAction.CREATED
    assert clock.slept == [0.5, 1.0, 1.75]
    assert journal_lines(tmp_path / "j")[-1]["waited_seconds"] == 3.2


async def test_a_conflict_not_yet_visible_is_journalled_and_reported_as_written(tmp_path: Path) -> None:
    conflict = Answer(
        400, request_id="req-9", code="Request_BadRequest", message="A conflicting object exists"
    )
    graph = Replicating([conflict], [False], lag=None)
    clock = Clock()
    outcome = await Applier(
        graph, graph, Journal(tmp_path / "j"), sleep=clock.sleep, verify_timeout=3.25
    ).apply(_entry())
    assert outcome.action is RemediationAction.CREATED_UNVERIFIED
    assert outcome.detail == (
        "Graph answered that the assignment already exists, but it was not yet visible after 3 s "
        "(directory replication); the next run confirms it"
    )
    assert outcome.request_id == "req-9"
    assert journal_lines(tmp_path / "j")[-1] == {
        "action": "verify",
        "outcome": "created_unverified",
        "waited_seconds": 3.2,
    }


async def test_a_read_back_that_fails_after_a_201_is_written_not_failed(tmp_path: Path) -> None:
    class FailingReadBack(Replicating):
        async def role_assignments(self, odata_filter: str) -> list[dict[str, Any]]:
            if self.posts:
                raise GraphError("Graph answered 503: busy.", code=ErrorCode.GRAPH_ERROR)
            return await super().role_assignments(odata_filter)

    graph = FailingReadBack([Answer(201, "ra-1", request_id="req-201")], [True], lag=0)
    outcome = await Applier(graph, graph, Journal(tmp_path / "j"), sleep=Clock().sleep).apply(_entry())
    assert outcome.action is RemediationAction.CREATED_UNVERIFIED
    assert outcome.detail == (
        "Graph created the assignment (201) but reading it back failed (GRAPH_ERROR); the next run confirms it"
    )
    assert outcome.request_id == "req-201"
    assert journal_lines(tmp_path / "j")[-1] == {
        "action": "verify",
        "outcome": "created_unverified",
        "error": "GRAPH_ERROR: Graph answered 503: busy.",
    }


async def test_a_lost_answer_then_a_created_one_says_which_attempt_went_unanswered(tmp_path: Path) -> None:
    graph = Replicating([Answer(0), Answer(201, "ra-1")], [False, True], lag=0)
    journal = Journal(tmp_path / "j")
    outcome = await Applier(graph, graph, journal, sleep=Clock().sleep, verify_timeout=1).apply(_entry())
    assert outcome.detail == "created and read back (after no answer on attempt 1)"
    creates = [line for line in journal_lines(tmp_path / "j") if line["action"] == "create"]
    assert [(c["attempt"], c["status"], c["outcome"]) for c in creates] == [
        (1, 0, "no_answer"),
        (2, 201, "created"),
    ]


async def test_throttling_on_the_post_is_tolerated_ten_times_then_the_change_fails(tmp_path: Path) -> None:
    graph = Replicating([Answer(429, retry_after=1)] * 20, [False] * 20, lag=0)
    clock = Clock()
    journal = Journal(tmp_path / "j")
    outcome = await Applier(graph, graph, journal, sleep=clock.sleep).apply(_entry())
    assert outcome.action is RemediationAction.FAILED
    assert graph.posts == 11, "ten 429s are waited out; the eleventh ends it"
    assert outcome.detail == (
        "no confirmed assignment after 11 POSTs (11 throttled), each sent only after reads showed it absent; "
        "re-run to try again"
    )
    creates = [line for line in journal_lines(tmp_path / "j") if line["action"] == "create"]
    assert [c["attempt"] for c in creates] == list(range(1, 12))
    assert {c["outcome"] for c in creates} == {"http_429"}


async def test_three_failed_posts_end_the_change_each_after_a_read(tmp_path: Path) -> None:
    graph = Replicating([Answer(503)] * 3, [False] * 3, lag=0)
    outcome = await Applier(
        graph, graph, Journal(tmp_path / "j"), sleep=Clock().sleep, verify_timeout=1
    ).apply(_entry())
    assert outcome.action is RemediationAction.FAILED
    assert graph.posts == 3
    assert outcome.detail.startswith("no confirmed assignment after 3 POSTs (0 throttled)")
