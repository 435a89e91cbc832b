"""The fleet runner: audits every selected tenant concurrently, each isolated from the others' failures.

The runner knows nothing about Graph: it takes the per-tenant audit as a callable (in production
:class:`auditor.collect.TenantAuditor`, in tests a small fake) and guarantees, whatever that callable
does, one result per tenant in config order:

* at most ``concurrency`` tenants are audited at a time;
* a tenant that raises becomes that tenant's ``error`` result (never a crash of the run, never a
  traceback in a report: the traceback goes to the debug log);
* a tenant that runs past ``tenant_timeout`` is cancelled and becomes an ``error`` result with code
  ``TIMEOUT``. Before that, the tenant's own retries see the deadline (``auditor.deadline``) a little
  earlier, so a tenant whose Graph keeps failing gives up by itself and says what kept failing; the
  cancellation is the backstop for anything that ignores it.

Progress is reported through the small :class:`Progress` interface; the terminal and log
implementations live in :mod:`auditor.output`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeAlias

from auditor import __version__
from auditor.config import TenantConfig
from auditor.deadline import tenant_deadline
from auditor.errors import AuditorError, ErrorCode, TenantError
from auditor.model import RunMode, RunResult, TenantResult, error_result, internal_error

__all__ = ["Progress", "TenantAudit", "audit_tenant_isolated", "run_fleet"]

log = logging.getLogger(__name__)

# What the runner calls for each tenant: never expected to raise, but allowed to.
TenantAudit: TypeAlias = Callable[[TenantConfig], Awaitable[TenantResult]]


class Progress(Protocol):
    """Told about the run as it goes; implementations draw a bar or write log lines."""

    def start(self, total: int) -> None:
        """The run starts with ``total`` tenants."""

    def tenant_done(self, result: TenantResult, seconds: float) -> None:
        """One tenant finished (in whatever status) after ``seconds`` of wall time."""

    def finish(self) -> None:
        """Every tenant is done (also called when the run is interrupted)."""


async def run_fleet(
    tenants: Sequence[TenantConfig],
    audit: TenantAudit,
    *,
    concurrency: int,
    tenant_timeout: float,
    mode: RunMode,
    currency: str,
    progress: Progress | None = None,
    spool: Callable[[TenantResult], TenantResult] | None = None,
) -> RunResult:
    """Audit ``tenants`` with ``audit``, at most ``concurrency`` at a time, each within ``tenant_timeout``
    seconds; returns the run with one result per tenant, in the order given.

    Never raises because of a tenant: exceptions and time-outs become ``error`` results (see
    :func:`audit_tenant_isolated`). Cancelling the run cancels every tenant still in flight.
    ``spool`` (e.g. :meth:`auditor.reporting.spool.TenantSpool.add`) takes each result as it finishes and
    returns what the run keeps of it: the shared-mailbox lists then wait on disk, not in memory.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    if tenant_timeout <= 0:
        raise ValueError(f"tenant_timeout must be positive, not {tenant_timeout}")
    run_id = str(uuid.uuid4())
    started_at = datetime.now(UTC)
    slots = asyncio.Semaphore(concurrency)
    log.debug(
        "run %s: %d tenant(s), concurrency %d, tenant timeout %g s",
        run_id,
        len(tenants),
        concurrency,
        tenant_timeout,
    )

    async def one(tenant: TenantConfig) -> TenantResult:
        async with slots:
            began = time.monotonic()
            result = await audit_tenant_isolated(
                tenant, audit, tenant_timeout=tenant_timeout, currency=currency
            )
            seconds = time.monotonic() - began
        if spool is not None:
            result = spool(result)
        if progress is not None:
            progress.tenant_done(result, seconds)
        return result

    if progress is not None:
        progress.start(len(tenants))
    try:
        results = await asyncio.gather(*(one(t) for t in tenants))
    finally:
        if progress is not None:
            progress.finish()
    return RunResult(
        run_id=run_id,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        tool_version=__version__,
        mode=mode,
        tenants=tuple(results),
        currency=currency,
    )


async def audit_tenant_isolated(
    tenant: TenantConfig, audit: TenantAudit, *, tenant_timeout: float, currency: str
) -> TenantResult:
    """Run ``audit(tenant)`` so that nothing it does can escape: a hang past ``tenant_timeout`` seconds
    becomes an ``error`` result with code ``TIMEOUT`` (the audit is cancelled), an :class:`AuditorError`
    keeps its own code and hint, and any other exception becomes ``INTERNAL_ERROR`` naming its type.
    """
    label = tenant.label
    deadline = asyncio.timeout(tenant_timeout)
    try:
        with tenant_deadline(tenant_timeout - give_up_margin(tenant_timeout), budget=tenant_timeout):
            async with deadline:
                return await audit(tenant)
    except TimeoutError as exc:
        if not deadline.expired():
            # A TimeoutError from inside the audit (a socket, a lock): not our deadline, so a bug upstream.
            return _failed(tenant, currency, _unexpected(label, exc))
        log.debug(
            "%s: cancelled after the tenant timeout of %g s",
            label,
            tenant_timeout,
            extra={"tenant": tenant.name, "tenant_id": tenant.tenant_id, "event": "tenant_timeout"},
        )
        return _failed(
            tenant,
            currency,
            TenantError(
                ErrorCode.TIMEOUT,
                f"{label}: the audit did not finish within {tenant_timeout:g} s and was cancelled",
                "Re-run; if it keeps timing out raise run.tenant_timeout_seconds in the config, and check "
                "the network path to Microsoft Graph and the Microsoft 365 service health page.",
            ),
        )
    except AuditorError as exc:
        log.debug(
            "%s: %s",
            label,
            exc,
            exc_info=True,
            extra={"tenant": tenant.name, "tenant_id": tenant.tenant_id, "event": "tenant_error"},
        )
        return _failed(tenant, currency, exc.to_tenant_error())
    except Exception as exc:
        return _failed(tenant, currency, _unexpected(label, exc))


def give_up_margin(tenant_timeout: float) -> float:
    """How long before the hard cancellation the tenant's retries stop: time to report what failed."""
    return min(2.0, 0.05 * tenant_timeout)


def _unexpected(label: str, exc: BaseException) -> TenantError:
    # The traceback is for the developer (debug log); the report gets the type and message only.
    log.debug("%s: unexpected %s while auditing", label, type(exc).__name__, exc_info=exc)
    detail = str(exc).strip()
    return internal_error(f"{label}: unexpected {type(exc).__name__}" + (f": {detail}" if detail else ""))


def _failed(tenant: TenantConfig, currency: str, error: TenantError) -> TenantResult:
    return error_result(
        tenant.name,
        tenant.tenant_id,
        error,
        price_per_mailbox=tenant.price_per_mailbox,
        currency=currency,
        tags=tenant.tags,
    )
