"""Remediation planning (pure) and the apply/verify logic with fake Graph readers and writers."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from auditor.config import AuthMethod, EffectiveAuth, TenantConfig, VendorSettings
from auditor.constants import SECURITY_READER_ROLE_ID
from auditor.errors import ErrorCode, GraphError
from auditor.evaluate import EvaluationSettings, evaluate
from auditor.model import IdentificationMethod, RemediationAction, RoleEvidence
from auditor.remediation import Applier, Journal, plan_remediation, planned_remediation
from tests.unit.test_evaluate import NOW, TENANT_ID, make_sp, snapshot, sr

AUTH = EffectiveAuth(
    AuthMethod.SECRET,
    "c1",
    "global",
    "https://login.example",
    "https://graph.example",
    "https://graph.example/.default",
    client_secret_env="S",
)
PINNED = EvaluationSettings(vendor=VendorSettings(app_id=make_sp().app_id))
BY_NAME = EvaluationSettings(vendor=VendorSettings())


def tenant(remediate: bool = True) -> TenantConfig:
    return TenantConfig("Contoso", TENANT_ID, AUTH, 2.5, remediate=remediate)


MISSING = RoleEvidence(active=(), pim_available=True)
# What the plan says for each tenant, as the plan printout, the reports and the journal show it.
NOT_AUDITED = "refused: the tenant could not be audited, so nothing is written there"
AMBIGUOUS = "refused: several apps look like the vendor's; pin vendor.app_id in the config to say which one"
NEVER_CONNECTED = "nothing to do: the USS AzureAD connection was never made here"
FOR_AN_ADMIN = "nothing the tool may fix: the remaining gaps (see findings) need an administrator"
ALREADY_HELD = "nothing to do: Security Reader is already held at '/'"
REFUSED_BY_CONFIG = "refused: remediate = false for this tenant in the config"
OWN_REGISTRATION = (
    "refused: the target is registered inside the tenant itself (a look-alike), not the vendor's app"
)
CASES: list[tuple[str, dict[str, Any], EvaluationSettings, bool, RemediationAction, str]] = [
    ("role missing", {"roles": MISSING}, PINNED, True, RemediationAction.PLANNED, "planned"),
    (
        "scoped only",
        {"roles": RoleEvidence(active=(sr(scope="/administrativeUnits/x"),))},
        PINNED,
        True,
        RemediationAction.PLANNED,
        "planned",
    ),
    ("remediate = false", {"roles": MISSING}, PINNED, False, RemediationAction.REFUSED, REFUSED_BY_CONFIG),
    ("compliant", {}, PINNED, True, RemediationAction.NONE, ALREADY_HELD),
    ("not connected", {"candidates": ()}, PINNED, True, RemediationAction.NONE, NEVER_CONNECTED),
    (
        "ambiguous",
        {"candidates": (make_sp(id="a", app_id="x1"), make_sp(id="b", app_id="x2")), "roles": MISSING},
        BY_NAME,
        True,
        RemediationAction.REFUSED,
        AMBIGUOUS,
    ),
    (
        "error",
        {"error": __import__("tests.unit.test_evaluate", fromlist=["ERR"]).ERR},
        PINNED,
        True,
        RemediationAction.REFUSED,
        NOT_AUDITED,
    ),
    (
        "only exchange missing",
        {"exchange": __import__("auditor.model", fromlist=["ExchangeAppRoles"]).ExchangeAppRoles()},
        PINNED,
        True,
        RemediationAction.NONE,
        FOR_AN_ADMIN,
    ),
    (
        "look-alike only",
        {"candidates": (make_sp(owner=TENANT_ID),), "roles": MISSING},
        BY_NAME,
        True,
        RemediationAction.NONE,
        NEVER_CONNECTED,
    ),
]


@pytest.mark.parametrize(
    ("name", "facts", "settings", "remediate", "action", "detail"), CASES, ids=[c[0] for c in CASES]
)
def test_plan(
    name: str,
    facts: dict[str, Any],
    settings: EvaluationSettings,
    remediate: bool,
    action: RemediationAction,
    detail: str,
) -> None:
    result = evaluate(snapshot(**facts), settings, NOW)
    [entry] = plan_remediation([result], [tenant(remediate)])
    assert entry.action is action, (name, result.status, entry.detail)
    if action is RemediationAction.PLANNED:
        assert planned_remediation(entry).detail == f"planned: {entry.change}"  # shown by its change
    else:
        assert entry.detail == planned_remediation(entry).detail == detail
    assert (entry.target is not None) == (action is RemediationAction.PLANNED)
    if entry.target is not None:
        assert entry.target.id == make_sp().id
        assert "Security Reader" in planned_remediation(entry).detail


def test_plan_refuses_a_target_registered_in_the_tenant_even_if_identified() -> None:
    result = evaluate(snapshot(roles=MISSING), PINNED, NOW)
    assert result.service_principal is not None
    own = replace(
        result.service_principal,
        record=replace(result.service_principal.record, app_owner_organization_id=TENANT_ID),
    )
    [entry] = plan_remediation([replace(result, service_principal=own)], [tenant()])
    assert entry.action is RemediationAction.REFUSED and entry.detail == OWN_REGISTRATION
    assert own.identified_by is IdentificationMethod.APP_ID


# --- the applier with fakes ---------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    assignment_id: str | None = None
    request_id: str | None = "req"
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None

    @property
    def created(self) -> bool:
        return self.status == 201

    @property
    def conflict(self) -> bool:
        return self.status == 409 or (self.status == 400 and "conflicting" in (self.message or ""))

    @property
    def unknown_outcome(self) -> bool:
        return self.status in (0, 500, 502, 503, 504)


@dataclass
class FakeGraph:
    """A directory with one vendor SP; `answers` script the POSTs; `applies` whether each one lands."""

    answers: list[Answer]
    applies: list[bool]
    present: bool = False
    reads: int = 0
    posts: int = 0
    appear_after_reads: int | None = None  # someone else creates it after this many reads
    log: list[str] = field(default_factory=list)

    async def role_assignments(self, odata_filter: str) -> list[dict[str, Any]]:
        self.reads += 1
        self.log.append("read")
        if not self.present:
            return []
        return [
            {
                "id": "ra-1",
                "principalId": make_sp().id,
                "roleDefinitionId": SECURITY_READER_ROLE_ID,
                "directoryScopeId": "/",
            }
        ]

    async def create(self, principal_id: str, role: str, scope: str) -> Answer:
        assert (role, scope) == (SECURITY_READER_ROLE_ID, "/")
        self.log.append("post")
        if self.appear_after_reads is not None and self.reads >= self.appear_after_reads:
            self.present = True  # an administrator got there between our re-read and our POST
        answer = self.answers[self.posts]
        if self.applies[self.posts]:
            if self.present:
                answer = Answer(400, code="Request_BadRequest", message="A conflicting object exists")
            self.present = True
        self.posts += 1
        return answer


async def _no_sleep(seconds: float) -> None:
    return None


def _entry() -> Any:
    result = evaluate(snapshot(roles=MISSING), PINNED, NOW)
    [entry] = plan_remediation([result], [tenant()])
    return entry


@pytest.mark.parametrize(
    ("graph", "action", "posts"),
    [
        (FakeGraph([Answer(201, "ra-1")], [True]), RemediationAction.CREATED, 1),
        (FakeGraph([], [], present=True), RemediationAction.ALREADY_PRESENT, 0),
        # created by someone else between the re-read and the POST
        (FakeGraph([Answer(201)], [True], appear_after_reads=1), RemediationAction.ALREADY_PRESENT, 1),
        # the server applied it but the answer was a 503 / was lost: re-read, never POST twice
        (FakeGraph([Answer(503)], [True]), RemediationAction.CREATED, 1),
        (FakeGraph([Answer(0)], [True]), RemediationAction.CREATED, 1),
        # throttled and not applied: wait, re-read, POST again
        (
            FakeGraph([Answer(429, retry_after=1), Answer(201, "ra-1")], [False, True]),
            RemediationAction.CREATED,
            2,
        ),
        (
            FakeGraph([Answer(503), Answer(503), Answer(503)], [False, False, False]),
            RemediationAction.FAILED,
            3,
        ),
        (
            FakeGraph([Answer(400, code="Request_BadRequest", message="bad principal")], [False]),
            RemediationAction.FAILED,
            1,
        ),
        # accepted but never visible (replication): its own outcome, never a second write
        (FakeGraph([Answer(201)], [False]), RemediationAction.CREATED_UNVERIFIED, 1),
    ],
)
async def test_apply(graph: FakeGraph, action: RemediationAction, posts: int, tmp_path: Path) -> None:
    graph = copy.deepcopy(graph)  # the parameter is shared by every run of this test in one process
    journal = Journal(tmp_path / "remediation.jsonl")
    outcome = await Applier(graph, graph, journal, sleep=_no_sleep).apply(_entry())
    assert outcome.action is action, outcome.detail
    assert graph.posts == posts
    assert graph.log[0] == "read", "always re-read right before writing"
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert sum(1 for line in lines if line["action"] == "create") == posts
    assert all(line["tenant_id"] == TENANT_ID and line["role"] == SECURITY_READER_ROLE_ID for line in lines)


async def test_apply_403_is_failed_with_the_hint(tmp_path: Path) -> None:
    class Denied(FakeGraph):
        async def create(self, principal_id: str, role: str, scope: str) -> Answer:
            raise GraphError(
                "403 Authorization_RequestDenied",
                code=ErrorCode.PERMISSION_DENIED,
                hint="Grant RoleManagement.ReadWrite.Directory",
                request_id="r-403",
            )

    outcome = await Applier(Denied([], []), Denied([], []), Journal(tmp_path / "j"), sleep=_no_sleep).apply(
        _entry()
    )
    assert outcome.action is RemediationAction.FAILED
    assert "RoleManagement.ReadWrite.Directory" in outcome.detail and outcome.request_id == "r-403"


def test_journal_is_append_only_and_redacts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"n": 1, "error": "client_secret=hunter2"})
    journal.append({"n": 2})
    lines = journal.path.read_text().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [1, 2]
    assert "hunter2" not in journal.path.read_text()
    assert all(json.loads(line)["time"].endswith("+00:00") for line in lines), "each line is stamped in UTC"
    # a later run (a new Journal on the same file) appends; it never truncates what earlier runs wrote
    Journal(journal.path).append({"n": 3, "time": "kept"})
    again = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [line["n"] for line in again] == [1, 2, 3] and again[2]["time"] == "kept"
    assert journal.path.stat().st_mode & 0o777 == 0o640
