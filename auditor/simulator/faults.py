"""Fault injection and request accounting for the simulator.

Faults come in two kinds: random ones drawn from a `FaultProfile` (per tenant, or the world's default),
and targeted `FaultRule`s that a test adds to make one exact thing happen (a 503 after a POST has
already been applied, say). Throttling is stateful the way Graph's is: after a 429 with Retry-After R,
any request for the same throttle key that arrives before R has passed is answered 429 again and
counted as an early retry, which tests read to prove a client honours Retry-After.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import Any

# Requests that reach the server within this long after a 429 was sent were already in flight when
# the client got it: they are throttled again, but not counted as the client ignoring Retry-After.
IN_FLIGHT_GRACE_SECONDS = 0.05


@dataclass(frozen=True)
class FaultProfile:
    """Random behaviour for a tenant (or every tenant). Rates are probabilities per request."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    batch_latency_ms: float | None = None  # a `$batch` POST's latency (None: latency_ms), for benchmarks
    throttle_rate: float = 0.0  # 429 TooManyRequests, at top level and per $batch item
    retry_after_seconds: int = 1
    error_rate: float = 0.0  # one of error_statuses
    error_statuses: tuple[int, ...] = (500, 502, 503, 504)
    error_retry_after: bool = True  # whether a 503 names a Retry-After (Graph's sometimes do, not always)
    reset_rate: float = 0.0  # connection closed without a response
    slow_rate: float = 0.0  # answer only after slow_seconds (to trip client time-outs)
    slow_seconds: float = 30.0
    mailbox_concurrency: int | None = 4  # concurrent mailbox requests per app and tenant; None = no limit
    batch_items: bool = True  # whether throttle/error rates also apply inside $batch
    routes: tuple[str, ...] = ()  # limit random faults to these route names (empty = all)
    lost_write_rate: float = 0.0  # a write (POST) is applied, then its answer is lost (connection dropped)
    # Directory replication: a new role assignment is invisible to reads for this long after its POST.
    # "A new assignment can take a while to be visible" (../shared/graph-api-notes.md, citing Microsoft's
    # "Assign Microsoft Entra roles" and unifiedRoleAssignment create documentation, and field reports of
    # a create followed at once by a GET that answers 404 / an empty list).
    replication_delay_seconds: float = 0.0

    @classmethod
    def mix(
        cls, rate: float, *, slow_seconds: float = 90.0, replication_delay_seconds: float = 0.0
    ) -> FaultProfile:
        """The fault mode's mix at rate r (issue 11): 429 with `Retry-After: 1` (r), 503 without a
        Retry-After (r/2), dropped connections (r/3), answers slower than the client's time-out (r/10),
        per-item 429 and 503 inside `$batch` (r, r/2), and lost answers to writes that were applied (r).
        `slow_seconds` must exceed the client's per-request time-out (`run.request_timeout_seconds`)."""
        return cls().mixed(
            rate, slow_seconds=slow_seconds, replication_delay_seconds=replication_delay_seconds
        )

    def mixed(
        self, rate: float, *, slow_seconds: float = 90.0, replication_delay_seconds: float = 0.0
    ) -> FaultProfile:
        """This profile (its latency, its mailbox limit) with the fault mode's mix at rate r (see `mix`)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a fault rate is a fraction from 0 to 1, not {rate!r}")
        return replace(
            self,
            throttle_rate=rate,
            retry_after_seconds=1,
            error_rate=rate / 2,
            error_statuses=(503,),
            error_retry_after=False,
            reset_rate=rate / 3,
            slow_rate=rate / 10,
            slow_seconds=slow_seconds,
            batch_items=True,
            routes=(),
            lost_write_rate=rate,
            replication_delay_seconds=replication_delay_seconds,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultProfile:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in ("error_statuses", "routes"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def applies_to(self, route: str) -> bool:
        return not self.routes or route in self.routes


@dataclass
class FaultRule:
    """A targeted fault: when a request matches, answer `status` (or reset/delay) `times` times.

    `after=True` performs the real operation first and then replaces the answer, which is how a test
    makes "the POST succeeded on the server but the client saw a 503".
    """

    route: str | None = None
    method: str | None = None
    tenant_id: str | None = None
    status: int = 503
    code: str = "ServiceUnavailable"
    message: str = "The service is temporarily unavailable."
    retry_after: int | None = None
    after: bool = False
    reset: bool = False
    delay_seconds: float = 0.0
    times: int = 1
    in_batch: bool | None = None  # None: top-level and batch items alike
    # Answer with a gateway's HTML page instead of Graph's JSON error envelope (a top-level request only).
    # Graph has answered 503s with an HTML body during incidents, which the SDKs cannot parse: field
    # reports in microsoft/kiota-java#1683 ("status code 503, with some html error message"),
    # microsoftgraph/msgraph-sdk-dotnet#2803 and #3009 ("Content type text/html does not have a factory").
    html: bool = False
    hits: int = 0

    def matches(self, route: str, method: str, tenant_id: str | None, in_batch: bool) -> bool:
        if self.hits >= self.times:
            return False
        if self.route is not None and self.route != route:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.tenant_id is not None and (tenant_id or "").lower() != self.tenant_id.lower():
            return False
        if self.html and in_batch:
            return False  # a gateway answers for the whole HTTP request, never for one $batch item
        return self.in_batch is None or self.in_batch == in_batch


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator saw it (a $batch item is its own record, with its parent's seq)."""

    seq: int
    time: float
    tenant_id: str | None
    app_id: str | None
    method: str
    path: str
    route: str
    status: int
    batch_parent: int | None = None
    early: bool = False
    fault: str | None = None
    body: Any = None  # request body for writes (never a secret: token requests are not logged with bodies)


