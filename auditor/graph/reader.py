"""Reading one tenant's Graph: requests built by the SDK, answers read as plain JSON, retries ours.

Why plain JSON: the SDK's model parsing costs about 7 ms per user object (see `make bench`), which
would turn a 2,000-user tenant into a 15-second parse. Requests are still built by the SDK's request
builders (URL templates, query encoding) and sent through its adapter (authentication, redirects).

Why our own retries: the SDK retries each request on its own, so while one request waits out a
Retry-After, its siblings keep hitting the throttled tenant. Here a 429 pauses the whole tenant
(`ThrottleGate`) until its Retry-After has passed, and `$batch` items throttled inside a 200 envelope
are re-queued after their own Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from azure.core.exceptions import ClientAuthenticationError
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

from auditor.errors import ErrorCode, GraphError, permission_hint, redact

from .client import GraphSession, graph_origin, retry_after_seconds, send_for_bytes

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
BATCH_LIMIT = 20
MAILBOX_BATCHES_IN_FLIGHT = 4  # Outlook's concurrency limit per app and mailbox owner


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # 429/5xx answers tolerated per request before giving up
    timeouts: int = 3  # time-outs tolerated per request
    base_delay: float = 0.5  # back-off when no Retry-After is given: base * 2**n, plus jitter
    max_delay: float = 30.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2**attempt)) + random.uniform(0, 0.25)


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
        return MailboxAnswer(purpose=str(purpose) if purpose else "unknown")
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

    @property
    def app_label(self) -> str:
        return f"the auditor app (client id {self.session.settings.client_id})"

    # --- the one way a request is sent --------------------------------------------------------------

    async def send(self, build: Callable[[], RequestInformation], permission: str) -> dict[str, Any]:
        """Send a request (built afresh for every attempt) and return its JSON body.

        Retries 429/5xx (waiting out Retry-After, tenant-wide for 429), connection resets and time-outs;
        raises GraphError with a code and an admin-ready hint when it cannot get an answer.
        """
        attempt = timeouts = 0
        while True:
            info = build()  # the session's throttle gate holds it back while the tenant is paused
            try:
                raw = await send_for_bytes(self.client, info)
                return dict(json.loads(raw)) if raw else {}
            except ODataError as exc:
                status = exc.response_status_code or 0
                if status in TRANSIENT_STATUSES and attempt + 1 < self.policy.attempts:
                    delay = retry_after_seconds(exc.response_headers)
                    if status != 429:  # a 429 has already paused the whole tenant (ThrottleGate)
                        await asyncio.sleep(delay if delay is not None else self.policy.backoff(attempt))
                    attempt += 1
                    log.debug("%s: %s answered %s, retry %d", self.tenant_label, _path(info), status, attempt)
                    continue
                raise self._translate_odata(exc, permission) from None
            except httpx.TimeoutException:
                timeouts += 1
                if timeouts < self.policy.timeouts:
                    continue
                raise GraphError(
                    f"Microsoft Graph did not answer {_path(info)} in time ({timeouts} attempts) for tenant "
                    f"{self.tenant_label}.",
                    code=ErrorCode.TIMEOUT,
                ) from None
            except (httpx.TransportError, OSError) as exc:
                if isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    raise _network_error(exc, self.tenant_label) from None
                if attempt + 1 < self.policy.attempts:
                    await asyncio.sleep(self.policy.backoff(attempt))
                    attempt += 1
                    continue
                raise _network_error(exc, self.tenant_label) from None
            except ClientAuthenticationError as exc:
                settings = self.session.settings
                raise translate_auth_error(
                    exc, settings.client_id, self.tenant_label, settings.tenant_id
                ) from None

    def _translate_odata(self, exc: ODataError, permission: str) -> GraphError:
        status = exc.response_status_code or 0
        code = exc.error.code if exc.error else None
        message = exc.error.message if exc.error and exc.error.message else str(exc)
        request_id = None
        if exc.error is not None and exc.error.inner_error is not None:
            request_id = exc.error.inner_error.request_id
        what = f"Graph answered {status} {code or ''}: {message}".replace("  ", " ")
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
                f"{what} (still throttled after {self.policy.attempts} attempts)",
                code=ErrorCode.THROTTLED,
                status=status,
                request_id=request_id,
            )
        return GraphError(what, code=ErrorCode.GRAPH_ERROR, status=status, request_id=request_id)

    # --- helpers for requests -----------------------------------------------------------------------

    def builder_request(
        self, builder: Any, query: Any = None, headers: dict[str, str] | None = None
    ) -> Callable[[], RequestInformation]:
        """A factory for a request built by an SDK request builder, with query parameters and headers."""

        def build() -> RequestInformation:
            config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
            for name, value in (headers or {}).items():
                config.headers.add(name, value)
            info: RequestInformation = builder.to_get_request_information(config)
            info.headers.try_add("Accept", "application/json")
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
        payload = json.dumps({"requests": items}).encode()
        url = self.session.base_url.rstrip("/") + "/$batch"

        def build() -> RequestInformation:
            info = RequestInformation()
            info.http_method = Method.POST
            info.url = url
            info.headers.try_add("Content-Type", "application/json")
            info.headers.try_add("Accept", "application/json")
            info.content = payload
            return info

        body = await self.send(build, permission)
        return {str(item["id"]): item for item in body.get("responses", [])}

    async def mailbox_purposes(self, user_ids: Iterable[str]) -> dict[str, MailboxAnswer]:
        """userPurpose of every user's mailbox, 20 per $batch, at most 4 batches in flight.

        Items throttled inside a batch wait out their own Retry-After and go again; anything still
        unanswered after the retry budget is returned with a `failure`, never dropped.
        """
        pending = {uid: (0.0, 0) for uid in user_ids}  # id -> (not before, attempts)
        answers: dict[str, MailboxAnswer] = {}
        slots = asyncio.Semaphore(MAILBOX_BATCHES_IN_FLIGHT)

        async def run_chunk(chunk: list[str]) -> None:
            items = [
                {"id": str(i), "method": "GET", "url": f"/users/{uid}/mailboxSettings/userPurpose"}
                for i, uid in enumerate(chunk)
            ]
            async with slots:
                responses = await self.batch(items, "MailboxSettings.Read")
            for index, uid in enumerate(chunk):
                item = responses.get(str(index))
                attempts = pending[uid][1] + 1
                if item is None:
                    self._requeue_or_fail(
                        uid, attempts, None, "missing from the $batch answer", pending, answers
                    )
                    continue
                status = int(item.get("status", 0))
                raw_body = item.get("body")
                body: dict[str, Any] = raw_body if isinstance(raw_body, dict) else {}
                answer = classify_mailbox_item(status, body)
                if answer is None:
                    code = (body.get("error") or {}).get("code")
                    delay = retry_after_seconds(item.get("headers") or {})
                    self._requeue_or_fail(
                        uid, attempts, delay, f"{status} {code or ''}".strip(), pending, answers
                    )
                else:
                    answers[uid] = answer
                    del pending[uid]

        while pending:
            now = time.monotonic()
            ready = [uid for uid, (not_before, _) in pending.items() if not_before <= now]
            if not ready:
                await asyncio.sleep(max(0.0, min(nb for nb, _ in pending.values()) - now))
                continue
            chunks = [ready[i : i + BATCH_LIMIT] for i in range(0, len(ready), BATCH_LIMIT)]
            await asyncio.gather(*(run_chunk(chunk) for chunk in chunks))
        return answers

    def _requeue_or_fail(
        self,
        uid: str,
        attempts: int,
        delay: float | None,
        why: str,
        pending: dict[str, tuple[float, int]],
        answers: dict[str, MailboxAnswer],
    ) -> None:
        if attempts >= self.policy.attempts:
            answers[uid] = MailboxAnswer(purpose=None, failure=f"{why} after {attempts} attempts")
            del pending[uid]
            return
        wait = delay if delay is not None else self.policy.backoff(attempts - 1)
        pending[uid] = (time.monotonic() + wait, attempts)


def _path(info: RequestInformation) -> str:
    try:
        return str(info.url).split("?")[0]
    except Exception:  # the URL template could not be expanded; only used in messages
        return "a Graph request"


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
