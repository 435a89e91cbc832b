"""Microsoft Graph v1.0, the subset the auditor uses, with Graph's shapes, paging, errors and limits.

`GraphService.handle` takes one HTTP request (already read off the wire) and returns a `Reply`. It
checks the bearer token and the application permission each route needs, applies the tenant's fault
profile and any targeted fault rules, runs the route, and records the request. `$batch` items go
through the same route table, each with its own status, faults and record.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from .faults import FaultDice, FaultProfile, FaultRule, Observer, RequestRecord, Throttle
from .identity import AccessToken, IdentityService
from .odata import FilterSpec, Node, ODataQueryError, evaluate, parse_filter, rule
from .world import (
    MAILBOX_PURPOSES,
    ROLE_TEMPLATES,
    TenantState,
    UserRecord,
    World,
    assignment_id,
    stable_id,
)

MAX_BATCH = 20
MAX_TOP = 999
DEFAULT_TOP = 100

_READ_DIRECTORY = {"Directory.Read.All", "Directory.ReadWrite.All"}
_READ_ROLES = {
    "RoleManagement.Read.Directory",
    "RoleManagement.Read.All",
    "RoleManagement.ReadWrite.Directory",
    *_READ_DIRECTORY,
}
# Least-privileged permission first: it is the one error hints name.
ROUTE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "organization": ("Organization.Read.All", "Organization.ReadWrite.All", *_READ_DIRECTORY),
    "servicePrincipals": ("Application.Read.All", "Application.ReadWrite.All", *_READ_DIRECTORY),
    "roleAssignments": (
        "RoleManagement.Read.Directory",
        *sorted(_READ_ROLES - {"RoleManagement.Read.Directory"}),
    ),
    "roleAssignments.create": ("RoleManagement.ReadWrite.Directory",),
    # PIM: Directory.Read.All is not among them (rbacapplication-list-roleassignmentscheduleinstances:
    # least RoleAssignmentSchedule.Read.Directory; higher RoleAssignmentSchedule.ReadWrite.Directory,
    # RoleManagement.Read.All, RoleManagement.Read.Directory, RoleManagement.ReadWrite.Directory; the
    # eligibility list likewise with RoleEligibilitySchedule.*).
    "roleAssignmentScheduleInstances": (
        "RoleAssignmentSchedule.Read.Directory",
        "RoleAssignmentSchedule.ReadWrite.Directory",
        *sorted(_READ_ROLES - _READ_DIRECTORY),
    ),
    "roleEligibilityScheduleInstances": (
        "RoleEligibilitySchedule.Read.Directory",
        "RoleEligibilitySchedule.ReadWrite.Directory",
        *sorted(_READ_ROLES - _READ_DIRECTORY),
    ),
    "directoryRoles": (
        "RoleManagement.Read.Directory",
        *sorted(_READ_ROLES - {"RoleManagement.Read.Directory"}),
    ),
    "users": ("User.Read.All", "User.ReadWrite.All", *_READ_DIRECTORY),
    "mailboxSettings": ("MailboxSettings.Read", "MailboxSettings.ReadWrite"),
}
MAILBOX_ROUTES = {"mailboxSettings.get", "mailboxSettings.userPurpose"}
# Permissions that let an app read groups; without one, transitiveMemberOf lists groups as
# limited-information objects (serviceprincipal-list-transitivememberof.md, "limited information").
GROUP_READ_PERMISSIONS = frozenset(
    {
        "GroupMember.Read.All",
        "Group.Read.All",
        "Group.ReadWrite.All",
        "GroupMember.ReadWrite.All",
        *_READ_DIRECTORY,
    }
)


def permission_group(route: str) -> str:
    """The permission family of a route name such as `servicePrincipals.appRoleAssignments`."""
    if route in ROUTE_PERMISSIONS:
        return route
    return route.split(".", 1)[0]


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # close the connection instead of answering
    delay: float = 0.0  # seconds to wait before answering (latency / slow responses)
    fault: str | None = None


class HtmlPage(str):
    """A reply body served as text/html (a gateway's error page), not as Graph's JSON."""


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_body(
    code: str, message: str, request_id: str, client_request_id: str | None = None
) -> dict[str, Any]:
    """Graph's error envelope."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                "request-id": request_id,
                "client-request-id": client_request_id or request_id,
            },
        }
    }