@dataclass
class Observer:
    """Request log and counters. Written from the server's loop; read from tests through `snapshot`."""

    log_limit: int = 200_000
    log: deque[RequestRecord] = field(default_factory=deque)
    counters: Counter[tuple[str | None, str, int]] = field(default_factory=Counter)
    early_retries: int = 0
    _seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.log = deque(maxlen=self.log_limit)

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self.log.append(record)
            self.counters[(record.tenant_id, record.route, record.status)] += 1
            if record.early:
                self.early_retries += 1

    def snapshot(self) -> tuple[list[RequestRecord], Counter[tuple[str | None, str, int]], int]:
        with self._lock:
            return list(self.log), Counter(self.counters), self.early_retries

    def reset(self) -> None:
        with self._lock:
            self.log.clear()
            self.counters.clear()
            self.early_retries = 0


class Throttle:
    """Remembers Retry-After promises per throttle key and tells whether a request came too early."""

    def __init__(self) -> None:
        self._until: dict[tuple[str, ...], tuple[float, float]] = {}  # key -> (issued_at, blocked_until)

    def block(self, key: tuple[str, ...], seconds: float) -> None:
        now = time.monotonic()
        self._until[key] = (now, now + seconds)

    def check(self, key: tuple[str, ...]) -> tuple[float, bool] | None:
        """(seconds left, early?) while `key` is blocked; None when it may proceed."""
        entry = self._until.get(key)
        if entry is None:
            return None
        issued, until = entry
        now = time.monotonic()
        if now >= until:
            del self._until[key]
            return None
        # Tenant-wide keys allow for requests already in flight; a per-mailbox key names one item the
        # client was told about, so asking for it again at once is always early.
        grace = IN_FLIGHT_GRACE_SECONDS if len(key) <= 2 else 0.0
        return until - now, now - issued > grace


class FaultDice:
    """Seeded randomness, so that a run with faults can be repeated exactly."""

    def __init__(self, seed: int = 0):
        self._random = random.Random(seed)

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    def choice(self, options: tuple[int, ...]) -> int:
        return self._random.choice(options)

    def jitter(self, spread: float) -> float:
        return self._random.uniform(0, spread) if spread > 0 else 0.0

    def shuffle(self, items: list[Any]) -> None:
        self._random.shuffle(items)
