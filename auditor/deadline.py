"""The time a tenant's audit has left, shared by everything that retries on its behalf.

The fleet runner sets a deadline for each tenant (`run.tenant_timeout_seconds`) before it calls the
audit; the Graph reader reads it to decide whether one more retry fits, and gives up in time to say
why. It is a context variable, so each tenant's task sees its own deadline and nothing else has to
pass it along. Outside a run (doctor, remediation) there is none and callers use their own budget.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["TenantDeadline", "current_deadline", "tenant_deadline"]


@dataclass(frozen=True)
class TenantDeadline:
    """When the tenant's retries must stop (time.monotonic()), and the budget it was set from."""

    at: float
    seconds: float

    def left(self) -> float:
        return self.at - time.monotonic()


_DEADLINE: ContextVar[TenantDeadline | None] = ContextVar("uss_tenant_deadline", default=None)


def current_deadline() -> TenantDeadline | None:
    """The deadline of the tenant being audited in this task, if a run set one."""
    return _DEADLINE.get()


@contextmanager
def tenant_deadline(seconds: float, budget: float | None = None) -> Iterator[TenantDeadline]:
    """Within the block, retries on behalf of this task stop `seconds` from now.

    `budget` is the configured figure to name in messages (defaults to `seconds`).
    """
    deadline = TenantDeadline(time.monotonic() + seconds, seconds if budget is None else budget)
    token = _DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        _DEADLINE.reset(token)
