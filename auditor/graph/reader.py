"""Reading one tenant's Graph: requests built by the SDK, answers read as plain JSON, retries ours.

Why plain JSON: the SDK's model parsing costs about 7 ms per user object (see `make bench`), which
would turn a 2,000-user tenant into a 15-second parse. Requests are still built by the SDK's request
builders (URL templates, query encoding) and sent through its adapter (authentication, redirects).

Why our own retries: the SDK retries each request on its own, so while one request waits out a
Retry-After, its siblings keep hitting the throttled tenant. Here a 429 pauses the whole tenant
(`ThrottleGate`) until its Retry-After has passed, and `$batch` items throttled inside a 200 envelope
are re-queued after their own Retry-After.

The retry policy is one of time, not of counts (`RetryPolicy`):

* a 429 with Retry-After is pacing, not failure: the tenant waits it out and tries again, as often as
  Graph asks, without using up anything;
* a failure (5xx, a reset or dropped connection, no answer within `run.request_timeout_seconds`, a 429
  without Retry-After, a 5xx from the sign-in endpoint) is retried after an exponential back-off with
  full jitter; a 503 that names a Retry-After waits that long instead;
* one request keeps retrying failures for at most `patience_seconds` from its first failure (so one
  broken mailbox cannot use up the tenant), and nothing is retried past the tenant's deadline
  (`run.tenant_timeout_seconds`, `auditor.deadline`): the reader then gives up with a code that says
  what kept failing (TIMEOUT, THROTTLED, NETWORK_ERROR or GRAPH_ERROR) and a hint, before the runner
  has to cancel the tenant.

The same policy covers paging (each page is a request), the whole `$batch` POST and each of its items.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from azure.core.exceptions import (
    ClientAuthenticationError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.organization.organization_request_builder import OrganizationRequestBuilder
from msgraph.generated.role_management.directory.role_assignment_schedule_instances.role_assignment_schedule_instances_request_builder import (
    RoleAssignmentScheduleInstancesRequestBuilder,
)
from msgraph.generated.role_management.directory.role_assignments.role_assignments_request_builder import (
    RoleAssignmentsRequestBuilder,
)
from msgraph.generated.role_management.directory.role_eligibility_schedule_instances.role_eligibility_schedule_instances_request_builder import (
    RoleEligibilityScheduleInstancesRequestBuilder,
)
from msgraph.generated.service_principals.service_principals_request_builder import (
    ServicePrincipalsRequestBuilder,
)
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from auditor.deadline import current_deadline
from auditor.errors import ErrorCode, GraphError, permission_hint, redact

from .client import GraphSession, graph_origin, lean_sender, retry_after_seconds, send_for_bytes

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
BATCH_LIMIT = 20
MAILBOX_BATCHES_IN_FLIGHT = 4  # Outlook's concurrency limit per app and mailbox owner
# A $batch POST refused as a whole (400/403/424 and the like, not a transient status) is tried this many
# times for its items before they are left unclassified: the envelope carries no verdict on any item.
BATCH_REFUSALS_TOLERATED = 3


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again: by time, not by count (see the module's docstring)."""

    budget_seconds: float = 600.0  # the tenant's time when no run deadline is set (auditor.deadline)
    patience_seconds: float = 120.0  # how long one request keeps retrying failures (throttling is free)
    connect_patience_seconds: float = 20.0  # ... when the endpoint could not be reached at all
    base_delay: float = 0.5  # full-jitter back-off: uniform(0, min(max_delay, base_delay * 2**n))
    max_delay: float = 30.0

    def backoff(self, failures: int) -> float:
        """The wait before retry number `failures + 1` after a failure: exponential back-off with full
        jitter (every client backs off by a different amount, so a fleet does not retry in step)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** min(failures, 30)))


@dataclass
class _Tries:
    """What happened to one request (or one $batch item) so far."""

    started: float = field(default_factory=time.monotonic)
    first_failure: float | None = None
    failures: Counter[str] = field(default_factory=Counter)  # why -> how often
    throttled: int = 0
    kind: str = ""  # of the last failure: throttled, timeout, connect, network, graph, sign-in
    last: str = ""  # the last failure, as a person reads it
    answered: bool = False  # the endpoint answered at least once (so it is reachable)
    request_id: str | None = None

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def summary(self) -> str:
        parts = [f"{n} x {why}" for why, n in self.failures.most_common()]
        if self.throttled:
            parts.append(f"{self.throttled} x 429 with Retry-After (waited out)")
        return ", ".join(parts) or "no answer yet"


# A hybrid tenant's mailbox hosted in on-premises Exchange answers with one of these (graph-api-notes,
# "Fidelity review"): 404 MailboxNotEnabledForRESTAPI / MailboxNotHostedInExchangeOnline
# (microsoft-graph-docs-contrib#6519), or 403 ErrorAccessDenied "... REST APIs for this mailbox are
# currently in preview ..." (microsoft-graph-explorer-v4#1478).
NOT_IN_EXCHANGE_ONLINE_CODES = frozenset({"mailboxnotenabledforrestapi", "mailboxnothostedinexchangeonline"})
REST_PREVIEW_MARKER = "rest apis for this mailbox are currently in preview"


@dataclass(frozen=True)
class MailboxAnswer:
    """What Graph said about one user's mailbox."""

    purpose: str | None  # userPurpose value when read
    no_mailbox: bool = False  # 404 MailboxNotEnabledForRESTAPI (or the user vanished)
    failure: str | None = None  # why it could not be classified (after retries)
    status: int = 200
    code: str | None = None  # the error code Graph gave, when it gave one
    # The answer is one a mailbox hosted in on-premises Exchange gives (404 MailboxNotEnabledForRESTAPI /
    # MailboxNotHostedInExchangeOnline, or 403 "REST APIs for this mailbox are currently in preview").
    # Whether the user really is on-premises is decided with onPremisesSyncEnabled (collect.census_from).
    hybrid_kind: bool = False


