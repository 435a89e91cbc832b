"""Whether a channel sends after a run: ``always``, ``on_gaps`` or ``on_change`` (pure functions).

``on_gaps`` sends when a tenant still has a gap (``non_compliant``, ``ambiguous``) **or could not be
audited** (``error``): the exit-code-1-or-3 runs. An error is never called a gap in the message, but a
nightly job that stays silent while a tenant cannot be read would hide exactly what costs money.

``on_change`` compares each audited tenant's status with the previous run's (a mapping tenant id ->
status, built from the run history by the caller). A tenant absent from the previous run counts as a
change; a tenant absent from this run (not selected with ``--tenant``) does not. Without a previous run
(``None``) everything counts as changed, so the first run always reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from auditor.model import RunResult, Status

from .settings import Policy

__all__ = ["ATTENTION_STATUSES", "Decision", "StatusChange", "decide", "status_changes"]

# Statuses that make a tenant worth a message under on_gaps (and that messages list by name).
ATTENTION_STATUSES: Final = (Status.NON_COMPLIANT, Status.AMBIGUOUS, Status.ERROR)


@dataclass(frozen=True)
class StatusChange:
    """One tenant whose status differs from the previous run's (``before`` None: not in that run)."""

    name: str
    tenant_id: str
    before: str | None
    after: str


@dataclass(frozen=True)
class Decision:
    """Whether to send, and why (the reason is shown when a channel is skipped)."""

    send: bool
    reason: str


def status_changes(run: RunResult, previous: Mapping[str, str] | None) -> list[StatusChange] | None:
    """Tenants of this run whose status differs from ``previous`` (tenant id -> status value); ``None``
    when there is no previous run to compare with."""
    if previous is None:
        return None
    before = {str(k).strip().lower(): str(v) for k, v in previous.items()}
    changes = []
    for tenant in run.tenants:
        old = before.get(tenant.tenant_id.strip().lower())
        if old != tenant.status.value:
            changes.append(StatusChange(tenant.name, tenant.tenant_id, old, tenant.status.value))
    return changes


def decide(policy: Policy, run: RunResult, previous: Mapping[str, str] | None) -> Decision:
    """Apply a channel's policy to a finished run."""
    if policy is Policy.ALWAYS:
        return Decision(True, "sent after every run")
    if policy is Policy.ON_GAPS:
        attention = sum(1 for t in run.tenants if t.status in ATTENTION_STATUSES)
        if attention:
            return Decision(True, f"{attention} tenant(s) have a gap or could not be audited")
        if run.vendor_nowhere_notice:
            return Decision(True, "the vendor app was found in none of the tenants")
        return Decision(False, "no tenant has a gap or an error")
    changes = status_changes(run, previous)
    if changes is None:
        return Decision(True, "no previous run to compare with")
    if changes:
        return Decision(True, f"{len(changes)} tenant(s) changed status since the previous run")
    return Decision(False, "no tenant changed status since the previous run")
