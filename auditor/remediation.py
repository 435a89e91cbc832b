"""`--remediate`: plan the Security Reader fix per tenant, then apply exactly the plan, safely.

The only change this tool ever makes is one active Security Reader assignment at `/` for the vendor
service principal the audit identified (DESIGN §3.5). The plan is pure (`plan_remediation`); applying
an entry re-reads first, posts once, re-reads after any doubtful answer instead of retrying blindly,
verifies by reading back, and journals every attempt.

Reads filter role assignments by `principalId` only (a documented filter) and match the role and scope
in code. A new assignment can take a while to be visible to reads (directory replication, no documented
bound; ../shared/graph-api-notes.md), so the read-back waits with back-off for up to
`remediation.verify_timeout_seconds`. A write Graph accepted that is still invisible then is
`created_unverified`: never a failure that invites a second write; the next run confirms it. The tenant
stays `non_compliant` meanwhile (`remediated` needs the read-back): the gap is not confirmed closed.

At most once: a POST is only ever repeated after reads over the whole verify window showed the
assignment absent (a 429, or an answer lost before the write was applied), and never after a 201 or a
conflict.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from auditor.config import TenantConfig
from auditor.constants import SECURITY_READER_ROLE_ID, SECURITY_READER_ROLE_NAME, TENANT_WIDE_SCOPE
from auditor.errors import ErrorCode, GraphError, TenantError, redact
from auditor.model import (
    IdentificationMethod,
    Remediation,
    RemediationAction,
    ServicePrincipalRecord,
    Status,
    TenantResult,
)

SCOPE: Final = TENANT_WIDE_SCOPE
WRITE_ATTEMPTS = 3  # failed POSTs at most, each only after a re-read showed the assignment still absent
WRITE_THROTTLES_TOLERATED = 10  # 429s on the POST (waited out, not counted as attempts)
VERIFY_TIMEOUT_SECONDS = 60.0  # remediation.verify_timeout_seconds: how long replication may take
READ_BACK_FIRST_DELAY = 0.5  # then doubling, up to READ_BACK_MAX_DELAY, within the verify timeout
READ_BACK_MAX_DELAY = 10.0


@dataclass(frozen=True)
class PlanEntry:
    """What remediation will do (or refuses to do) in one tenant."""

    tenant: TenantConfig
    result: TenantResult
    action: RemediationAction  # PLANNED, REFUSED or NONE
    detail: str
    target: ServicePrincipalRecord | None = None

    @property
    def change(self) -> str:
        if self.target is None:
            return ""
        return (
            f"create an active {SECURITY_READER_ROLE_NAME} assignment at scope '{SCOPE}' for "
            f"{self.target.display_name!r} (object id {self.target.id}, appId {self.target.app_id})"
        )


def plan_remediation(results: Sequence[TenantResult], tenants: Sequence[TenantConfig]) -> list[PlanEntry]:
    """For each audited tenant: the one change to make, or why nothing will be written there."""
    by_id = {t.tenant_id: t for t in tenants}
    return [_plan_one(result, by_id[result.tenant_id]) for result in results]


def _plan_one(result: TenantResult, tenant: TenantConfig) -> PlanEntry:
    def entry(
        action: RemediationAction, detail: str, target: ServicePrincipalRecord | None = None
    ) -> PlanEntry:
        return PlanEntry(tenant, result, action, detail, target)

    if result.status is Status.ERROR:
        return entry(
            RemediationAction.REFUSED, "refused: the tenant could not be audited, so nothing is written there"
        )
    if result.status is Status.AMBIGUOUS:
        return entry(
            RemediationAction.REFUSED,
            "refused: several apps look like the vendor's; pin vendor.app_id in the config to say which one",
        )
    if result.status is Status.NOT_CONNECTED:
        return entry(RemediationAction.NONE, "nothing to do: the USS AzureAD connection was never made here")
    if not result.has_role_gap:
        if result.status is Status.NON_COMPLIANT:
            return entry(
                RemediationAction.NONE,
                "nothing the tool may fix: the remaining gaps (see findings) need an administrator",
            )
        return entry(RemediationAction.NONE, "nothing to do: Security Reader is already held at '/'")
    identified = result.service_principal
    if identified is None:
        return entry(RemediationAction.REFUSED, "refused: the vendor service principal was not identified")
    sp = identified.record
    if not tenant.remediate:
        return entry(RemediationAction.REFUSED, "refused: remediate = false for this tenant in the config")
    if (sp.app_owner_organization_id or "").lower() == tenant.tenant_id.lower():
        return entry(
            RemediationAction.REFUSED,
            "refused: the target is registered inside the tenant itself (a look-alike), not the vendor's app",
        )
    if identified.identified_by not in (
        IdentificationMethod.APP_ID,
        IdentificationMethod.PUBLISHER,
        IdentificationMethod.DISPLAY_NAME,
    ):
        return entry(RemediationAction.REFUSED, "refused: the target could not be verified")
    return entry(RemediationAction.PLANNED, "planned", sp)


class RoleReader(Protocol):
    async def role_assignments(self, odata_filter: str) -> list[dict[str, Any]]: ...


class RoleWriter(Protocol):
    async def create(self, principal_id: str, role_definition_id: str, directory_scope_id: str) -> Any: ...


# The journal's file name in --out.
JOURNAL_FILENAME: Final = "remediation.jsonl"


class Journal:
    """Append-only JSON-lines record of every write attempt (`remediation.jsonl`)."""

    def __init__(self, path: Path):
        self.path = path
        self._dir_made = False

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one line, stamped with the current time (UTC, ms) unless it has a ``time``."""
        if not self._dir_made:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._dir_made = True
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **record}
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, redact(line).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class Applier:
    """Applies one plan entry with a reader and a writer for its tenant."""

    reader: RoleReader
    writer: RoleWriter
    journal: Journal
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    verify_timeout: float = VERIFY_TIMEOUT_SECONDS

    async def apply(self, entry: PlanEntry) -> Remediation:
        assert entry.target is not None and entry.action is RemediationAction.PLANNED
        sp = entry.target
        base = {
            "tenant": entry.tenant.name,
            "tenant_id": entry.tenant.tenant_id,
            "service_principal_id": sp.id,
            "app_id": sp.app_id,
            "role": SECURITY_READER_ROLE_ID,
            "role_name": SECURITY_READER_ROLE_NAME,
            "scope": SCOPE,
        }

        def log(action: str, outcome: str, **extra: Any) -> None:
            self.journal.append(
                {
                    **base,
                    "action": action,
                    "outcome": outcome,
                    **extra,
                }
            )

        try:
            existing = await self._existing(sp.id)
            if existing:
                log("read", "already_present", assignment_id=existing)
                return self._done(
                    RemediationAction.ALREADY_PRESENT, "already present when re-read before writing", existing
                )
            note = ""
            failed = throttled = 0
            while failed < WRITE_ATTEMPTS and throttled <= WRITE_THROTTLES_TOLERATED:
                attempt = failed + throttled + 1
                answer = await self.writer.create(sp.id, SECURITY_READER_ROLE_ID, SCOPE)
                # A 429 is pacing (nothing was applied): it does not use up one of the attempts.
                throttled, failed = (
                    (throttled + 1, failed) if answer.status == 429 else (throttled, failed + 1)
                )
                log(
                    "create",
                    _outcome(answer),
                    attempt=attempt,
                    status=answer.status,
                    request_id=answer.request_id,
                    error=None if answer.created else f"{answer.code}: {answer.message}",
                )
                if answer.created:
                    try:
                        verified, waited = await self._read_back(sp.id)
                    except GraphError as exc:  # it was written: never a failure that invites a rewrite
                        log("verify", "created_unverified", error=f"{exc.code.value}: {exc.message}")
                        return self._unverified(
                            f"Graph created the assignment (201) but reading it back failed ({exc.code.value}); "
                            "the next run confirms it",
                            answer.request_id,
                        )
                    if verified:
                        log("verify", "created", assignment_id=verified, waited_seconds=round(waited, 1))
                        return self._done(
                            RemediationAction.CREATED,
                            f"created and read back{note}",
                            verified,
                            answer.request_id,
                        )
                    log("verify", "created_unverified", waited_seconds=round(waited, 1))
                    return self._unverified(
                        f"Graph created the assignment (201) but it was not yet visible after {waited:.0f} s "
                        "(directory replication); the next run confirms it. Do not create it again by hand",
                        answer.request_id,
                    )
                # A conflict, a lost answer or a 5xx: the assignment may exist now. Look before anything else.
                if answer.retry_after:
                    await self.sleep(answer.retry_after)
                # A 429 was not applied: one read suffices. Anything else may have been: wait out replication.
                verified, waited = await self._read_back(sp.id, within=0.0 if answer.status == 429 else None)
                if verified:
                    action = (
                        RemediationAction.ALREADY_PRESENT if answer.conflict else RemediationAction.CREATED
                    )
                    detail = (
                        "Graph said it already exists; confirmed by reading it back"
                        if answer.conflict
                        else f"confirmed by reading it back after Graph answered {answer.status or 'nothing'}"
                    )
                    log("verify", action.value, assignment_id=verified)
                    return self._done(action, detail, verified, answer.request_id)
                if answer.conflict:
                    # Graph says it exists (an earlier attempt of ours, or someone else's) but reads do not
                    # show it yet: written, not verified; writing again could only conflict again.
                    log("verify", "created_unverified", waited_seconds=round(waited, 1))
                    return self._unverified(
                        f"Graph answered that the assignment already exists, but it was not yet visible after "
                        f"{waited:.0f} s (directory replication); the next run confirms it",
                        answer.request_id,
                    )
                if not (answer.unknown_outcome or answer.status == 429):
                    return self._failed(
                        f"Graph answered {answer.status} {answer.code}: {answer.message}", answer.request_id
                    )
                note = f" (after {answer.status or 'no answer'} on attempt {attempt})"
            return self._failed(
                f"no confirmed assignment after {failed + throttled} POSTs ({throttled} throttled), each "
                "sent only after reads showed it absent; re-run to try again",
                None,
            )
        except GraphError as exc:
            log("create", "failed", error=f"{exc.code.value}: {exc.message}", request_id=exc.request_id)
            return Remediation(
                RemediationAction.FAILED,
                f"{exc.message} {exc.hint}".strip(),
                request_id=exc.request_id,
                at=datetime.now(UTC),
            )

    async def _existing(self, principal_id: str) -> str | None:
        # principalId eq is documented for roleAssignments; the role and scope are matched here (the
        # combined `and` filter is not documented and has been refused by Graph).
        odata_filter = f"principalId eq '{principal_id}'"
        for item in await self.reader.role_assignments(odata_filter):
            if (
                str(item.get("principalId", "")).lower() == principal_id.lower()
                and str(item.get("roleDefinitionId", "")).lower() == SECURITY_READER_ROLE_ID
                and item.get("directoryScopeId") == SCOPE
            ):
                return str(item.get("id"))
        return None

    async def _read_back(self, principal_id: str, within: float | None = None) -> tuple[str | None, float]:
        """Read until the assignment shows or `within` seconds (default: the verify timeout) have passed,
        backing off between reads; returns its id (or None) and how long it waited."""
        limit = self.verify_timeout if within is None else within
        began = time.monotonic()
        slept = 0.0
        delay = READ_BACK_FIRST_DELAY
        while True:
            found = await self._existing(principal_id)
            waited = max(slept, time.monotonic() - began)
            if found or waited >= limit:
                return found, waited
            pause = min(delay, limit - waited)
            await self.sleep(pause)
            slept += pause
            delay = min(READ_BACK_MAX_DELAY, delay * 2)

    @staticmethod
    def _done(
        action: RemediationAction, detail: str, assignment_id: str | None, request_id: str | None = None
    ) -> Remediation:
        return Remediation(
            action, detail, role_assignment_id=assignment_id, request_id=request_id, at=datetime.now(UTC)
        )

    @staticmethod
    def _unverified(detail: str, request_id: str | None) -> Remediation:
        return Remediation(
            RemediationAction.CREATED_UNVERIFIED, detail, request_id=request_id, at=datetime.now(UTC)
        )

    @staticmethod
    def _failed(detail: str, request_id: str | None) -> Remediation:
        return Remediation(RemediationAction.FAILED, detail, request_id=request_id, at=datetime.now(UTC))


