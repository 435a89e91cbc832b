"""What remediation records and reports when things go wrong: journal lines, details, the credential path.

The Graph side is the small fake of tests/unit/test_remediation.py; the end-to-end paths (conflicts,
replication delay, Retry-After) run over the SDK in tests/integration/test_failure_paths.py.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditor.config import AuthMethod
from auditor.constants import SECURITY_READER_ROLE_ID
from auditor.errors import ErrorCode, GraphError
from auditor.evaluate import evaluate
from auditor.graph.writer import WriteAnswer
from auditor.model import RemediationAction
from auditor.remediation import (
    Applier,
    Journal,
    PlanEntry,
    apply_plan,
    plan_remediation,
    planned_remediation,
)
from tests.unit.test_collect import auth
from tests.unit.test_evaluate import NOW, SP_ID, TENANT_ID, VENDOR_APP_ID, snapshot
from tests.unit.test_remediation import MISSING, PINNED, FakeGraph, tenant

Answer = WriteAnswer


def entry(remediate: bool = True) -> PlanEntry:
    result = evaluate(snapshot(roles=MISSING), PINNED, NOW)
    [planned] = plan_remediation([result], [tenant(remediate)])
    return planned


class Sleeps:
    def __init__(self) -> None:
        self.waited: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waited.append(seconds)


def journal_lines(journal: Journal) -> list[dict[str, Any]]:
    return [json.loads(line) for line in journal.path.read_text().splitlines()]


async def test_a_created_assignment_is_journaled_with_everything_an_auditor_asks(tmp_path: Path) -> None:
    graph = FakeGraph([Answer(201, "ra-1", request_id="req-1")], [True])
    journal = Journal(tmp_path / "remediation.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps()).apply(entry())
    assert outcome.action is RemediationAction.CREATED
    assert (outcome.detail, outcome.role_assignment_id, outcome.request_id) == (
        "created and read back",
        "ra-1",
        "req-1",
    )
    assert outcome.at is not None
    create, verify = journal_lines(journal)
    common = {
        "tenant": "Contoso",
        "tenant_id": TENANT_ID,
        "service_principal_id": SP_ID,
        "app_id": VENDOR_APP_ID,
        "role": SECURITY_READER_ROLE_ID,
        "role_name": "Security Reader",
        "scope": "/",
    }
    assert {k: create[k] for k in common} == common and {k: verify[k] for k in common} == common
    assert (create["action"], create["outcome"], create["attempt"], create["status"]) == (
        "create",
        "created",
        1,
        201,
    )
    assert (create["request_id"], create["error"]) == ("req-1", None)
    assert (verify["action"], verify["outcome"], verify["assignment_id"]) == ("verify", "created", "ra-1")


async def test_a_refused_post_is_journaled_with_its_error(tmp_path: Path) -> None:
    graph = FakeGraph(
        [Answer(400, code="Request_BadRequest", message="bad principal", request_id="r4")], [False]
    )
    journal = Journal(tmp_path / "j.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps()).apply(entry())
    assert outcome.action is RemediationAction.FAILED
    assert (outcome.detail, outcome.request_id) == (
        "Graph answered 400 Request_BadRequest: bad principal",
        "r4",
    )
    [create] = journal_lines(journal)
    assert (create["outcome"], create["status"], create["error"]) == (
        "http_400",
        400,
        "Request_BadRequest: bad principal",
    )


async def test_a_conflict_is_journaled_as_a_conflict(tmp_path: Path) -> None:
    graph = FakeGraph([Answer(201)], [True], appear_after_reads=1)
    journal = Journal(tmp_path / "j.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps()).apply(entry())
    assert outcome.action is RemediationAction.ALREADY_PRESENT
    assert outcome.detail == "Graph said it already exists; confirmed by reading it back"
    create, verify = journal_lines(journal)
    assert create["outcome"] == "conflict" and verify["outcome"] == "already_present"


async def test_a_lost_answer_is_journaled_and_confirmed_by_reading_back(tmp_path: Path) -> None:
    graph = FakeGraph([Answer(0)], [True])
    journal = Journal(tmp_path / "j.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps()).apply(entry())
    assert outcome.action is RemediationAction.CREATED
    assert outcome.detail == "confirmed by reading it back after Graph answered nothing"
    assert journal_lines(journal)[0]["outcome"] == "no_answer"


async def test_a_throttled_post_waits_its_retry_after_then_goes_again(tmp_path: Path) -> None:
    graph = FakeGraph([Answer(429, retry_after=7), Answer(201, "ra-1")], [False, True])
    sleeps = Sleeps()
    outcome = await Applier(graph, graph, Journal(tmp_path / "j.jsonl"), sleep=sleeps).apply(entry())
    assert outcome.action is RemediationAction.CREATED
    assert outcome.detail == "created and read back (after 429 on attempt 1)"
    assert sleeps.waited[0] == 7
    assert graph.log == ["read", "post", "read", "post", "read"], (
        "re-read after the 429, before posting again"
    )


async def test_posts_that_keep_failing_stop_at_the_limit(tmp_path: Path) -> None:
    graph = FakeGraph([Answer(503)] * 3, [False] * 3)
    journal = Journal(tmp_path / "j.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps()).apply(entry())
    assert outcome.action is RemediationAction.FAILED
    assert outcome.detail == (
        "no confirmed assignment after 3 POSTs (0 throttled), each sent only after reads showed it absent; "
        "re-run to try again"
    )
    assert outcome.request_id is None
    assert [line["attempt"] for line in journal_lines(journal) if line["action"] == "create"] == [1, 2, 3]


async def test_reading_back_waits_longer_each_time(tmp_path: Path) -> None:
    graph = FakeGraph([Answer(201)], [False])
    sleeps = Sleeps()
    applier = Applier(graph, graph, Journal(tmp_path / "j.jsonl"), sleep=sleeps, verify_timeout=20.0)
    outcome = await applier.apply(entry())
    # accepted but never visible within remediation.verify_timeout_seconds: written, not verified (issue 11)
    assert outcome.action is RemediationAction.CREATED_UNVERIFIED
    assert outcome.detail.startswith(
        "Graph created the assignment (201) but it was not yet visible after 20 s (directory replication)"
    ), outcome.detail
    grown = sleeps.waited[:-1]  # the last wait is cut short at the verify timeout
    assert len(grown) >= 2 and grown == sorted(grown) and 0 < grown[0] < grown[1]
    assert sum(sleeps.waited) == pytest.approx(20.0), "it kept reading back until the verify timeout"
    assert graph.reads == len(sleeps.waited) + 2, "one read before writing, then one more read than waits"
    assert graph.posts == 1, "never a second POST"


def test_only_the_vendors_assignment_at_root_counts_as_present() -> None:
    class Listing(FakeGraph):
        def __init__(self, items: list[dict[str, Any]]) -> None:
            super().__init__([], [])
            self.items = items

        async def role_assignments(self, odata_filter: str) -> list[dict[str, Any]]:
            # principalId only (issue 11): the role and the scope are matched in code, which the cases test
            assert odata_filter == f"principalId eq '{SP_ID}'"
            return self.items

    good = {
        "id": "ok",
        "principalId": SP_ID.upper(),
        "roleDefinitionId": SECURITY_READER_ROLE_ID,
        "directoryScopeId": "/",
    }
    cases = [
        ([{**good, "principalId": "someone-else"}], None),
        ([{**good, "roleDefinitionId": "other-role"}], None),
        ([{**good, "directoryScopeId": "/administrativeUnits/x"}], None),
        ([{**good, "directoryScopeId": "/administrativeUnits/x"}, good], "ok"),
        ([good], "ok"),
    ]
    for items, found in cases:
        graph = Listing(items)
        applier = Applier(graph, graph, Journal(Path("/nonexistent/never-written")))
        assert asyncio.run(applier._existing(SP_ID)) == found, items


def test_the_plan_says_what_it_will_change() -> None:
    planned = entry()
    assert planned.change == (
        f"create an active Security Reader assignment at scope '/' for 'USS AzureAD' (object id {SP_ID}, "
        f"appId {VENDOR_APP_ID})"
    )
    recorded = planned_remediation(planned)
    assert recorded.action is RemediationAction.PLANNED and recorded.detail == f"planned: {planned.change}"
    refused = entry(remediate=False)
    assert refused.change == "" and planned_remediation(refused).detail == refused.detail


# --- apply_plan: the credential, the limit -------------------------------------------------------------


async def test_an_unset_write_secret_fails_that_tenant_and_is_journaled(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    outcomes = await apply_plan([entry()], journal, environ={})
    outcome = outcomes[TENANT_ID]
    assert outcome.action is RemediationAction.FAILED
    assert "environment variable S" in outcome.detail and "Set S" in outcome.detail
    [line] = journal_lines(journal)
    assert (line["tenant"], line["tenant_id"], line["action"], line["outcome"]) == (
        "Contoso",
        TENANT_ID,
        "sign-in",
        "failed",
    )
    assert "environment variable S" in line["error"]


async def test_a_credential_that_cannot_be_built_fails_that_tenant(tmp_path: Path) -> None:
    @asynccontextmanager
    async def broken(settings: Any) -> Any:
        raise ValueError("bad certificate")
        yield

    outcomes = await apply_plan(
        [entry()], Journal(tmp_path / "j.jsonl"), session_factory=broken, environ={"S": "x"}
    )
    outcome = outcomes[TENANT_ID]
    assert outcome.action is RemediationAction.FAILED
    assert outcome.detail.startswith(
        f"Contoso ({TENANT_ID}): the remediation credential could not be used: bad certificate"
    )


@pytest.mark.parametrize("limit", [0, -1])
async def test_max_changes_zero_writes_nothing(tmp_path: Path, limit: int) -> None:
    @asynccontextmanager
    async def never(settings: Any) -> Any:
        raise AssertionError("no session may be opened")
        yield

    outcomes = await apply_plan(
        [entry()], Journal(tmp_path / "j.jsonl"), max_changes=limit, session_factory=never, environ={"S": "x"}
    )
    outcome = outcomes[TENANT_ID]
    assert outcome.action is RemediationAction.PLANNED
    assert outcome.detail.startswith("not applied: --max-changes 0 was reached; planned: create an active")
    assert not (tmp_path / "j.jsonl").exists()


async def test_entries_that_are_not_planned_are_not_applied(tmp_path: Path) -> None:
    outcomes = await apply_plan([entry(remediate=False)], Journal(tmp_path / "j.jsonl"), environ={})
    assert outcomes == {}


def assert_stamped_now_in_utc(outcome: Any) -> None:
    assert outcome.at is not None and outcome.at.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - outcome.at).total_seconds()) < 60


async def test_already_present_is_journaled_as_a_read(tmp_path: Path) -> None:
    graph = FakeGraph([], [], present=True)
    journal = Journal(tmp_path / "j.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps()).apply(entry())
    assert outcome.action is RemediationAction.ALREADY_PRESENT
    assert (outcome.detail, outcome.role_assignment_id) == (
        "already present when re-read before writing",
        "ra-1",
    )
    assert_stamped_now_in_utc(outcome)
    [line] = journal_lines(journal)
    assert (line["action"], line["outcome"], line["assignment_id"]) == ("read", "already_present", "ra-1")


@pytest.mark.parametrize(
    ("answers", "action"),
    [
        ([Answer(400, code="Request_BadRequest", message="bad principal")], RemediationAction.FAILED),
        ([Answer(503)] * 3, RemediationAction.FAILED),  # never confirmed
        ([Answer(201)], RemediationAction.CREATED_UNVERIFIED),  # accepted, never visible
    ],
)
async def test_every_outcome_is_stamped_in_utc(
    tmp_path: Path, answers: list[Any], action: RemediationAction
) -> None:
    graph = FakeGraph(answers, [False] * len(answers))
    outcome = await Applier(graph, graph, Journal(tmp_path / "j.jsonl"), sleep=Sleeps()).apply(entry())
    assert outcome.action is action
    assert_stamped_now_in_utc(outcome)


async def test_a_settings_failure_is_stamped_in_utc(tmp_path: Path) -> None:
    outcome = (await apply_plan([entry()], Journal(tmp_path / "j.jsonl"), environ={}))[TENANT_ID]
    assert_stamped_now_in_utc(outcome)


async def test_the_write_uses_the_remediation_credential(tmp_path: Path) -> None:
    write = auth(
        AuthMethod.SECRET, client_secret_env="WRITE", client_id="22222222-0000-0000-0000-000000000000"
    )
    planned = replace(entry(), tenant=replace(tenant(), write_auth=write))
    used: list[str] = []

    @asynccontextmanager
    async def sign_in(settings: Any) -> Any:
        used.append(f"{settings.client_id}:{settings.client_secret}")
        raise OSError("stop here")
        yield

    outcomes = await apply_plan(
        [planned], Journal(tmp_path / "j.jsonl"), session_factory=sign_in, environ={"WRITE": "w-secret-2"}
    )
    assert used == ["22222222-0000-0000-0000-000000000000:w-secret-2"], (
        "not the read identity (whose S is unset)"
    )
    assert outcomes[TENANT_ID].action is RemediationAction.FAILED


@pytest.mark.parametrize(("concurrency", "most"), [(None, 4), (1, 1), (0, 1), (2, 2)])
async def test_tenants_are_written_a_few_at_a_time(
    tmp_path: Path, concurrency: int | None, most: int
) -> None:
    open_now = peak = 0

    @asynccontextmanager
    async def sign_in(settings: Any) -> Any:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        await asyncio.sleep(0.02)
        open_now -= 1
        raise OSError("stop here")
        yield

    entries = [replace(entry(), tenant=replace(tenant(), tenant_id=f"t{i}")) for i in range(6)]
    options: dict[str, Any] = {} if concurrency is None else {"concurrency": concurrency}
    outcomes = await apply_plan(
        entries, Journal(tmp_path / "j.jsonl"), session_factory=sign_in, environ={"S": "x"}, **options
    )
    assert len(outcomes) == 6 and peak == most


class Replicating(FakeGraph):
    """An assignment the server applied shows up only from the `visible_from`-th read on."""

    def __init__(self, answers: list[Any], applies: list[bool], visible_from: int) -> None:
        super().__init__(answers, applies)
        self.visible_from = visible_from

    async def role_assignments(self, odata_filter: str) -> list[dict[str, Any]]:
        found = await super().role_assignments(odata_filter)
        return found if self.reads >= self.visible_from else []


async def test_accepted_but_never_visible_is_journaled_as_an_unverified_create(tmp_path: Path) -> None:
    # Issue 11: a write Graph accepted but reads never show is CREATED_UNVERIFIED (the tenant stays
    # non_compliant until a later run sees it), not FAILED, and it is never POSTed a second time.
    graph = FakeGraph([Answer(201, "ra-1", request_id="req-7")], [False])
    journal = Journal(tmp_path / "j.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps(), verify_timeout=5.0).apply(entry())
    assert outcome.action is RemediationAction.CREATED_UNVERIFIED and outcome.request_id == "req-7"
    assert graph.posts == 1
    last = journal_lines(journal)[-1]
    assert (last["action"], last["outcome"], last["waited_seconds"]) == ("verify", "created_unverified", 5.0)


@pytest.mark.parametrize("status", [0, 503])
async def test_after_a_doubtful_answer_the_read_back_waits_for_replication(
    tmp_path: Path, status: int
) -> None:
    # applied on the server; the answer was lost (or a 503); visible only from the third read on
    graph = Replicating([Answer(status, request_id="req-8")], [True], visible_from=3)
    journal = Journal(tmp_path / "j.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps()).apply(entry())
    assert outcome.action is RemediationAction.CREATED, outcome.detail
    assert (outcome.role_assignment_id, outcome.request_id) == ("ra-1", "req-8")
    assert graph.posts == 1
    last = journal_lines(journal)[-1]
    assert (last["action"], last["outcome"], last["assignment_id"]) == ("verify", "created", "ra-1")


async def test_a_refused_write_is_journaled_with_its_code_and_request_id(tmp_path: Path) -> None:
    class Refused(FakeGraph):
        async def create(self, principal_id: str, role: str, scope: str) -> Any:
            raise GraphError(
                "403 Authorization_RequestDenied", code=ErrorCode.PERMISSION_DENIED, request_id="r-403"
            )

    graph = Refused([], [])
    journal = Journal(tmp_path / "j.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=Sleeps()).apply(entry())
    assert outcome.action is RemediationAction.FAILED and outcome.request_id == "r-403"
    assert_stamped_now_in_utc(outcome)
    [line] = journal_lines(journal)
    assert (line["action"], line["outcome"], line["request_id"]) == ("create", "failed", "r-403")
    assert line["error"] == "PERMISSION_DENIED: 403 Authorization_RequestDenied"


def test_the_journal_makes_its_directory(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "out" / "nightly" / "remediation.jsonl")
    journal.append({"n": 1})
    journal.append({"n": 2})
    assert [json.loads(line)["n"] for line in journal.path.read_text().splitlines()] == [1, 2]


def test_journal_lines_keep_names_as_written_with_sorted_keys(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"tenant": "Zürich Versicherung", "b": 1, "a": 2, "time": "t"})
    raw = journal.path.read_bytes().decode("utf-8")
    assert raw == '{"a": 2, "b": 1, "tenant": "Zürich Versicherung", "time": "t"}\n'


def test_a_plan_entry_carries_the_audit_result_it_was_made_from() -> None:
    result = evaluate(snapshot(roles=MISSING), PINNED, NOW)
    [planned] = plan_remediation([result], [tenant()])
    assert planned.result is result and planned.tenant == tenant()
