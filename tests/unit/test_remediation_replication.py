"""The applier when a new assignment takes a while to be readable (issue 10 case 8), with fakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

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
    ("graph", "action", "posts"),
    [
        # created, readable after three more reads: waited for, confirmed
        (Replicating([Answer(201, "ra-1")], [True], lag=3), RemediationAction.CREATED, 1),
        # created, never readable within the verify window: its own outcome, one POST only
        (Replicating([Answer(201, "ra-1")], [True], lag=None), RemediationAction.CREATED_UNVERIFIED, 1),
        # the answer was lost, the write landed and shows after two reads: confirmed, never posted again
        (Replicating([Answer(0)], [True], lag=2), RemediationAction.CREATED, 1),
        # lost, landed, and still invisible after the whole window: a second POST only then, which Graph
        # refuses as a conflict: written, not verified (not a failure that invites a third)
        (
            Replicating(
                [Answer(0), Answer(400, code="Request_BadRequest", message="A conflicting object")],
                [True, True],
                lag=None,
            ),
            RemediationAction.CREATED_UNVERIFIED,
            2,
        ),
        # a 5xx before anything was applied: absent over the window, so posting again is right
        (Replicating([Answer(503), Answer(201, "ra-1")], [False, True], lag=0), RemediationAction.CREATED, 2),
    ],
)
async def test_the_read_back_waits_out_replication(
    graph: Replicating, action: RemediationAction, posts: int, tmp_path: Path
) -> None:
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