def _outcome(answer: Any) -> str:
    if answer.created:
        return "created"
    if answer.conflict:
        return "conflict"
    return "no_answer" if answer.status == 0 else f"http_{answer.status}"


def planned_remediation(entry: PlanEntry) -> Remediation:
    """The Remediation recorded for an entry that is not (or not yet) applied."""
    detail = entry.detail if entry.action is not RemediationAction.PLANNED else f"planned: {entry.change}"
    return Remediation(entry.action, detail)


def error_remediation(error: TenantError) -> Remediation:
    return Remediation(
        RemediationAction.FAILED, f"{error.message} {error.hint}".strip(), at=datetime.now(UTC)
    )


async def apply_plan(
    entries: Sequence[PlanEntry],
    journal: Journal,
    *,
    max_changes: int | None = None,
    concurrency: int = 4,
    session_factory: Any = None,
    environ: dict[str, str] | None = None,
    verify_timeout: float = VERIFY_TIMEOUT_SECONDS,
    request_timeout: float | None = None,
) -> dict[str, Remediation]:
    """Apply the planned entries (at most `max_changes` of them); returns each planned tenant's outcome.

    Each tenant is written with its remediation credential (`remediation_auth`, else its `auth`).
    """
    from auditor.collect import SettingsError, connection_settings
    from auditor.graph.client import open_session
    from auditor.graph.reader import GraphReader
    from auditor.graph.writer import RoleAssignmentWriter

    factory = session_factory or open_session
    planned = [e for e in entries if e.action is RemediationAction.PLANNED]
    limit = len(planned) if max_changes is None else max(0, max_changes)
    outcomes: dict[str, Remediation] = {
        e.tenant.tenant_id: Remediation(
            RemediationAction.PLANNED, f"not applied: --max-changes {limit} was reached; planned: {e.change}"
        )
        for e in planned[limit:]
    }
    slots = asyncio.Semaphore(max(1, concurrency))

    async def run(entry: PlanEntry) -> None:
        label = entry.tenant.label
        async with slots:
            try:
                settings = connection_settings(entry.tenant, environ, auth=entry.tenant.remediation_auth)
                if request_timeout is not None:
                    settings = replace(settings, timeout_seconds=request_timeout)
            except SettingsError as exc:
                journal.append(
                    {
                        "tenant": entry.tenant.name,
                        "tenant_id": entry.tenant.tenant_id,
                        "action": "sign-in",
                        "outcome": "failed",
                        "error": exc.error.message,
                    }
                )
                outcomes[entry.tenant.tenant_id] = error_remediation(exc.error)
                return
            try:
                async with factory(settings) as session:
                    applier = Applier(
                        GraphReader(session, label),
                        RoleAssignmentWriter(session, label),
                        journal,
                        verify_timeout=verify_timeout,
                    )
                    outcomes[entry.tenant.tenant_id] = await applier.apply(entry)
            except (ValueError, OSError) as exc:
                error = TenantError(
                    ErrorCode.AUTH_FAILED, f"{label}: the remediation credential could not be used: {exc}"
                )
                outcomes[entry.tenant.tenant_id] = error_remediation(error)

    await asyncio.gather(*(run(e) for e in planned[:limit]))
    return outcomes


__all__ = [
    "JOURNAL_FILENAME",
    "Applier",
    "Journal",
    "PlanEntry",
    "apply_plan",
    "plan_remediation",
    "planned_remediation",
]
