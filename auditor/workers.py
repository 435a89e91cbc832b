"""`auditor audit --workers N`: one run audited by N processes, so a CPU-bound fleet uses every core.

The HTTP stack costs CPU per Graph request, and one Python process uses one core: at 1,000 tenants a
single process is CPU-bound. Here the parent splits the selected tenants into N disjoint subsets
(interleaved, so every worker gets a similar mix), forks N child processes that each audit their subset
with the ordinary runner (`auditor.runner.run_fleet`), and gathers every tenant's result as it finishes.
The user sees one ordinary run: one run id, one progress display (fed by the children's results as they
arrive), one set of reports, one history entry, one notification: everything after the audit happens once,
in the parent, exactly as in a single-process run.

* The run's concurrency is shared out, not multiplied: N workers with concurrency C audit C tenants at a
  time in all, so Graph sees the same load as a single-process run.
* A fleet smaller than `MIN_TENANTS_PER_WORKER` x 2 tenants is audited in-process: it would not pay back
  the process start-up.
* `--remediate` and `--capture` run in one process (`workers_for`): remediation asks for confirmation once,
  at a terminal, and applies writes with one journal; a capture is one directory written by one process.
  Both audit in-process, exactly as before.
* The incremental census (`auditor.census`) works as in one process: a child reads the stored censuses
  of its tenants with a connection of its own (an SQLite connection must not cross a fork), and sends each
  census it would store to the parent, which writes it with the run's connection, the history's one
  writer (`ChildCensusStore`).
* Ctrl+C (SIGINT) reaches the parent, which stops the children and is interrupted like a single-process run
  (exit code 130); SIGTERM stops the children, then the parent dies of it as a single-process run does. A
  child that dies leaves its unfinished tenants as `error` results (INTERNAL_ERROR), never missing.

The split is by position, the same stable one as `--shard` uses for tenant ids is not needed here: the
parts are merged at once, in config order, into one `RunResult`, as `auditor.shard.merge_parts` does for
parts written to disk.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import multiprocessing
import os
import queue
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final, TypeVar, cast

from auditor import __version__
from auditor.config import TenantConfig
from auditor.model import RunMode, RunResult, TenantResult, error_result, internal_error
from auditor.runner import Progress, TenantAudit, run_fleet

log = logging.getLogger(__name__)

MAX_DEFAULT_WORKERS: Final = 8  # more processes than this only add start-up and memory
MIN_TENANTS_PER_WORKER: Final = 8  # below 2 x this many tenants, one process is faster


def default_workers() -> int:
    """The machine's cores (those this process may use), capped at `MAX_DEFAULT_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def workers_for(requested: int | None, tenants: int, *, remediate: bool, capture: bool) -> int:
    """How many processes audit a run of ``tenants`` tenants: 1 (in-process) for remediation, a capture,
    a small fleet or ``--workers 1``; else the request (default: `default_workers`), at most one process per
    `MIN_TENANTS_PER_WORKER` tenants."""
    wanted = default_workers() if requested is None else requested
    if wanted <= 1 or remediate or capture or tenants < 2 * MIN_TENANTS_PER_WORKER:
        return 1
    return max(1, min(wanted, tenants // MIN_TENANTS_PER_WORKER))


def split(count: int, workers: int) -> list[list[int]]:
    """Positions 0..count-1 dealt round-robin into ``workers`` disjoint lists (none empty if count allows)."""
    return [list(range(k, count, workers)) for k in range(workers) if k < count]


def share(total: int, parts: int) -> list[int]:
    """``total`` concurrency shared out over ``parts`` workers, each at least 1, summing to max(total, parts)."""
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if k < extra else 0)) for k in range(parts)]


class _QueueProgress:
    """A child's progress: every finished tenant (its result) goes to the parent through the queue."""

    def __init__(self, channel: Any, positions: Sequence[int]) -> None:
        self.channel = channel
        self.positions = positions
        self.index: dict[str, int] = {}

    def start(self, total: int) -> None:
        pass

    def tenant_done(self, result: TenantResult, seconds: float) -> None:
        self.channel.put(("done", self.index.pop(result.tenant_id.lower(), -1), result, seconds))

    def finish(self) -> None:
        pass