_READ_ANSWERS: dict[str, MailboxAnswer] = {}


def classify_mailbox_item(status: int, body: dict[str, Any]) -> MailboxAnswer | None:
    """A final answer for one `GET /users/{id}/mailboxSettings/userPurpose` item, or None when the
    status is transient (429/5xx: the caller retries it)."""
    raw_error = body.get("error")
    error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    code = str(error.get("code") or "") or None
    message = str(error.get("message") or "")
    if status == 200:
        purpose = body.get("value")
        if purpose is None:  # the whole mailboxSettings object, should a server send it
            purpose = body.get("userPurpose")
        if isinstance(purpose, dict):  # an old documented shape: {"userPurpose": {"value": "user"}}
            purpose = purpose.get("value")
        text = str(purpose) if purpose else "unknown"
        # Answers are immutable: one per purpose, shared by every mailbox that has it (a handful of values
        # in Graph's enumeration; anything beyond is not kept).
        answer = _READ_ANSWERS.get(text)
        if answer is None:
            answer = MailboxAnswer(purpose=text)
            if len(_READ_ANSWERS) < 64:
                _READ_ANSWERS[text] = answer
        return answer
    if status == 404:
        # MailboxNotEnabledForRESTAPI: no Exchange Online mailbox (or hosted on-premises); ErrorInvalidUser:
        # gone since the user list was read. Neither is billed as a shared mailbox.
        hybrid = (code or "").casefold() in NOT_IN_EXCHANGE_ONLINE_CODES
        return MailboxAnswer(purpose=None, no_mailbox=True, status=404, code=code, hybrid_kind=hybrid)
    if status in TRANSIENT_STATUSES:
        return None
    hybrid = status == 403 and REST_PREVIEW_MARKER in message.casefold()
    return MailboxAnswer(
        purpose=None,
        failure=f"{status} {code or ''}".strip(),
        status=status,
        code=code,
        hybrid_kind=hybrid,
    )


@dataclass(frozen=True)
class UsersDelta:
    """One round of `GET /users/delta`: the users it returned and the deltaLink for the next round."""

    items: list[dict[str, Any]]
    delta_link: str