@dataclass
class Call:
    """One Graph call (a top-level request or a $batch item) on its way through a route."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: Any
    base_url: str  # e.g. https://127.0.0.1:8443/v1.0
    tenant: TenantState
    token: AccessToken


Handler = Callable[..., Reply]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    handler: Handler


_SP_SPEC = FilterSpec(
    "microsoft.graph.servicePrincipal",
    {
        "displayName": rule("eq in startsWith ge le null", "ne not"),
        "appId": rule("eq in startsWith", "ne not"),
        "accountEnabled": rule("eq in", "ne not"),
        "appOwnerOrganizationId": rule("eq ge le in", "ne not"),
        "servicePrincipalType": rule("eq in", "ne not"),
        "id": rule("eq in", "ne not"),
    },
)
_ROLE_ASSIGNMENT_SPEC = FilterSpec(
    "microsoft.graph.unifiedRoleAssignment",
    {
        name: rule("eq in")
        for name in ("principalId", "roleDefinitionId", "directoryScopeId", "appScopeId", "id")
    },
    directory_object=False,
)
# The schedule instances document `$filter (eq, ne)` for these properties
# (resources/unifiedroleassignmentscheduleinstance.md, unifiedroleeligibilityscheduleinstance.md): `in`
# is refused with 400 like any unsupported filter.
_SCHEDULE_SPEC = FilterSpec(
    "microsoft.graph.unifiedRoleScheduleInstanceBase",
    {
        name: rule("eq ne null")
        for name in (
            "principalId",
            "roleDefinitionId",
            "directoryScopeId",
            "appScopeId",
            "assignmentType",
            "memberType",
        )
    },
    directory_object=False,
)
_DIRECTORY_ROLE_SPEC = FilterSpec(
    "microsoft.graph.directoryRole",
    {"roleTemplateId": rule("eq"), "displayName": rule("eq"), "id": rule("eq")},
)
_USER_SPEC = FilterSpec(
    "microsoft.graph.user",
    {
        "id": rule("eq in", "ne not"),
        "userPrincipalName": rule("eq in startsWith", "ne not endsWith"),
        "mail": rule("eq in startsWith", "ne not endsWith null"),
        "displayName": rule("eq in startsWith", "ne not endsWith null"),
        "accountEnabled": rule("eq in", "ne not"),
        "userType": rule("eq in", "ne not"),
        "assignedLicenses/$count": rule("", "eq ne"),
    },
)
_USER_DEFAULT = (
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
)
_USER_SELECTABLE = (
    *_USER_DEFAULT,
    "accountEnabled",
    "userType",
    "assignedLicenses",
    "onPremisesSyncEnabled",
    "mailboxSettings",
)
_KNOWN_OPTIONS = {
    "$filter",
    "$select",
    "$top",
    "$count",
    "$expand",
    "$orderby",
    "$search",
    "$skip",
    "$skiptoken",
    "$format",
    "$deltatoken",
}


class GraphService:
    """The Graph half of the simulator. Lives on the server's event loop."""

    def __init__(self, world: World, identity: IdentityService, observer: Observer, seed: int = 0):
        self.world = world
        self.identity = identity
        self.observer = observer
        self.dice = FaultDice(seed)
        self.throttle = Throttle()
        self.rules: list[FaultRule] = []
        self._token_key = secrets.token_bytes(16)
        self._mailbox_in_flight: dict[tuple[str, str], int] = {}
        self.routes = self._route_table()

    # --- routing -----------------------------------------------------------------------------

    def _route_table(self) -> list[Route]:
        guid = r"[^/()]+"
        table: list[tuple[str, str, str, Handler]] = [
            ("GET", r"/organization", "organization.list", self.organization),
            ("GET", r"/servicePrincipals", "servicePrincipals.list", self.sp_list),
            (
                "GET",
                r"/servicePrincipals\(appId='(?P<app_id>[^']*)'\)",
                "servicePrincipals.getByAppId",
                self.sp_get,
            ),
            ("GET", rf"/servicePrincipals/(?P<sp_id>{guid})", "servicePrincipals.get", self.sp_get),
            (
                "GET",
                rf"/servicePrincipals(?:/(?P<sp_id>{guid})|\(appId='(?P<app_id>[^']*)'\))/appRoleAssignments",
                "servicePrincipals.appRoleAssignments",
                self.sp_app_role_assignments,
            ),
            (
                "GET",
                rf"/servicePrincipals(?:/(?P<sp_id>{guid})|\(appId='(?P<app_id>[^']*)'\))/transitiveMemberOf",
                "servicePrincipals.transitiveMemberOf",
                self.sp_transitive_member_of,
            ),
            ("GET", r"/roleManagement/directory/roleAssignments", "roleAssignments.list", self.ra_list),
            ("POST", r"/roleManagement/directory/roleAssignments", "roleAssignments.create", self.ra_create),
            (
                "GET",
                rf"/roleManagement/directory/roleAssignments/(?P<ra_id>{guid})",
                "roleAssignments.get",
                self.ra_get,
            ),
            (
                "GET",
                r"/roleManagement/directory/roleAssignmentScheduleInstances",
                "roleAssignmentScheduleInstances.list",
                self.assignment_instances,
            ),
            (
                "GET",
                r"/roleManagement/directory/roleEligibilityScheduleInstances",
                "roleEligibilityScheduleInstances.list",
                self.eligibility_instances,
            ),
            ("GET", r"/directoryRoles", "directoryRoles.list", self.directory_roles),
            (
                "GET",
                r"/directoryRoles\(roleTemplateId='(?P<template>[^']*)'\)",
                "directoryRoles.get",
                self.directory_role,
            ),
            (
                "GET",
                rf"/directoryRoles/(?:roleTemplateId=(?P<template>{guid})|(?P<role_id>{guid}))/members",
                "directoryRoles.members",
                self.directory_role_members,
            ),
            ("GET", rf"/directoryRoles/(?P<role_id>{guid})", "directoryRoles.get", self.directory_role),
            ("GET", r"/users", "users.list", self.users_list),
            # `/users/delta` and the SDK's fully qualified `/users/microsoft.graph.delta()`.
            ("GET", r"/users/(?:microsoft\.graph\.)?delta(?:\(\))?", "users.delta", self.users_delta),
            ("GET", rf"/users/(?P<user>{guid})", "users.get", self.user_get),
            (
                "GET",
                rf"/users/(?P<user>{guid})/mailboxSettings",
                "mailboxSettings.get",
                self.mailbox_settings,
            ),
            (
                "GET",
                rf"/users/(?P<user>{guid})/mailboxSettings/userPurpose",
                "mailboxSettings.userPurpose",
                self.mailbox_user_purpose,
            ),
        ]
        return [Route(m, re.compile(p + "$", re.IGNORECASE), n, h) for m, p, n, h in table]

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """Find the route for a path, or raise the error Graph gives for an unknown one."""
        path = path.rstrip("/") or "/"
        allowed = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match:
                if route.method == method:
                    return route, {k: v for k, v in match.groupdict().items() if v is not None}
                allowed.append(route.method)
        if allowed:
            raise GraphError(
                405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
            )
        segment = next((s for s in path.split("/") if s and not self._known_segment(s)), path.strip("/"))
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    @staticmethod
    def _known_segment(segment: str) -> bool:
        known = (
            "organization",
            "servicePrincipals",
            "roleManagement",
            "directory",
            "roleAssignments",
            "roleAssignmentScheduleInstances",
            "roleEligibilityScheduleInstances",
            "directoryRoles",
            "users",
            "mailboxSettings",
            "userPurpose",
            "delta",
            "appRoleAssignments",
            "transitiveMemberOf",
            "members",
        )
        return segment.split("(")[0] in known

    # --- the request pipeline ----------------------------------------------------------------------

    async def handle(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
        base_url: str,
    ) -> Reply:
        """Serve one top-level Graph request (path is relative to the version root, e.g. `/users`)."""
        seq = self.observer.next_seq()
        request_id = str(uuid.uuid4())
        client_request_id = headers.get("client-request-id")
        tenant_id: str | None = None
        app_id: str | None = None
        route_name = "unknown"
        early = False
        parsed_body: Any = None
        try:
            token = self._authenticate(headers)
            tenant_id, app_id = token.tenant_id, token.app_id
            tenant = self.world.tenant(token.tenant_id)
            if tenant is None:
                raise GraphError(
                    401, "InvalidAuthenticationToken", "The tenant of the access token does not exist."
                )
            if path.rstrip("/").lower() == "/$batch":
                route_name = "batch"
                if method != "POST":
                    raise GraphError(
                        405,
                        "Request_BadRequest",
                        "Specified HTTP method is not allowed for the request target.",
                    )
                route: Route | None = None
                params: dict[str, str] = {}
            else:
                route, params = self.resolve(method, path)
                route_name = route.name
            profile = self._profile(tenant)
            reply, early = self._before(tenant, app_id, route_name, method, profile, in_batch=False)
            if reply is None:
                query_map = self._query_map(query)
                if body:
                    try:
                        parsed_body = json.loads(body)
                    except json.JSONDecodeError as exc:
                        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from exc
                mailbox = route_name in MAILBOX_ROUTES or (
                    route is None and self._batch_touches_mailboxes(parsed_body)
                )
                if mailbox and not self._enter_mailbox(tenant, app_id, profile):
                    reply = Reply(
                        429,
                        error_body(
                            "ApplicationThrottled",
                            "Application is over its MailboxConcurrency limit.",
                            request_id,
                            client_request_id,
                        ),
                        {"Retry-After": "1"},
                        fault="concurrency",
                    )
                else:
                    try:
                        if route is None:
                            reply = await self._batch(
                                seq, parsed_body, headers, base_url, tenant, token, profile
                            )
                        else:
                            self._authorize(route.name, token)
                            call = Call(
                                method, path, query_map, headers, parsed_body, base_url, tenant, token
                            )
                            reply = route.handler(call, **params)
                        reply = self._after(reply, tenant, route_name, method, in_batch=False)
                        if (
                            method == "POST"
                            and route is not None
                            and reply.status < 300
                            and self.dice.roll(profile.lost_write_rate)
                        ):
                            # The write was applied; the client never hears so (fault mode).
                            reply = Reply(0, reset=True, fault="lost-answer")
                        # The latency is spent while the request still holds its mailbox slot.
                        await sleep(self._latency(profile, route_name) + reply.delay)
                        reply.delay = 0.0
                    finally:
                        if mailbox:
                            self._leave_mailbox(tenant, app_id)
            else:
                try:
                    await sleep(self._latency(profile) + reply.delay)
                except asyncio.CancelledError:  # the client gave up waiting (a slow answer): still counted
                    self.observer.record(
                        RequestRecord(
                            seq,
                            time.time(),
                            tenant_id,
                            app_id,
                            method,
                            path,
                            route_name,
                            0,
                            fault=reply.fault,
                        )
                    )
                    raise
                reply.delay = 0.0
        except GraphError as exc:
            reply = Reply(
                exc.status, error_body(exc.code, exc.message, request_id, client_request_id), exc.headers
            )
        except ODataQueryError as exc:
            reply = Reply(exc.status, error_body(exc.code, exc.message, request_id, client_request_id))
        if isinstance(reply.body, dict) and "error" in reply.body:
            inner = reply.body["error"].setdefault("innerError", {})
            inner["request-id"] = request_id
            inner["client-request-id"] = client_request_id or request_id
        reply.headers.setdefault("request-id", request_id)
        reply.headers.setdefault("client-request-id", client_request_id or request_id)
        self.observer.record(
            RequestRecord(
                seq,
                time.time(),
                tenant_id,
                app_id,
                method,
                path,
                route_name,
                0 if reply.reset else reply.status,
                early=early,
                fault=reply.fault,
                body=parsed_body if method != "GET" else None,
            )
        )
        return reply

    def _authenticate(self, headers: dict[str, str]) -> AccessToken:
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        try:
            return self.identity.verify_access_token(auth[7:].strip())
        except ValueError as exc:
            raise GraphError(401, "InvalidAuthenticationToken", str(exc)) from exc

    def _authorize(self, route: str, token: AccessToken) -> None:
        needed = ROUTE_PERMISSIONS[permission_group(route)]
        if token.roles.isdisjoint(needed):
            if permission_group(route) == "mailboxSettings":
                # Exchange answers for mailbox routes, in its own words.
                raise GraphError(
                    403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
                )
            raise GraphError(
                403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
            )

    def _profile(self, tenant: TenantState) -> FaultProfile:
        profile = tenant.faults or self.world.default_faults
        return profile if isinstance(profile, FaultProfile) else FaultProfile()

    def _before(
        self,
        tenant: TenantState,
        app_id: str,
        route: str,
        method: str,
        profile: FaultProfile,
        *,
        in_batch: bool,
        throttle_key: tuple[str, ...] | None = None,
    ) -> tuple[Reply | None, bool]:
        """Faults decided before the route runs: rules, Retry-After promises, random faults."""
        for fault_rule in self.rules:
            if not fault_rule.after and fault_rule.matches(route, method, tenant.tenant_id, in_batch):
                fault_rule.hits += 1
                return self._rule_reply(fault_rule), False
        key = throttle_key or (tenant.tenant_id, app_id)
        blocked = self.throttle.check(key)
        if blocked is not None:
            left, early = blocked
            seconds = max(1, int(left + 0.999))
            return Reply(
                429,
                error_body("TooManyRequests", "Please retry again later.", ""),
                {"Retry-After": str(seconds)},
                fault="throttled-again",
            ), early
        if in_batch and not profile.batch_items:
            return None, False
        if not profile.applies_to(route):
            return None, False
        if not in_batch and self.dice.roll(profile.reset_rate):
            return Reply(0, reset=True, fault="reset"), False
        if not in_batch and self.dice.roll(profile.slow_rate):
            return Reply(
                504,
                error_body("GatewayTimeout", "The request timed out.", ""),
                delay=profile.slow_seconds,
                fault="slow",
            ), False
        if self.dice.roll(profile.throttle_rate):
            self.throttle.block(key, profile.retry_after_seconds)
            return Reply(
                429,
                self._throttle_body(),
                {"Retry-After": str(profile.retry_after_seconds)},
                fault="throttled",
            ), False
        if self.dice.roll(profile.error_rate):
            status = self.dice.choice(profile.error_statuses)
            code = {
                500: "InternalServerError",
                502: "BadGateway",
                503: "ServiceUnavailable",
                504: "GatewayTimeout",
            }
            headers = (
                {"Retry-After": str(profile.retry_after_seconds)}
                if status == 503 and profile.error_retry_after
                else {}
            )
            return Reply(
                status,
                error_body(code.get(status, "UnknownError"), "Internal server error.", ""),
                headers,
                fault=f"error-{status}",
            ), False
        return None, False

    def _after(self, reply: Reply, tenant: TenantState, route: str, method: str, *, in_batch: bool) -> Reply:
        for fault_rule in self.rules:
            if fault_rule.after and fault_rule.matches(route, method, tenant.tenant_id, in_batch):
                fault_rule.hits += 1
                return self._rule_reply(fault_rule)
        return reply

    def _rule_reply(self, fault_rule: FaultRule) -> Reply:
        if fault_rule.reset:
            return Reply(0, reset=True, delay=fault_rule.delay_seconds, fault="rule-reset")
        headers = {"Retry-After": str(fault_rule.retry_after)} if fault_rule.retry_after is not None else {}
        body: Any = error_body(fault_rule.code, fault_rule.message, "")
        if fault_rule.html:
            # Graph names every answer with a `request-id` response header (learn.microsoft.com/graph/errors:
            # "the request-id ... in the response header"); a page instead of the JSON error still has one.
            headers["request-id"] = str(uuid.uuid4())
            body = HtmlPage(
                f"<!DOCTYPE html><html><head><title>{fault_rule.status} {fault_rule.code}</title></head>"
                f"<body><h1>{fault_rule.message}</h1></body></html>"
            )
        return Reply(
            fault_rule.status,
            body,
            headers,
            delay=fault_rule.delay_seconds,
            fault="rule",
        )

    @staticmethod
    def _throttle_body() -> dict[str, Any]:
        body = error_body("TooManyRequests", "Please retry again later.", "")
        body["error"]["innerError"].update({"code": "429", "message": "Please retry after", "status": "429"})
        return body

    def _latency(self, profile: FaultProfile, route_name: str = "") -> float:
        base = profile.latency_ms
        if route_name == "batch" and profile.batch_latency_ms is not None:
            base = profile.batch_latency_ms
        return (base + self.dice.jitter(profile.latency_jitter_ms)) / 1000.0

    def _enter_mailbox(self, tenant: TenantState, app_id: str, profile: FaultProfile) -> bool:
        key = (tenant.tenant_id, app_id)
        current = self._mailbox_in_flight.get(key, 0)
        if profile.mailbox_concurrency is not None and current >= profile.mailbox_concurrency:
            return False
        self._mailbox_in_flight[key] = current + 1
        return True

    def _leave_mailbox(self, tenant: TenantState, app_id: str) -> None:
        key = (tenant.tenant_id, app_id)
        self._mailbox_in_flight[key] -= 1

    @staticmethod
    def _query_map(query: list[tuple[str, str]]) -> dict[str, str]:
        result: dict[str, str] = {}
        for name, value in query:
            key = name.lower() if name.startswith("$") else name
            if key.startswith("$") and key not in _KNOWN_OPTIONS:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Query option '{name}' is not allowed. Make sure the query "
                    "option is valid and is specified only once.",
                )
            if key in result:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Query option '{name}' was specified more than once, but it "
                    "must be specified at most once.",
                )
            result[key] = value
        return result

    # --- $batch ------------------------------------------------------------------------------------

    @staticmethod
    def _batch_touches_mailboxes(body: Any) -> bool:
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            return False
        return any(
            "mailboxsettings" in str(item.get("url", "")).lower()
            for item in body["requests"]
            if isinstance(item, dict)
        )

    async def _batch(
        self,
        parent_seq: int,
        body: Any,
        headers: dict[str, str],
        base_url: str,
        tenant: TenantState,
        token: AccessToken,
        profile: FaultProfile,
    ) -> Reply:
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise GraphError(400, "BadRequest", "Invalid batch payload format.")
        items = body["requests"]
        if len(items) > MAX_BATCH:
            raise GraphError(
                400,
                "BadRequest",
                f"Unable to deserialize batch request. The batch contains more than "
                f"{MAX_BATCH} requests ({len(items)}).",
            )
        seen: set[str] = set()
        for item in items:
            if (
                not isinstance(item, dict)
                or not item.get("id")
                or not item.get("method")
                or not item.get("url")
            ):
                raise GraphError(
                    400, "BadRequest", "Invalid batch payload format: every request needs id, method and url."
                )
            item_id = str(item["id"]).lower()
            if item_id in seen:
                raise GraphError(400, "BadRequest", f"Batch request contains duplicate id '{item['id']}'.")
            seen.add(item_id)
            if "body" in item and "content-type" not in {k.lower() for k in (item.get("headers") or {})}:
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Write request id : {item['id']} does not contain Content-Type header or body.",
                )
        statuses: dict[str, int] = {}
        responses = []
        for item in items:
            depends = item.get("dependsOn") or item.get("depends_on") or []
            if any(statuses.get(str(d).lower(), 200) >= 400 for d in depends):
                status_reply = Reply(
                    424, error_body("FailedDependency", "Failed dependency.", str(uuid.uuid4()))
                )
                responses.append(self._item_response(item, status_reply))
                statuses[str(item["id"]).lower()] = 424
                continue
            reply = self._batch_item(parent_seq, item, headers, base_url, tenant, token, profile)
            statuses[str(item["id"]).lower()] = reply.status
            responses.append(self._item_response(item, reply))
        # Graph does not promise any order; clients must correlate by id.
        self.dice.shuffle(responses)
        return Reply(200, {"responses": responses})

    @staticmethod
    def _item_response(item: dict[str, Any], reply: Reply) -> dict[str, Any]:
        item_headers = {"Cache-Control": "no-cache", "Content-Type": "application/json", **reply.headers}
        return {"id": str(item["id"]), "status": reply.status, "headers": item_headers, "body": reply.body}

    def _batch_item(
        self,
        parent_seq: int,
        item: dict[str, Any],
        headers: dict[str, str],
        base_url: str,
        tenant: TenantState,
        token: AccessToken,
        profile: FaultProfile,
    ) -> Reply:
        method = str(item["method"]).upper()
        url = str(item["url"])
        # Items may carry absolute URLs (the SDK's batch helpers send them) or relative ones.
        if "://" in url:
            url = urlsplit(url).path + ("?" + urlsplit(url).query if urlsplit(url).query else "")
            version_root = urlsplit(base_url).path
            if url.lower().startswith(version_root.lower()):
                url = url[len(version_root) :]
        if not url.startswith("/"):
            url = "/" + url
        path, _, raw_query = url.partition("?")
        item_headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        request_id = str(uuid.uuid4())
        route_name = "unknown"
        early = False
        try:
            if path.rstrip("/").lower() == "/$batch":
                raise GraphError(400, "BadRequest", "Nested batch requests are not supported.")
            route, params = self.resolve(method, path)
            route_name = route.name
            throttle_key = None
            if route.name in MAILBOX_ROUTES and "user" in params:
                throttle_key = (tenant.tenant_id, token.app_id, params["user"].lower())
            fault, early = self._before(
                tenant, token.app_id, route.name, method, profile, in_batch=True, throttle_key=throttle_key
            )
            if fault is not None:
                reply = fault
            else:
                self._authorize(route.name, token)
                query = self._query_map(_parse_query(raw_query))
                call = Call(
                    method,
                    path,
                    query,
                    {**headers, **item_headers},
                    item.get("body"),
                    base_url,
                    tenant,
                    token,
                )
                reply = self._after(route.handler(call, **params), tenant, route.name, method, in_batch=True)
        except GraphError as exc:
            reply = Reply(exc.status, error_body(exc.code, exc.message, request_id), exc.headers)
        except ODataQueryError as exc:
            reply = Reply(exc.status, error_body(exc.code, exc.message, request_id))
        if isinstance(reply.body, dict) and "error" in reply.body:
            reply.body["error"].setdefault("innerError", {})["request-id"] = request_id
        reply.headers.setdefault("request-id", request_id)
        self.observer.record(
            RequestRecord(
                self.observer.next_seq(),
                time.time(),
                tenant.tenant_id,
                token.app_id,
                method,
                path,
                route_name,
                reply.status,
                batch_parent=parent_seq,
                early=early,
                fault=reply.fault,
                body=item.get("body") if method != "GET" else None,
            )
        )
        return reply

    # --- collections -------------------------------------------------------------------------------

    def _skiptoken(self, offset: int, signature: str) -> str:
        payload = json.dumps({"o": offset, "q": signature}).encode()
        mac = hmac.new(self._token_key, payload, hashlib.sha256).digest()[:12]
        return "RFNwdAIA" + base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")

    def _read_skiptoken(self, token: str, signature: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token[8:] + "=" * (-len(token[8:]) % 4))
            payload, mac = raw[:-12], raw[-12:]
            expected = hmac.new(self._token_key, payload, hashlib.sha256).digest()[:12]
            data = json.loads(payload)
            if (
                not token.startswith("RFNwdAIA")
                or not hmac.compare_digest(mac, expected)
                or data["q"] != signature
            ):
                raise ValueError("mismatch")
            return int(data["o"])
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            raise GraphError(400, "Request_BadRequest", "Invalid skip token value.") from exc

    def collection(
        self,
        call: Call,
        items: Sequence[Any] | Iterable[Any],
        entity_set: str,
        *,
        spec: FilterSpec | None = None,
        to_dict: Callable[[Any], dict[str, Any]] = lambda x: x,
        selectable: Iterable[str] | None = None,
        default_properties: Iterable[str] | None = None,
        max_top: int | None = MAX_TOP,
        supports: Iterable[str] = ("$filter", "$select", "$top", "$count"),
    ) -> Reply:
        """A paged collection answer with Graph's $filter/$select/$top/$count/$skiptoken semantics."""
        query = call.query
        supported = set(supports) | {"$skiptoken"}
        for option in query:
            if option.startswith("$") and option not in supported:
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery" if option != "$skip" else "Request_BadRequest",
                    f"The query option '{option}' is not supported on this resource.",
                )
        advanced = call.headers.get("consistencylevel", "").lower() == "eventual"
        count_requested = query.get("$count", "").lower() == "true"
        node: Node | None = None
        if "$filter" in query:
            node = parse_filter(query["$filter"])
            if spec is not None:
                spec.check(node, advanced_allowed=advanced and count_requested)
        select: list[str] | None = None
        if "$select" in query:
            select = [s.strip() for s in query["$select"].split(",") if s.strip()]
            allowed = {s.lower(): s for s in (selectable or [])}
            for prop in select:
                if selectable is not None and prop.lower() not in allowed:
                    raise GraphError(
                        400,
                        "Request_BadRequest",
                        f"Could not find a property named '{prop}' on type "
                        f"'{spec.resource if spec else entity_set}'.",
                    )
                if prop.lower() == "mailboxsettings":
                    raise GraphError(501, "NotImplemented", "This operation target is not yet supported.")
        top = DEFAULT_TOP
        if "$top" in query:
            try:
                top = int(query["$top"])
            except ValueError as exc:
                raise GraphError(400, "BadRequest", f"Invalid value '{query['$top']}' for $top.") from exc
            if top < 1 or (max_top is not None and top > max_top):
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery",
                    f"Invalid page size specified: '{top}'. Must be between 1 and {max_top} inclusive.",
                )
        signature = hashlib.sha256(
            json.dumps(sorted((k, v) for k, v in query.items() if k != "$skiptoken")).encode()
        ).hexdigest()[:16]
        offset = self._read_skiptoken(query["$skiptoken"], signature) if "$skiptoken" in query else 0

        # Without a filter, a sequence is sliced directly: paging a large synthetic tenant stays cheap.
        page: list[Any]
        total: int | None
        if node is None and isinstance(items, Sequence):
            page = [items[i] for i in range(offset, min(offset + top, len(items)))]
            total = len(items)
        else:
            matches = (x for x in items if evaluate(node, to_dict(x))) if node is not None else iter(items)
            page, total = [], 0
            for index, item in enumerate(matches):
                if offset <= index < offset + top:
                    page.append(item)
                total = index + 1
                if index >= offset + top and not count_requested:
                    total = None  # more exist; the exact count was not asked for
                    break
        more = (total is None) or (offset + len(page) < total)
        values = [self._project(to_dict(x), select, default_properties) for x in page]
        context_set = entity_set + (f"({','.join(select)})" if select else "")
        body: dict[str, Any] = {"@odata.context": f"{call.base_url}/$metadata#{context_set}"}
        if count_requested and advanced and total is not None:
            body["@odata.count"] = total
        if more:
            kept = [(k, v) for k, v in query.items() if k != "$skiptoken"]
            kept.append(("$skiptoken", self._skiptoken(offset + len(page), signature)))
            body["@odata.nextLink"] = f"{call.base_url}{call.path}?" + "&".join(
                f"{k}={quote(v, safe=chr(36) + ',()*:@/=')}" for k, v in kept
            )
        body["value"] = values
        return Reply(200, body)

    @staticmethod
    def _project(
        obj: dict[str, Any], select: list[str] | None, default: Iterable[str] | None
    ) -> dict[str, Any]:
        public = {k: v for k, v in obj.items() if not k.startswith("_")}
        if select:
            wanted = {s.lower() for s in select}
            return {k: v for k, v in public.items() if k.lower() in wanted or k == "@odata.type"}
        if default is not None:
            keep = set(default) | {"@odata.type"}
            return {k: v for k, v in public.items() if k in keep}
        return public

    # --- routes ------------------------------------------------------------------------------------

    def organization(self, call: Call) -> Reply:
        tenant = call.tenant
        initial = tenant.domain.split(".")[0] + ".onmicrosoft.com"
        org = {
            "id": tenant.tenant_id,
            "displayName": tenant.display_name,
            "tenantType": "AAD",
            "countryLetterCode": "GB",
            "verifiedDomains": [
                {
                    "capabilities": "Email, OfficeCommunicationsOnline",
                    "isDefault": True,
                    "isInitial": False,
                    "name": tenant.domain,
                    "type": "Managed",
                },
                {
                    "capabilities": "Email, OfficeCommunicationsOnline",
                    "isDefault": False,
                    "isInitial": True,
                    "name": initial,
                    "type": "Managed",
                },
            ],
        }
        return self.collection(call, [org], "organization", supports=("$select",), selectable=org.keys())

    def sp_list(self, call: Call) -> Reply:
        keys = {k for sp in call.tenant.service_principals for k in sp}
        return self.collection(
            call, call.tenant.service_principals, "servicePrincipals", spec=_SP_SPEC, selectable=keys
        )

    def _find_sp(self, call: Call, sp_id: str | None = None, app_id: str | None = None) -> dict[str, Any]:
        sp = call.tenant.sp(sp_id) if sp_id else call.tenant.sp_by_app_id(app_id or "")
        if sp is None:
            key = sp_id or f"appId='{app_id}'"
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        return sp

    def sp_get(self, call: Call, sp_id: str | None = None, app_id: str | None = None) -> Reply:
        sp = self._find_sp(call, sp_id, app_id)
        select = [s.strip() for s in call.query.get("$select", "").split(",") if s.strip()]
        body = {
            "@odata.context": f"{call.base_url}/$metadata#servicePrincipals/$entity",
            **self._project(sp, select or None, None),
        }
        return Reply(200, body)

    def sp_app_role_assignments(
        self, call: Call, sp_id: str | None = None, app_id: str | None = None
    ) -> Reply:
        sp = self._find_sp(call, sp_id, app_id)
        items = []
        for assignment in call.tenant.app_role_assignments:
            if assignment["principalId"].lower() != sp["id"].lower():
                continue
            resource = call.tenant.sp(assignment["resourceId"]) or {}
            items.append(
                {
                    "id": assignment["id"],
                    "deletedDateTime": None,
                    "appRoleId": assignment["appRoleId"],
                    "createdDateTime": assignment.get("createdDateTime", "2024-01-15T09:30:00Z"),
                    "principalDisplayName": sp["displayName"],
                    "principalId": sp["id"],
                    "principalType": "ServicePrincipal",
                    "resourceDisplayName": resource.get("displayName"),
                    "resourceId": assignment["resourceId"],
                }
            )
        return self.collection(call, items, "appRoleAssignments")

    def _active(self, tenant: TenantState, *, replicated: bool = True) -> list[dict[str, Any]]:
        """Assignments in force; reads (`replicated`) do not yet see those still replicating, while a
        write's conflict check does (it is decided where the assignment was written)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        wall = time.time()
        return [
            a
            for a in tenant.role_assignments
            if (not a.get("_end") or a["_end"] > now) and (not replicated or a.get("_visible_at", 0) <= wall)
        ]

    def sp_transitive_member_of(
        self, call: Call, sp_id: str | None = None, app_id: str | None = None
    ) -> Reply:
        sp = self._find_sp(call, sp_id, app_id)
        groups = [g for g in call.tenant.groups if sp["id"] in g.get("members", [])]
        principals = {sp["id"].lower()} | {g["id"].lower() for g in groups}
        role_ids = {
            a["roleDefinitionId"]
            for a in self._active(call.tenant)
            if a["principalId"].lower() in principals and a["directoryScopeId"] == "/"
        }
        # An object type the app cannot read comes back as a limited-information object: @odata.type and
        # id, every other property null (serviceprincipal-list-transitivememberof.md).
        reads_groups = not call.token.roles.isdisjoint(GROUP_READ_PERMISSIONS)
        reads_roles = not call.token.roles.isdisjoint(ROUTE_PERMISSIONS["directoryRoles"])
        items: list[dict[str, Any]] = [
            {
                "@odata.type": "#microsoft.graph.group",
                "id": g["id"],
                "displayName": g["displayName"],
                "isAssignableToRole": g.get("isAssignableToRole", False),
                "securityEnabled": True,
                "mailEnabled": False,
                "groupTypes": [],
            }
            if reads_groups
            else _limited("#microsoft.graph.group", g["id"], _GROUP_PROPERTIES)
            for g in groups
        ]
        for rid in sorted(role_ids):
            role = self._directory_role_obj(call.tenant, rid)
            items.append(
                role | {"@odata.type": "#microsoft.graph.directoryRole"}
                if reads_roles
                else _limited("#microsoft.graph.directoryRole", role["id"], role)
            )
        return self.collection(call, items, "directoryObjects", supports=("$select", "$top", "$count"))

    def ra_list(self, call: Call) -> Reply:
        expand = [e.strip() for e in call.query.get("$expand", "").split(",") if e.strip()]
        for name in expand:
            if name not in ("principal", "roleDefinition"):
                raise GraphError(
                    400,
                    "BadRequest",
                    f"Could not find a property named '{name}' on type "
                    "'microsoft.graph.unifiedRoleAssignment'.",
                )
        items = self._active(call.tenant)
        if expand:
            items = [self._expanded(call.tenant, a, expand) for a in items]
        reply = self.collection(
            call,
            items,
            "roleManagement/directory/roleAssignments",
            spec=_ROLE_ASSIGNMENT_SPEC,
            selectable=(
                "id",
                "principalId",
                "roleDefinitionId",
                "directoryScopeId",
                "appScopeId",
                "condition",
            ),
            max_top=None,
            supports=("$filter", "$select", "$top", "$count", "$expand"),
        )
        if expand and isinstance(reply.body, dict):
            context = reply.body["@odata.context"]
            reply.body["@odata.context"] = context + "(" + ",".join(f"{e}()" for e in expand) + ")"
        return reply

    def _expanded(self, tenant: TenantState, assignment: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        item = dict(assignment)
        if "principal" in expand:
            principal_id = assignment["principalId"]
            sp, group, user = (
                tenant.sp(principal_id),
                tenant.group(principal_id),
                tenant.users.find(principal_id),
            )
            if sp is not None:
                item["principal"] = {
                    "@odata.type": "#microsoft.graph.servicePrincipal",
                    "id": sp["id"],
                    "appId": sp["appId"],
                    "displayName": sp["displayName"],
                }
            elif group is not None:
                item["principal"] = {
                    "@odata.type": "#microsoft.graph.group",
                    "id": group["id"],
                    "displayName": group["displayName"],
                }
            elif user is not None:
                item["principal"] = {
                    "@odata.type": "#microsoft.graph.user",
                    "id": user.id,
                    "displayName": user.display_name,
                }
        if "roleDefinition" in expand:
            template = assignment["roleDefinitionId"].lower()
            item["roleDefinition"] = {
                "id": template,
                "templateId": template,
                "isBuiltIn": True,
                "isEnabled": True,
                "displayName": ROLE_TEMPLATES.get(template, "Custom role"),
            }
        return item

    def ra_get(self, call: Call, ra_id: str) -> Reply:
        for assignment in self._active(call.tenant):
            if assignment["id"] == ra_id:
                return Reply(
                    200,
                    {
                        "@odata.context": f"{call.base_url}/$metadata#roleManagement/directory/"
                        "roleAssignments/$entity",
                        **self._project(assignment, None, None),
                    },
                )
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{ra_id}' does not exist or one of its queried "
            "reference-property objects are not present.",
        )

    def ra_create(self, call: Call) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.")
        for required in ("roleDefinitionId", "principalId"):
            if not body.get(required):
                raise GraphError(400, "Request_BadRequest", f"Required property '{required}' is missing.")
        scope, app_scope = body.get("directoryScopeId"), body.get("appScopeId")
        if bool(scope) == bool(app_scope):
            raise GraphError(
                400, "Request_BadRequest", "Exactly one of directoryScopeId and appScopeId must be set."
            )
        tenant = call.tenant
        principal_id = str(body["principalId"])
        known = tenant.sp(principal_id) or tenant.group(principal_id) or tenant.users.find(principal_id)
        if known is None:
            raise GraphError(
                400, "Request_BadRequest", f"The principal '{principal_id}' was not found in the directory."
            )
        if body["roleDefinitionId"].lower() not in ROLE_TEMPLATES:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{body['roleDefinitionId']}' does not exist "
                "or one of its queried reference-property objects are not present.",
            )
        for existing in self._active(tenant, replicated=False):
            if (
                existing["principalId"].lower() == principal_id.lower()
                and existing["roleDefinitionId"].lower() == body["roleDefinitionId"].lower()
                and existing.get("directoryScopeId") == scope
                and existing.get("appScopeId") == app_scope
            ):
                raise GraphError(
                    400,
                    "Request_BadRequest",
                    "A conflicting object with one or more of the specified "
                    "property values is present in the directory.",
                )
        created = {
            "id": assignment_id(),
            "principalId": principal_id,
            "roleDefinitionId": body["roleDefinitionId"],
            "directoryScopeId": scope,
            "appScopeId": app_scope,
            "condition": None,
        }
        delay = self._profile(tenant).replication_delay_seconds
        if delay > 0:
            created["_visible_at"] = time.time() + delay
        tenant.role_assignments.append(created)
        location = f"{call.base_url}/roleManagement/directory/roleAssignments/{created['id']}"
        return Reply(
            201,
            {
                "@odata.context": f"{call.base_url}/$metadata#roleManagement/directory/roleAssignments/"
                "$entity",
                **self._project(created, None, None),
            },
            {"Location": location},
        )

    def _require_p2(self, tenant: TenantState) -> None:
        if not tenant.p2:
            raise GraphError(
                400,
                "AadPremiumLicenseRequired",
                "The tenant needs to have Microsoft Entra ID P2 or Microsoft Entra ID Governance license.",
            )

    def assignment_instances(self, call: Call) -> Reply:
        self._require_p2(call.tenant)
        items = [
            {
                "id": a["id"],
                "principalId": a["principalId"],
                "roleDefinitionId": a["roleDefinitionId"],
                "directoryScopeId": a.get("directoryScopeId"),
                "appScopeId": a.get("appScopeId"),
                "startDateTime": a.get("_start"),
                "endDateTime": a.get("_end"),
                "assignmentType": "Assigned",
                "memberType": "Direct",
                "roleAssignmentOriginId": a["id"],
                "roleAssignmentScheduleId": a["id"],
            }
            for a in self._active(call.tenant)
        ]
        return self.collection(
            call,
            items,
            "roleManagement/directory/roleAssignmentScheduleInstances",
            spec=_SCHEDULE_SPEC,
            max_top=None,
        )

    def eligibility_instances(self, call: Call) -> Reply:
        self._require_p2(call.tenant)
        items = [
            {
                "id": e["id"],
                "principalId": e["principalId"],
                "roleDefinitionId": e["roleDefinitionId"],
                "directoryScopeId": e.get("directoryScopeId", "/"),
                "appScopeId": None,
                "startDateTime": e.get("startDateTime"),
                "endDateTime": e.get("endDateTime"),
                "memberType": "Direct",
                "roleEligibilityScheduleId": e["id"],
            }
            for e in call.tenant.eligibilities
        ]
        return self.collection(
            call,
            items,
            "roleManagement/directory/roleEligibilityScheduleInstances",
            spec=_SCHEDULE_SPEC,
            max_top=None,
        )

    def _directory_role_obj(self, tenant: TenantState, template: str) -> dict[str, Any]:
        name = ROLE_TEMPLATES.get(template.lower(), "Custom role")
        return {
            "id": stable_id(tenant.tenant_id, "directoryRole", template.lower()),
            "deletedDateTime": None,
            "description": f"{name} built-in role.",
            "displayName": name,
            "roleTemplateId": template.lower(),
        }

    def _activated_roles(self, tenant: TenantState) -> list[dict[str, Any]]:
        templates = sorted(
            {a["roleDefinitionId"].lower() for a in self._active(tenant) if a["directoryScopeId"] == "/"}
        )
        return [self._directory_role_obj(tenant, t) for t in templates]

    def directory_roles(self, call: Call) -> Reply:
        return self.collection(
            call,
            self._activated_roles(call.tenant),
            "directoryRoles",
            spec=_DIRECTORY_ROLE_SPEC,
            supports=("$filter", "$select"),
            max_top=None,
        )

    def _find_role(self, tenant: TenantState, template: str | None, role_id: str | None) -> dict[str, Any]:
        for role in self._activated_roles(tenant):
            if (template and role["roleTemplateId"] == template.lower()) or (
                role_id and role["id"] == role_id.lower()
            ):
                return role
        key = f"roleTemplateId={template}" if template else role_id
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{key}' does not exist or one of its queried "
            "reference-property objects are not present.",
        )

    def directory_role(self, call: Call, template: str | None = None, role_id: str | None = None) -> Reply:
        role = self._find_role(call.tenant, template, role_id)
        return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#directoryRoles/$entity", **role})

    def directory_role_members(
        self, call: Call, template: str | None = None, role_id: str | None = None
    ) -> Reply:
        role = self._find_role(call.tenant, template, role_id)
        members: list[dict[str, Any]] = []
        for a in self._active(call.tenant):
            if a["roleDefinitionId"].lower() != role["roleTemplateId"] or a["directoryScopeId"] != "/":
                continue
            sp = call.tenant.sp(a["principalId"])
            group = call.tenant.group(a["principalId"])
            user = call.tenant.users.find(a["principalId"])
            if sp is not None:
                members.append({"@odata.type": "#microsoft.graph.servicePrincipal", **sp})
            elif group is not None:
                members.append(
                    {
                        "@odata.type": "#microsoft.graph.group",
                        "id": group["id"],
                        "displayName": group["displayName"],
                    }
                )
            elif user is not None:
                members.append({"@odata.type": "#microsoft.graph.user", **user.to_graph()})
        return self.collection(call, members, "directoryObjects", supports=("$select", "$top"))

    def users_list(self, call: Call) -> Reply:
        return self.collection(
            call,
            call.tenant.users,
            "users",
            spec=_USER_SPEC,
            to_dict=UserRecord.to_graph,
            selectable=_USER_SELECTABLE,
            default_properties=_USER_DEFAULT,
        )

    # --- users delta ------------------------------------------------------------------------------
    #
    # As learn.microsoft.com documents it (graph/api/user-delta, graph/delta-query-overview,
    # graph/delta-query-users; graph-api-notes.md §3.8):
    # * the first round enumerates every user, paged through `@odata.nextLink` ($skiptoken); the last page
    #   carries `@odata.deltaLink` ($deltatoken), and a page never carries both;
    # * `$deltatoken=latest` ("sync from now", supported for Entra ID users and groups) answers no users,
    #   only a deltaLink for the current state;
    # * a round started from a deltaLink answers only what changed since: changed or new users with the
    #   properties selected in the first round (without `Prefer: return=minimal`), removed users as
    #   `{"id": ..., "@removed": {"reason": "changed"}}` (soft-deleted, restorable) or `"deleted"` (hard);
    # * only `$select` (and `$filter` on ids) is supported; other query options are refused;
    # * delta tokens of directory objects are valid for 7 days; an expired or invalidated token answers
    #   410 Gone and the client must start again with a full round (delta-query-overview, "Token
    #   duration"; `UserDirectory.token_epoch` invalidates every token at once, as a tenant move does).
    # Delta does not report mailbox changes: converting a user's mailbox to shared changes no directory
    # property, so it produces no delta entry (UserDirectory.convert_mailbox).

    DELTA_PAGE = 200  # users per delta page (Graph does not document it; $top is not supported)
    DELTA_TOKEN_DAYS = 7

    def _delta_token(self, payload: dict[str, Any]) -> str:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        mac = hmac.new(self._token_key, raw, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(raw + mac).decode().rstrip("=")

    def _read_delta_token(self, token: str) -> dict[str, Any]:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload, mac = raw[:-12], raw[-12:]
            if not hmac.compare_digest(mac, hmac.new(self._token_key, payload, hashlib.sha256).digest()[:12]):
                raise ValueError("mismatch")
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise ValueError("shape")
            return data
        except (ValueError, json.JSONDecodeError) as exc:
            raise GraphError(400, "Request_BadRequest", "Invalid delta token value.") from exc

    def users_delta(self, call: Call) -> Reply:
        query = call.query
        for option in query:
            if option.startswith("$") and option not in ("$select", "$deltatoken", "$skiptoken"):
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery",
                    f"The query option '{option}' is not supported with delta queries on users.",
                )
        directory = call.tenant.users
        link_base = f"{call.base_url}/users/delta?"
        if "$skiptoken" in query or ("$deltatoken" in query and query["$deltatoken"] != "latest"):
            state = self._read_delta_token(query.get("$skiptoken") or query["$deltatoken"])
            expired = time.time() - float(state.get("t", 0)) > self.DELTA_TOKEN_DAYS * 86400
            if state.get("e") != directory.token_epoch or expired:
                raise GraphError(
                    410,
                    "syncStateNotFound",
                    "Resync required. The delta token is no longer valid: replace any local data with "
                    "the data from a new delta query.",
                )
            select = [str(s) for s in state.get("q") or []]
            if "$deltatoken" in query:  # a new round of changes since the token's sequence
                state = {"s": int(state["s"]), "u": directory.change_seq, "o": 0, "q": select}
        else:
            select = [s.strip() for s in query.get("$select", "").split(",") if s.strip()]
            allowed = {s.lower() for s in _USER_SELECTABLE}
            for prop in select:
                if prop.lower() not in allowed or prop.lower() == "mailboxsettings":
                    raise GraphError(
                        400, "Request_BadRequest", f"Could not find a property named '{prop}' on type 'user'."
                    )
            state = {"s": -1, "u": directory.change_seq, "o": 0, "q": select}
            if query.get("$deltatoken") == "latest":
                state["o"] = -1  # nothing to enumerate: only the deltaLink
        upto, offset = int(state["u"]), int(state["o"])
        entries: list[dict[str, Any]] = []
        total = 0
        if offset >= 0 and int(state["s"]) < 0:
            total = len(directory)
            entries = [
                self._project(directory[i].to_graph(), select or None, _USER_DEFAULT)
                for i in range(offset, min(offset + self.DELTA_PAGE, total))
            ]
        elif offset >= 0:
            latest: dict[str, str] = {}
            for seq, user_id, removed in directory.changes:
                if int(state["s"]) < seq <= upto:
                    latest.pop(user_id.lower(), None)  # keep each user once, at its latest change
                    latest[user_id.lower()] = removed
            changed = list(latest.items())
            total = len(changed)
            for user_id, removed in changed[offset : offset + self.DELTA_PAGE]:
                user = None if removed else directory.find(user_id)
                if user is None:
                    entries.append({"id": user_id, "@removed": {"reason": removed or "deleted"}})
                else:
                    entries.append(self._project(user.to_graph(), select or None, _USER_DEFAULT))
        body: dict[str, Any] = {"@odata.context": f"{call.base_url}/$metadata#users"}
        if offset >= 0 and offset + self.DELTA_PAGE < total:
            following = {**state, "o": offset + self.DELTA_PAGE, "e": directory.token_epoch, "t": time.time()}
            body["@odata.nextLink"] = link_base + "$skiptoken=" + self._delta_token(following)
        else:
            final = {"s": upto, "u": upto, "o": 0, "q": select, "e": directory.token_epoch, "t": time.time()}
            body["@odata.deltaLink"] = link_base + "$deltatoken=" + self._delta_token(final)
        body["value"] = entries
        return Reply(200, body)

    def _find_user(self, call: Call, key: str) -> UserRecord:
        user = call.tenant.users.find(key)
        if user is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its queried "
                "reference-property objects are not present.",
            )
        return user

    def user_get(self, call: Call, user: str) -> Reply:
        record = self._find_user(call, user)
        select = [s.strip() for s in call.query.get("$select", "").split(",") if s.strip()]
        return Reply(
            200,
            {
                "@odata.context": f"{call.base_url}/$metadata#users/$entity",
                **self._project(record.to_graph(), select or None, _USER_DEFAULT),
            },
        )

    def _mailbox_user(self, call: Call, key: str) -> UserRecord:
        record = call.tenant.users.find(key)
        if record is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
        if record.mailbox_on_premises is not None:
            # A hybrid tenant's mailbox hosted in on-premises Exchange (world.ON_PREMISES_ANSWERS).
            if record.mailbox_on_premises == "preview":
                raise GraphError(
                    403,
                    "ErrorAccessDenied",
                    "Access is denied. Check credentials and try again. REST APIs for this mailbox are "
                    "currently in preview. You can find more information about the preview REST APIs at "
                    "https://dev.outlook.com/.",
                )
            if record.mailbox_on_premises == "not_hosted":
                raise GraphError(
                    404,
                    "MailboxNotHostedInExchangeOnline",
                    "The mailbox is not hosted in Exchange Online.",
                )
            raise GraphError(
                404, "MailboxNotEnabledForRESTAPI", "REST API is not yet supported for this mailbox."
            )
        if record.purpose is None:
            raise GraphError(
                404, "MailboxNotEnabledForRESTAPI", "REST API is not yet supported for this mailbox."
            )
        if record.mailbox_access_denied:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return record

    def mailbox_settings(self, call: Call, user: str) -> Reply:
        record = self._mailbox_user(call, user)
        settings: dict[str, Any] = {
            "archiveFolder": "AAMkAGI2TGuLAAA=",
            "timeZone": "GMT Standard Time",
            "delegateMeetingMessageDeliveryOptions": "sendToDelegateOnly",
            "dateFormat": "dd/MM/yyyy",
            "timeFormat": "HH:mm",
            "userPurpose": record.purpose,
            "language": {"locale": "en-GB", "displayName": "English (United Kingdom)"},
            "automaticRepliesSetting": {"status": "disabled", "externalAudience": "all"},
            "workingHours": {
                "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "startTime": "08:00:00.0000000",
                "endTime": "17:00:00.0000000",
            },
        }
        assert record.purpose in MAILBOX_PURPOSES
        if "$select" in call.query:
            # `$select` on mailboxSettings is not documented (api/user-get-mailboxsettings.md documents
            # /mailboxSettings and /mailboxSettings/{property}); in the field it is ignored and the whole
            # object comes back (msgraph-sdk-dotnet#2511), and it has broken before (docs-contrib#1658).
            # The simulator refuses it so nothing comes to depend on it.
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                "The query option '$select' is not supported on mailboxSettings: read one setting at "
                "/users/{id}/mailboxSettings/{setting}, e.g. /mailboxSettings/userPurpose.",
            )
        body = {
            "@odata.context": f"{call.base_url}/$metadata#users('{record.id}')/mailboxSettings",
            **settings,
        }
        return Reply(200, body)

    def mailbox_user_purpose(self, call: Call, user: str) -> Reply:
        record = self._mailbox_user(call, user)
        context = f"{call.base_url}/$metadata#users('{record.id}')/mailboxSettings/userPurpose"
        return Reply(200, {"@odata.context": context, "value": record.purpose})


_GROUP_PROPERTIES = ("displayName", "isAssignableToRole", "securityEnabled", "mailEnabled", "groupTypes")


def _limited(odata_type: str, object_id: str, properties: Iterable[str]) -> dict[str, Any]:
    """A limited-information directory object: its type and id, every other property null."""
    return {"@odata.type": odata_type, "id": object_id} | {
        name: None for name in properties if name not in ("id", "@odata.type")
    }


def _parse_query(raw: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(raw, keep_blank_values=True)


async def sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)