class ChildCensusStore:
    """A worker's view of the stored censuses (`auditor.census.CensusStore`): it reads them through a
    connection it opens itself, after the fork, and hands every census to store to the parent."""

    def __init__(self, path: Path, channel: Any) -> None:
        self.path = path
        self.channel = channel
        self._reader: Any = None

    def load_census(self, tenant_id: str) -> tuple[int, str, str, bytes] | None:
        if self._reader is None:
            from auditor.history.store import HistoryStore

            self._reader = HistoryStore.open(self.path, create=False)
        census: tuple[int, str, str, bytes] | None = self._reader.load_census(tenant_id)
        return census

    def save_census(self, tenant_id: str, fmt: int, delta_link: str, full_read_at: str, blob: bytes) -> None:
        self.channel.put(("census", -1, (tenant_id, fmt, delta_link, full_read_at, blob), 0.0))


def _census_book(audit: TenantAudit) -> Any:
    """The audit's census book (`auditor.census.CensusBook`) when it has a store, else None."""
    book = getattr(audit, "census", None)
    return book if book is not None and getattr(book, "store", None) is not None else None


def _store_census(store: Any, payload: tuple[str, int, str, str, bytes]) -> None:
    """Write a child's census with the run's connection; a failure costs only the next night's increment."""
    try:
        store.save_census(*payload)
    except sqlite3.Error as exc:
        log.warning(
            "The census of tenant %s could not be stored (%s); the next night reads it in full",
            payload[0],
            exc,
        )


def _child(
    channel: Any,
    worker: int,
    tenants: Sequence[TenantConfig],
    positions: Sequence[int],
    audit: TenantAudit,
    options: dict[str, Any],
) -> None:
    """A worker process: audit its tenants, send each result as it finishes, then say it is done."""
    # Ctrl+C goes to the whole process group: the parent decides, and stops the children itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    book = _census_book(audit)
    if book is not None:  # the parent's connection stays the parent's
        book.store = ChildCensusStore(Path(book.store.path), channel)
    progress = _QueueProgress(channel, positions)
    progress.index = {t.tenant_id.lower(): p for t, p in zip(tenants, positions, strict=True)}
    asyncio.run(run_fleet(tenants, audit, progress=progress, **options))
    channel.put(("end", worker, None, 0.0))
    channel.close()
    channel.join_thread()


F = TypeVar("F", bound=Callable[..., Any])


def _frozen_heap(function: F) -> F:
    """Run ``function`` with the objects alive when it starts (the loaded SDKs, the config: they live as
    long as the audit) out of the garbage collector's sight: a full collection stops re-scanning them
    (about 10 % of a run's CPU went to the collector), and forked workers keep sharing those pages instead
    of copying them when the collector touches them (the gc documentation recommends gc.freeze before a
    fork). Unfrozen when it returns."""

    @functools.wraps(function)
    def frozen(*args: Any, **kwargs: Any) -> Any:
        gc.freeze()
        try:
            return function(*args, **kwargs)
        finally:
            gc.unfreeze()

    return cast(F, frozen)