class GraphReader:
    """Read-only Graph calls for one tenant, with translation of every failure into a GraphError."""

    def __init__(self, session: GraphSession, tenant_label: str, *, policy: RetryPolicy | None = None):
        self.session = session
        self.client = session.client
        self.tenant_label = tenant_label
        self.policy = policy or RetryPolicy()
        self._own_deadline = time.monotonic() + self.policy.budget_seconds
        self._trouble: _Tries | None = None  # the latest request that was throttled or failed
        # Reads go out through the session's lean sender (aiohttp, the SDK's request builders and token;
        # `client.LeanSender`) when it has one; a client made elsewhere goes through the SDK's adapter.
        self._lean = lean_sender(self.client)

    @property
    def app_label(self) -> str:
        return f"the auditor app (client id {self.session.settings.client_id})"

    # --- time -----------------------------------------------------------------------------------------

    def time_left(self) -> float:
        """Seconds until this tenant's retries must stop (the run's deadline, else the policy's budget)."""
        own = self._own_deadline - time.monotonic()
        deadline = current_deadline()
        return own if deadline is None else min(own, deadline.left())

    def _budget_name(self) -> str:
        deadline = current_deadline()
        if deadline is not None:
            return f"run.tenant_timeout_seconds = {deadline.seconds:g}"
        return f"{self.policy.budget_seconds:g} s"

    # --- the one way a request is sent --------------------------------------------------------------

    async def send(
        self,
        build: Callable[[], RequestInformation],
        permission: str,
        *,
        via: Callable[[], Awaitable[bytes | None]] | None = None,
    ) -> dict[str, Any]:
        """Send a request (built afresh for every attempt) and return its JSON body.

        `via` sends it another way (the `$batch` POST); otherwise it goes through the session's lean sender
        (`client.LeanSender`), or the SDK's adapter for a client without one. All raise the same errors, so
        everything below treats them alike.

        Waits out every 429's Retry-After (tenant-wide), retries failures with back-off for as long as the
        policy's patience and the tenant's deadline allow, and raises GraphError with a code and an
        admin-ready hint when it cannot get an answer or Graph refuses.
        """
        tries = _Tries()
        while True:
            info = build()  # the session's throttle gate holds it back while the tenant is paused
            path = _pin_url(info, self.session.base_url)
            left = self.time_left()
            if left <= 0:
                raise self._gave_up(tries, path, deadline=True)
            scope = asyncio.timeout(left)
            try:
                async with scope:
                    if via is not None:
                        raw = await via()
                    elif self._lean is not None:
                        raw = await self._lean.send(info)
                    else:
                        raw = await send_for_bytes(self.client, info)
                return dict(json.loads(raw)) if raw else {}
            except TimeoutError:
                if scope.expired():  # the tenant's deadline, not the request's time-out
                    raise self._gave_up(tries, path, deadline=True) from None
                kind, why, wait = "timeout", self._no_answer(), None
            except ODataError as exc:
                status = exc.response_status_code or 0
                tries.answered = True
                tries.request_id = _odata_request_id(exc) or tries.request_id
                if status not in TRANSIENT_STATUSES:
                    raise self._translate_odata(exc, permission) from None
                delay = retry_after_seconds(exc.response_headers)
                code = exc.error.code if exc.error and exc.error.code else ""
                if status == 429 and delay is not None:
                    # Pacing: the gate holds every request of the tenant until Retry-After has passed.
                    tries.throttled += 1
                    self._trouble = tries
                    log.debug("%s: %s throttled for %g s", self.tenant_label, path, delay)
                    continue
                kind = "throttled" if status == 429 else "graph"
                why, wait = f"{status} {code}".strip(), delay
            except (httpx.TimeoutException, ServiceRequestTimeoutError, ServiceResponseTimeoutError):
                kind, why, wait = "timeout", self._no_answer(), None
            except (httpx.TransportError, OSError, ServiceRequestError, ServiceResponseError) as exc:
                if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise _network_error(exc, self.tenant_label) from None
                connect = isinstance(exc, (httpx.ConnectError, ServiceRequestError))
                kind = "connect" if connect else "network"
                why, wait = _transport_why(exc), None
            except ClientAuthenticationError as exc:
                auth_status = getattr(getattr(exc, "response", None), "status_code", None)
                if auth_status not in TRANSIENT_STATUSES:
                    settings = self.session.settings
                    raise translate_auth_error(
                        exc, settings.client_id, self.tenant_label, settings.tenant_id
                    ) from None
                # azure-identity already retried it (see client.make_credential); the sign-in endpoint
                # is failing, not the credential.
                kind = "throttled" if auth_status == 429 else "sign-in"
                why, wait = f"sign-in endpoint answered {auth_status}", None
            await self._after_failure(tries, path, kind, why, wait)

    async def _after_failure(self, tries: _Tries, path: str, kind: str, why: str, wait: float | None) -> None:
        """Count a failure, then wait before the next try, or raise when patience or time has run out."""
        now = time.monotonic()
        tries.failures[why] += 1
        tries.kind, tries.last = kind, why
        self._trouble = tries
        if tries.first_failure is None:
            tries.first_failure = now
        patience = self.policy.patience_seconds
        if kind == "connect" and not tries.answered:
            patience = min(patience, self.policy.connect_patience_seconds)
        if now - tries.first_failure >= patience:
            raise self._gave_up(tries, path, deadline=False)
        delay = wait if wait is not None else self.policy.backoff(tries.failed - 1)
        if delay >= self.time_left():
            raise self._gave_up(tries, path, deadline=True)
        log.debug("%s: %s failed (%s), retry in %.2f s", self.tenant_label, path, why, delay)
        await asyncio.sleep(delay)

    def _no_answer(self) -> str:
        return f"no answer within {self.session.settings.timeout_seconds:g} s"

    def _gave_up(self, tries: _Tries, path: str, *, deadline: bool) -> GraphError:
        """The error for a request that could not be answered: the code names what kept failing."""
        elapsed = time.monotonic() - tries.started
        stop = (
            f"the tenant's time ran out ({self._budget_name()})"
            if deadline
            else f"it kept failing for {self.policy.patience_seconds:g} s"
        )
        summary = tries.summary()
        if not tries.kind and not tries.throttled and self._trouble is not None:
            # This request only waited (behind the tenant's throttling, or its turn): what the tenant
            # went through is the reason.
            tries = self._trouble
            summary = f"it waited behind the tenant's other requests, which met {tries.summary()}"
        what = f"Gave up on {path} for tenant {self.tenant_label} after {elapsed:.1f} s: {stop}; {summary}"
        knobs = "run.tenant_timeout_seconds (and run.request_timeout_seconds)"
        if tries.kind == "throttled" or (not tries.kind and tries.throttled):
            # Busy, not down: the advice is to ask less at once.
            return GraphError(
                what,
                code=ErrorCode.THROTTLED,
                hint="Microsoft Graph kept throttling this tenant: re-run later, lower run.concurrency "
                "(--concurrency), or raise run.tenant_timeout_seconds.",
                request_id=tries.request_id,
            )
        if tries.kind in ("connect", "network"):
            code, hint = (
                ErrorCode.NETWORK_ERROR,
                "Connections to Microsoft Graph or the sign-in endpoint kept failing: check network access, "
                "proxy and firewall to both endpoints, then re-run.",
            )
        elif tries.kind in ("graph", "sign-in"):
            code, hint = (
                ErrorCode.GRAPH_ERROR,
                f"Microsoft kept failing ({tries.last}): check the Microsoft 365 service health page for "
                "an incident and re-run later; if it persists, report it with the request-id from the log.",
            )
        else:  # no answer in time, or the deadline passed while waiting
            code, hint = (
                ErrorCode.TIMEOUT,
                "Microsoft Graph did not answer in time: check the network path to Graph and the Microsoft "
                f"365 service health page, then re-run; if the tenant is just slow or large, raise {knobs}.",
            )
        if deadline:
            # The tenant's time ran out while Graph kept failing: the tenant is down for us, and the
            # code says so; the message and the hint say what kept failing.
            code = ErrorCode.TIMEOUT
        return GraphError(what, code=code, hint=hint, request_id=tries.request_id)

    def _translate_odata(self, exc: ODataError, permission: str) -> GraphError:
        status = exc.response_status_code or 0
        code = exc.error.code if exc.error else None
        message = exc.error.message if exc.error and exc.error.message else str(exc)
        request_id = None
        if exc.error is not None and exc.error.inner_error is not None:
            request_id = exc.error.inner_error.request_id
        answered = f"Graph answered {status} {code}" if code else f"Graph answered {status}"
        what = f"{answered}: {message}".replace("  ", " ")
        if status in (401, 403):
            return GraphError(
                f"{what} (tenant {self.tenant_label}; needs {permission})",
                code=ErrorCode.PERMISSION_DENIED,
                hint=permission_hint(permission, self.tenant_label, self.app_label),
                status=status,
                request_id=request_id,
            )
        if status == 429:
            return GraphError(
                f"{what} (still throttled)",
                code=ErrorCode.THROTTLED,
                status=status,
                request_id=request_id,
            )
        return GraphError(what, code=ErrorCode.GRAPH_ERROR, status=status, request_id=request_id)

    # --- helpers for requests -----------------------------------------------------------------------

    def builder_request(self, builder: Any, query: Any = None) -> Callable[[], RequestInformation]:
        """A factory for a request built by an SDK request builder, with query parameters."""

        def build() -> RequestInformation:
            config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
            # The SDK's request builders ask for JSON themselves (Accept: application/json).
            info: RequestInformation = builder.to_get_request_information(config)
            return info

        return build

    def url_request(
        self, url: str, headers: dict[str, str] | None = None
    ) -> Callable[[], RequestInformation]:
        """A factory for a GET of an absolute URL (an @odata.nextLink, or a path under the base URL)."""
        absolute = url if "://" in url else self.session.base_url.rstrip("/") + url

        def build() -> RequestInformation:
            info = RequestInformation()
            info.http_method = Method.GET
            info.url = absolute
            info.headers.try_add("Accept", "application/json")
            for name, value in (headers or {}).items():
                info.headers.try_add(name, value)
            return info

        return build

    async def get_all(
        self, first: Callable[[], RequestInformation], permission: str, headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a collection, following @odata.nextLink verbatim.

        A nextLink to any other host than the configured Graph endpoint is not followed (GraphError naming
        the host): Graph's own links point back at Graph, and a request there would carry the token.
        """
        items: list[dict[str, Any]] = []
        build = first
        while True:
            body = await self.send(build, permission)
            items.extend(body.get("value", []))
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return items
            link = str(next_link)
            if graph_origin(link) != graph_origin(self.session.base_url):
                scheme, host, port = graph_origin(link)
                raise GraphError(
                    f"Graph's answer for tenant {self.tenant_label} points its next page (@odata.nextLink) at "
                    f"another host, {scheme}://{host}:{port}; not followed, so the access token stays with "
                    "Graph and this section is incomplete",
                    code=ErrorCode.GRAPH_ERROR,
                    hint="Graph's next-page links always point back at Graph: something between the auditor "
                    "and Graph (a proxy, a test double) rewrote the answer. Check graph_endpoint and any "
                    "proxy, then re-run.",
                )
            build = self.url_request(link, headers)

    # --- the reads the collector needs (plain dicts out) -------------------------------------------

    async def organization(self) -> dict[str, Any] | None:
        query = OrganizationRequestBuilder.OrganizationRequestBuilderGetQueryParameters(
            select=["id", "displayName"]
        )
        body = await self.send(self.builder_request(self.client.organization, query), "Organization.Read.All")
        values = body.get("value") or []
        return dict(values[0]) if values else None

    async def service_principals(self, odata_filter: str, select: list[str]) -> list[dict[str, Any]]:
        query = ServicePrincipalsRequestBuilder.ServicePrincipalsRequestBuilderGetQueryParameters(
            filter=odata_filter, select=select, top=999
        )
        return await self.get_all(
            self.builder_request(self.client.service_principals, query), "Application.Read.All"
        )

    async def service_principal_by_app_id(self, app_id: str, select: list[str]) -> dict[str, Any]:
        query = "$select=" + ",".join(select)
        return await self.send(
            self.url_request(f"/servicePrincipals(appId='{app_id}')?{query}"), "Application.Read.All"
        )

    async def role_assignments(self, odata_filter: str) -> list[dict[str, Any]]:
        builder = self.client.role_management.directory.role_assignments
        query = RoleAssignmentsRequestBuilder.RoleAssignmentsRequestBuilderGetQueryParameters(
            filter=odata_filter
        )
        return await self.get_all(self.builder_request(builder, query), "RoleManagement.Read.Directory")

    async def role_assignment_instances(self, odata_filter: str) -> list[dict[str, Any]]:
        builder = self.client.role_management.directory.role_assignment_schedule_instances
        params = RoleAssignmentScheduleInstancesRequestBuilder.RoleAssignmentScheduleInstancesRequestBuilderGetQueryParameters
        return await self.get_all(
            self.builder_request(builder, params(filter=odata_filter)),
            "RoleManagement.Read.Directory (or RoleAssignmentSchedule.Read.Directory; Directory.Read.All "
            "does not cover PIM)",
        )

    async def role_eligibility_instances(self, odata_filter: str) -> list[dict[str, Any]]:
        builder = self.client.role_management.directory.role_eligibility_schedule_instances
        params = RoleEligibilityScheduleInstancesRequestBuilder.RoleEligibilityScheduleInstancesRequestBuilderGetQueryParameters
        return await self.get_all(
            self.builder_request(builder, params(filter=odata_filter)),
            "RoleManagement.Read.Directory (or RoleEligibilitySchedule.Read.Directory; Directory.Read.All "
            "does not cover PIM)",
        )

    async def transitive_member_of(self, sp_id: str) -> list[dict[str, Any]]:
        builder = self.client.service_principals.by_service_principal_id(sp_id).transitive_member_of
        return await self.get_all(self.builder_request(builder), "Application.Read.All")

    async def app_role_assignments(self, sp_id: str) -> list[dict[str, Any]]:
        builder = self.client.service_principals.by_service_principal_id(sp_id).app_role_assignments
        return await self.get_all(self.builder_request(builder), "Application.Read.All")

    async def users(self, select: list[str]) -> list[dict[str, Any]]:
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=select, top=999)
        return await self.get_all(self.builder_request(self.client.users, query), "User.Read.All")

    async def users_delta(
        self, select: list[str], delta_link: str | None = None, *, latest: bool = False
    ) -> UsersDelta:
        """One round of `GET /users/delta`: every page up to the one carrying `@odata.deltaLink`.

        Without ``delta_link``: the first round (every user), or with ``latest`` only a deltaLink for the
        directory as it is now ("sync from now", `$deltatoken=latest`). With ``delta_link`` (a stored
        `@odata.deltaLink`): only what changed since, removed users as `{"id", "@removed": {...}}`.
        Only `$select` is sent: `/users/delta` supports nothing else but `$filter` on ids
        (learn.microsoft.com graph/api/user-delta). Links are opaque and followed only to the configured
        Graph host. An expired token comes back as GraphError with status 410 (resync required).
        """
        if delta_link is not None:
            self._check_link(delta_link, "its stored delta link (@odata.deltaLink)")
            build = self.url_request(delta_link)
        else:
            query = "$select=" + ",".join(select) + ("&$deltatoken=latest" if latest else "")
            build = self.url_request(f"/users/delta?{query}")
        items: list[dict[str, Any]] = []
        while True:
            body = await self.send(build, "User.Read.All")
            items.extend(body.get("value", []))
            if body.get("@odata.deltaLink"):
                link = str(body["@odata.deltaLink"])
                self._check_link(link, "its delta link (@odata.deltaLink)")
                return UsersDelta(items, link)
            next_link = body.get("@odata.nextLink")
            if not next_link:
                raise GraphError(
                    f"Graph's answer to a users delta query for tenant {self.tenant_label} carried neither "
                    "@odata.nextLink nor @odata.deltaLink",
                    code=ErrorCode.GRAPH_ERROR,
                )
            self._check_link(str(next_link), "its next page (@odata.nextLink)")
            build = self.url_request(str(next_link))

    def _check_link(self, link: str, what: str) -> None:
        if graph_origin(link) == graph_origin(self.session.base_url):
            return
        scheme, host, port = graph_origin(link)
        raise GraphError(
            f"Graph's users delta for tenant {self.tenant_label} points {what} at another host, "
            f"{scheme}://{host}:{port}; not followed, so the access token stays with Graph",
            code=ErrorCode.GRAPH_ERROR,
            hint="Delta links always point back at Graph: check graph_endpoint and any proxy; the next "
            "night reads the census in full.",
        )

    # --- $batch --------------------------------------------------------------------------------------

    async def batch(self, items: list[dict[str, Any]], permission: str) -> dict[str, dict[str, Any]]:
        """One hand-built $batch (≤ 20 items); answers by item id. The SDK's batch helpers drop bodies."""
        if len(items) > BATCH_LIMIT:
            raise ValueError(f"a $batch holds at most {BATCH_LIMIT} requests")
        # The bulk path: the SDK's auth and our hooks, without kiota's middleware (client.LeanSender). Every
        # client a session opens has one; a closed session has none.
        lean = lean_sender(self.client)
        if lean is None:
            raise RuntimeError("this Graph session is closed: it has no $batch sender")
        payload = json.dumps({"requests": items}).encode()
        url = self.session.base_url + "/$batch"

        def build() -> RequestInformation:  # the request as `send` names it; the lean sender sends it
            info = RequestInformation()
            info.url = url
            return info

        async def via() -> bytes | None:
            return await lean.post_json(url, payload)

        body = await self.send(build, permission, via=via)
        return {str(item["id"]): item for item in body.get("responses", [])}

    async def mailbox_purposes(self, user_ids: Iterable[str]) -> dict[str, MailboxAnswer]:
        """userPurpose of every user's mailbox, 20 per $batch, at most 4 batches in flight.

        Items throttled inside a batch wait out their own Retry-After and go again; failed items (and the
        items of a $batch refused as a whole) go again after a back-off. An item still unanswered when its
        patience or the tenant's time runs out is returned with a `failure`, never dropped, and answers
        already collected are always kept.
        """
        ids = list(dict.fromkeys(user_ids))
        pending = set(ids)  # not answered yet (waiting in the queue, or in a $batch in flight)
        # The items waiting for their turn, soonest first: (not before (time.monotonic()), turn, id); the
        # turn keeps items due at the same time in the order they came. An item is in the queue at most
        # once (it is taken out to be asked, and put back only when it must be asked again), so taking
        # the next 20 costs O(20 log n), not a scan of every pending item.
        queue: list[tuple[float, int, str]] = [(0.0, turn, uid) for turn, uid in enumerate(ids)]
        turns = itertools.count(len(ids))

        def schedule(uid: str, not_before: float) -> None:
            heapq.heappush(queue, (not_before, next(turns), uid))

        tries: dict[str, _Tries] = {}
        refusals: dict[str, int] = {}
        answers: dict[str, MailboxAnswer] = {}

        def retry_later(uid: str, why: str, delay: float | None = None, status: int = 0) -> None:
            """A failed item: again after a back-off (or its Retry-After), or given up on."""
            now = time.monotonic()
            t = tries.setdefault(uid, _Tries())
            t.failures[why] += 1
            if t.first_failure is None:
                t.first_failure = now
            if now - t.first_failure >= self.policy.patience_seconds:
                answers[uid] = MailboxAnswer(
                    purpose=None,
                    failure=f"{why} (kept failing for {self.policy.patience_seconds:g} s)",
                    status=status,
                )
                pending.discard(uid)
                return
            schedule(uid, now + (delay if delay is not None else self.policy.backoff(t.failed - 1)))

        def batch_refused(chunk: list[str], exc: GraphError) -> None:
            """The $batch POST failed as a whole: its items are not answered, so none is judged by it."""
            if exc.status is None or exc.status in TRANSIENT_STATUSES:
                # `send` already retried the POST for its whole patience (or the tenant ran out of time,
                # which the loop below reports): these items cannot be read now.
                if self.time_left() > 0:
                    for uid in chunk:
                        answers[uid] = MailboxAnswer(
                            purpose=None, failure=f"$batch request kept failing ({exc.code.value})"
                        )
                        pending.discard(uid)
                return
            # 400, 403, 424...: the envelope was refused, which says nothing about any one mailbox (a
            # $batch POST needs no permission of its own; Graph checks each item's), so a 403 here is
            # never read as "MailboxSettings.Read is missing". Try a few times, then leave unclassified.
            why = f"{exc.status} on the $batch request as a whole"
            for uid in chunk:
                refusals[uid] = refusals.get(uid, 0) + 1
                if refusals[uid] >= BATCH_REFUSALS_TOLERATED:
                    answers[uid] = MailboxAnswer(
                        purpose=None, failure=f"{why}, {refusals[uid]} times", status=0
                    )
                    pending.discard(uid)
                else:
                    schedule(uid, time.monotonic() + self.policy.backoff(refusals[uid] - 1))

        async def run_chunk(chunk: list[str]) -> None:
            items = [
                {"id": str(i), "method": "GET", "url": f"/users/{uid}/mailboxSettings/userPurpose"}
                for i, uid in enumerate(chunk)
            ]
            try:
                responses = await self.batch(items, "MailboxSettings.Read")
            except GraphError as exc:
                if exc.code is ErrorCode.AUTH_FAILED:
                    raise
                log.debug("%s: a mailbox $batch failed as a whole: %s", self.tenant_label, exc)
                batch_refused(chunk, exc)
                return
            for index, uid in enumerate(chunk):
                item = responses.get(str(index))
                if item is None:
                    retry_later(uid, "missing from the $batch answer")
                    continue
                status = int(item.get("status", 0))
                raw_body = item.get("body")
                body: dict[str, Any] = raw_body if isinstance(raw_body, dict) else {}
                answer = classify_mailbox_item(status, body)
                if answer is None:
                    code = (body.get("error") or {}).get("code")
                    delay = retry_after_seconds(item.get("headers") or {})
                    if status == 429 and delay is not None:  # pacing, not failure
                        schedule(uid, time.monotonic() + delay)
                    else:
                        retry_later(uid, f"{status} {code or ''}".strip(), delay, status)
                else:
                    answers[uid] = answer
                    pending.discard(uid)

        in_flight: set[str] = set()
        # Set when a chunk comes back (its items may be ready again); replaced, never cleared, so that a
        # worker that looked at the state before the change still sees it.
        changed = [asyncio.Event()]

        async def worker() -> None:
            """Takes up to 20 ready items at a time; each of MAILBOX_BATCHES_IN_FLIGHT workers has one
            $batch in flight, so a slow or throttled batch holds up only its own items."""
            while self.time_left() > 0:
                event = changed[0]
                now = time.monotonic()
                chunk: list[str] = []
                while queue and len(chunk) < BATCH_LIMIT and queue[0][0] <= now:
                    chunk.append(heapq.heappop(queue)[2])
                if chunk:
                    in_flight.update(chunk)
                    try:
                        await run_chunk(chunk)
                    finally:
                        in_flight.difference_update(chunk)
                        done, changed[0] = changed[0], asyncio.Event()
                        done.set()
                    continue
                if queue:  # the soonest item is not due yet
                    timeout = min(self.time_left(), queue[0][0] - now)
                elif in_flight:  # nothing waits, but a batch in flight may give items back
                    timeout = self.time_left()
                else:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), max(0.0, timeout))

        await asyncio.gather(*(worker() for _ in range(MAILBOX_BATCHES_IN_FLIGHT)))
        if pending:  # the tenant's time ran out
            why = f"not answered before the tenant's time ran out ({self._budget_name()})"
            for uid in ids:
                if uid in pending:
                    answers[uid] = MailboxAnswer(purpose=None, failure=why)
        return answers