@_frozen_heap
def run_fleet_in_workers(
    tenants: Sequence[TenantConfig],
    audit: TenantAudit,
    workers: int,
    *,
    concurrency: int,
    tenant_timeout: float,
    mode: RunMode,
    currency: str,
    progress: Progress | None = None,
    spool: Callable[[TenantResult], TenantResult] | None = None,
) -> RunResult:
    """Like `run_fleet` (one result per tenant, in the order given) but audited by ``workers`` forked
    processes. ``audit`` is inherited by the children (fork), so it needs no pickling; results are pickled
    back one tenant at a time."""
    if workers <= 1:
        return asyncio.run(
            run_fleet(
                tenants,
                audit,
                concurrency=concurrency,
                tenant_timeout=tenant_timeout,
                mode=mode,
                currency=currency,
                progress=progress,
                spool=spool,
            )
        )
    started_at = datetime.now(UTC)
    book = _census_book(audit)
    census_store = book.store if book is not None else None
    context = multiprocessing.get_context("fork")
    channel: Any = context.Queue()
    groups = split(len(tenants), workers)
    slots = share(concurrency, len(groups))
    children = []
    for worker, (positions, slot) in enumerate(zip(groups, slots, strict=True)):
        options = {"concurrency": slot, "tenant_timeout": tenant_timeout, "mode": mode, "currency": currency}
        child = context.Process(
            target=_child,
            args=(channel, worker, [tenants[p] for p in positions], positions, audit, options),
            name=f"auditor-worker-{worker + 1}",
            daemon=True,
        )
        children.append(child)
    log.info(
        "Auditing with %d worker processes (concurrency %s)",
        len(children),
        "+".join(map(str, slots)),
        extra={"event": "workers_start"},
    )
    results: dict[int, TenantResult] = {}
    ended: set[int] = set()

    def stop_children(*_: Any) -> None:
        for child in children:
            if child.is_alive():
                child.terminate()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop_children()
        signal.signal(signal.SIGTERM, previous_term)
        os.kill(os.getpid(), signal.SIGTERM)

    previous_term: Callable[..., Any] | int | None = signal.getsignal(signal.SIGTERM)
    if previous_term is None:
        previous_term = signal.SIG_DFL
    signal.signal(signal.SIGTERM, on_sigterm)
    if progress is not None:
        progress.start(len(tenants))
    try:
        for child in children:
            child.start()
        while len(ended) < len(children):
            try:
                kind, key, payload, seconds = channel.get(timeout=0.5)
            except queue.Empty:
                dead = [k for k, c in enumerate(children) if k not in ended and not c.is_alive()]
                for worker in dead:  # died without saying so: its unfinished tenants are errors
                    _drain(channel, results, progress, ended, spool, census_store)
                    if worker in ended:
                        continue
                    ended.add(worker)
                    _lost(
                        worker,
                        children[worker].exitcode,
                        groups[worker],
                        tenants,
                        results,
                        currency,
                        progress,
                    )
                continue
            _received(kind, key, payload, seconds, results, progress, ended, spool, census_store)
    except BaseException:
        stop_children()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        for child in children:
            child.join(timeout=5)
        if progress is not None:
            progress.finish()
    for worker, positions in enumerate(groups):  # a child that ended but lost a result (cannot happen)
        _lost(worker, 0, [p for p in positions if p not in results], tenants, results, currency, None)
    return RunResult(
        run_id=str(uuid.uuid4()),
        started_at=started_at,
        finished_at=datetime.now(UTC),
        tool_version=__version__,
        mode=mode,
        tenants=tuple(results[p] for p in range(len(tenants))),
        currency=currency,
    )


def _received(
    kind: str,
    key: int,
    payload: Any,
    seconds: float,
    results: dict[int, TenantResult],
    progress: Progress | None,
    ended: set[int],
    spool: Callable[[TenantResult], TenantResult] | None,
    census_store: Any,
) -> None:
    """One message from a child: a tenant's result, a census to store, or the child's end."""
    if kind == "done":
        # Spooled in the parent as each result arrives: the children's lists never pile up here.
        results[key] = spool(payload) if spool is not None else payload
        if progress is not None:
            progress.tenant_done(payload, seconds)
    elif kind == "census":
        if census_store is not None:
            _store_census(census_store, payload)
    else:
        ended.add(key)


def _drain(
    channel: Any,
    results: dict[int, TenantResult],
    progress: Progress | None,
    ended: set[int],
    spool: Callable[[TenantResult], TenantResult] | None = None,
    census_store: Any = None,
) -> None:
    """Take what is still queued (a child may have sent results just before it died)."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            kind, key, payload, seconds = channel.get(timeout=0.1)
        except queue.Empty:
            return
        _received(kind, key, payload, seconds, results, progress, ended, spool, census_store)


def _lost(
    worker: int,
    exitcode: int | None,
    positions: Sequence[int],
    tenants: Sequence[TenantConfig],
    results: dict[int, TenantResult],
    currency: str,
    progress: Progress | None,
) -> None:
    for position in positions:
        if position in results:
            continue
        tenant = tenants[position]
        error = internal_error(
            f"{tenant.label}: the worker process auditing it stopped (exit code {exitcode}) before the tenant "
            "was audited; re-run (with --workers 1 if it happens again)"
        )
        result = error_result(
            tenant.name,
            tenant.tenant_id,
            error,
            price_per_mailbox=tenant.price_per_mailbox,
            currency=currency,
            tags=tenant.tags,
        )
        results[position] = result
        if progress is not None:
            progress.tenant_done(result, 0.0)