def _pin_url(info: RequestInformation, base_url: str) -> str:
    """Expand the SDK's URL template once, the base URL filled in as the SDK's adapter does, and keep the
    result in the request: the token provider, the sender and the messages each read the URL, and every
    read of an unexpanded template expands it again (the costliest step of building a read). Returns the
    path, for messages."""
    try:
        # A copy: the dict is the request builder's own, and pinning the URL clears it (kiota's setter),
        # which would leave the next try of this request without its ids.
        info.path_parameters = {**info.path_parameters, "baseurl": base_url}
        url = str(info.url)
        info.url = url
        return url.split("?")[0]
    except Exception:  # the URL template could not be expanded; the sender reports it
        return "a Graph request"


def _odata_request_id(exc: ODataError) -> str | None:
    if exc.error is not None and exc.error.inner_error is not None and exc.error.inner_error.request_id:
        return str(exc.error.inner_error.request_id)
    return None


def _transport_why(exc: BaseException) -> str:
    """A connection failure in a few words (the same words for the same failure, so they can be counted)."""
    if isinstance(exc, (httpx.ConnectError, ServiceRequestError)):
        return "could not connect"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, ConnectionResetError)):
        return "connection dropped"
    return f"connection failed ({type(exc).__name__})"


def _network_error(exc: BaseException, tenant_label: str) -> GraphError:
    text = redact(str(exc) or type(exc).__name__)
    hint = ""
    if "CERTIFICATE_VERIFY_FAILED" in text:
        hint = (
            "The endpoint's TLS certificate is not trusted: set ca_bundle in the config (or SSL_CERT_FILE) to "
            "the CA that issued it."
        )
    return GraphError(
        f"Could not reach Microsoft Graph for tenant {tenant_label}: {text}",
        code=ErrorCode.NETWORK_ERROR,
        hint=hint,
    )


_AADSTS_HINTS = {
    "7000215": "The client secret is wrong or has expired: create a new client secret for app {client} and put "
    "its value (not its id) in the environment variable the config names.",
    "7000222": "The client secret has expired: create a new client secret for app {client}.",
    "700016": "App {client} is not known in tenant {tenant}: an administrator of that tenant must grant admin "
    "consent to it (https://login.microsoftonline.com/{tenant_id}/adminconsent?client_id={client}), or "
    "client_id/tenant_id in the config are wrong.",
    "90002": "Tenant {tenant_id} does not exist in this cloud: check tenant_id and cloud in the config.",
    "700027": "The certificate is not registered on app {client}: upload its public certificate to the app "
    "registration (Certificates & secrets), or point certificate_path at the registered one.",
    "700024": "The client assertion is outside its validity window: check this machine's clock.",
    "70021": "No federated credential on app {client} matches this workload identity: add one for the service "
    "account's issuer and subject.",
}


def translate_auth_error(
    exc: BaseException, client_id: str, tenant_label: str, tenant_id: str = ""
) -> GraphError:
    """A sign-in failure as AUTH_FAILED, with the AADSTS code's fix."""
    text = redact(getattr(exc, "message", None) or str(exc))
    first = text.split(" Trace ID:")[0].replace("Microsoft Entra ID error ", "").strip("'")
    hint = ""
    for code, template in _AADSTS_HINTS.items():
        if f"AADSTS{code}:" in text:
            hint = template.format(client=client_id, tenant=tenant_label, tenant_id=tenant_id or tenant_label)
            break
    return GraphError(
        f"Sign-in to tenant {tenant_label} failed: {first}", code=ErrorCode.AUTH_FAILED, hint=hint
    )
