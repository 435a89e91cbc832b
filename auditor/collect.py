"""Tenant → snapshot: read what Graph says about the vendor app and the mailboxes, keep what failed.

Each section (service principals, roles, Exchange app roles, mailbox census) is collected on its own;
a section that cannot be read carries its error instead of a value, so the evaluator can never take
"could not read" for "found nothing". A sign-in failure fails the whole tenant.

Requests for one tenant (U users, M of them with a mail address, the vendor SP a member of G groups),
when the vendor app is identified: organization 1; service principal search 1 by display name (+1 by
publisher when `publisher_tenant_id` is set, +1 by a pinned app_id); transitiveMemberOf 1; role
assignments ceil((1+G)/15) (`principalId in (...)` for the SP and every group it is in: groups come back
as limited-information objects without a group read permission, so none is skipped); PIM assignment and
eligibility instances 2 (1 without Entra ID P2: `roleDefinitionId eq` Security Reader, principals
matched in code, since `principalId` supports only `eq`/`ne` there); appRoleAssignments 1 (+1 to resolve
Exchange app role names when there are any); users ceil(U/999); mailbox $batch ceil(M/20) carrying M
`GET /users/{id}/mailboxSettings/userPurpose` items. See README "Graph requests per tenant".
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from auditor.census import CensusBook, read_census
from auditor.config import AuditConfig, AuthMethod, EffectiveAuth, TenantConfig, VendorSettings
from auditor.constants import EXCHANGE_ONLINE_APP_ID, SECURITY_READER_ROLE_ID
from auditor.errors import ErrorCode, GraphError, TenantError, permission_hint, register_secret
from auditor.evaluate import (
    EvaluationSettings,
    describe_vendor_search,
    evaluate,
    identify_service_principal,
    vendor_filters,
)
from auditor.graph.client import ConnectionSettings, GraphSession, open_session
from auditor.graph.reader import GraphReader, MailboxAnswer, translate_auth_error
from auditor.model import (
    Collected,
    ExchangeAppRoles,
    Failed,
    GroupRecord,
    MailboxCensus,
    RoleAssignmentRecord,
    RoleEvidence,
    Section,
    ServicePrincipalRecord,
    ServicePrincipalSearch,
    SharedMailbox,
    TenantResult,
    TenantSnapshot,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
SP_FIELDS = ["id", "appId", "displayName", "accountEnabled", "appOwnerOrganizationId", "servicePrincipalType"]
USER_FIELDS = [
    "id",
    "displayName",
    "userPrincipalName",
    "mail",
    "accountEnabled",
    "assignedLicenses",
    "onPremisesSyncEnabled",
]
# Principal ids per `principalId in (...)` filter: keeps each URL a sane length (15 GUIDs ≈ 700 chars).
PRINCIPALS_PER_FILTER = 15


def _quote(value: str) -> str:
    """An OData string literal ('' escapes a quote)."""
    return "'" + value.replace("'", "''") + "'"


class SettingsError(Exception):
    """The tenant's settings cannot produce a credential (unset variable, missing file)."""

    def __init__(self, error: TenantError):
        super().__init__(error.message)
        self.error = error


def connection_settings(
    tenant: TenantConfig, environ: Mapping[str, str] | None = None, *, auth: EffectiveAuth | None = None
) -> ConnectionSettings:
    """Resolve a tenant's auth settings (its read `auth` unless another is given); secrets are read from
    the environment only now."""
    env = os.environ if environ is None else environ
    auth = auth or tenant.auth
    label = tenant.label

    def config_error(message: str, hint: str) -> SettingsError:
        return SettingsError(TenantError(ErrorCode.CONFIG_ERROR, f"{label}: {message}", hint))

    secret = password = None
    if auth.method is AuthMethod.SECRET:
        name = auth.client_secret_env or ""
        secret = env.get(name)
        register_secret(secret)
        if not secret:
            raise config_error(
                f"environment variable {name} (client_secret_env) is not set",
                f"Set {name} in the environment the auditor runs in (scheduler, service, container).",
            )
    if auth.method is AuthMethod.CERTIFICATE:
        path = auth.certificate_path
        if path is None or not path.is_file():
            raise config_error(
                f"certificate file {path} (certificate_path) does not exist",
                "Point certificate_path at the PEM file holding the app's private key and certificate.",
            )
        if auth.certificate_password_env:
            password = env.get(auth.certificate_password_env)
            register_secret(password)
            if password is None:
                raise config_error(
                    f"environment variable {auth.certificate_password_env} "
                    "(certificate_password_env) is not set",
                    f"Set {auth.certificate_password_env} to the certificate key's password.",
                )
    if auth.method is AuthMethod.WORKLOAD_IDENTITY:
        from_env = env.get("AZURE_FEDERATED_TOKEN_FILE")
        token_file = auth.token_file_path or (Path(from_env) if from_env else None)
        if token_file is None or not token_file.is_file():
            raise config_error(
                f"federated token file {token_file} does not exist",
                "Set token_file_path (or AZURE_FEDERATED_TOKEN_FILE) to the projected token.",
            )
    else:
        token_file = None
    return ConnectionSettings(
        tenant_id=tenant.tenant_id,
        client_id=auth.client_id or "",
        method=auth.method.value,
        authority=auth.authority,
        graph_endpoint=auth.graph_endpoint,
        scope=auth.scope,
        client_secret=secret,
        certificate_path=auth.certificate_path,
        certificate_password=password,
        token_file=token_file,
        ca_bundle=auth.ca_bundle,
    )


async def _section(read: Awaitable[T]) -> Section[T]:
    """Run one section's reads; a Graph failure becomes the section's error."""
    try:
        return Collected(await read)
    except GraphError as exc:
        return Failed(exc.to_tenant_error())


async def search_vendor(reader: Any, vendor: VendorSettings) -> ServicePrincipalSearch:
    """The service principals that could be the vendor's: by pinned appId, by display name and by
    publisher (see :func:`vendor_filters`).

    `reader` needs `service_principals(odata_filter, select)` (a GraphReader, or doctor's probe).
    """
    found: dict[str, ServicePrincipalRecord] = {}
    for odata_filter in vendor_filters(vendor):
        for item in await reader.service_principals(odata_filter, SP_FIELDS):
            record = ServicePrincipalRecord(
                id=str(item["id"]),
                app_id=str(item.get("appId") or ""),
                display_name=str(item.get("displayName") or ""),
                account_enabled=bool(item.get("accountEnabled", True)),
                app_owner_organization_id=item.get("appOwnerOrganizationId"),
                service_principal_type=item.get("servicePrincipalType"),
            )
            found[record.id.lower()] = record
    return ServicePrincipalSearch(tuple(found.values()))


class TenantCollector:
    """Collects one tenant's snapshot through a GraphReader."""

    def __init__(
        self, reader: GraphReader, tenant: TenantConfig, config: AuditConfig, census: CensusBook | None = None
    ):
        self.reader = reader
        self.tenant = tenant
        self.vendor = config.vendor
        self.census = census  # None: every mailbox is read (no stored census)

    async def collect(self) -> TenantSnapshot:
        tenant = self.tenant
        started = datetime.now(UTC)
        organization: dict[str, Any] | None = None
        try:
            # The first call: it proves sign-in and consent before anything else is read.
            organization = await self.reader.organization()
        except GraphError as exc:
            if exc.code in (
                ErrorCode.AUTH_FAILED,
                ErrorCode.NETWORK_ERROR,
                ErrorCode.TIMEOUT,
                ErrorCode.WRONG_TENANT,
            ):
                return TenantSnapshot(tenant.name, tenant.tenant_id, started, error=exc.to_tenant_error())
            log.warning(
                "%s: organization not readable (%s); using the configured name",
                tenant.name,
                exc.code,
                extra={
                    "tenant": tenant.name,
                    "tenant_id": tenant.tenant_id,
                    "event": "organization_unreadable",
                },
            )
        try:
            # Before any verdict: the token and /organization must name this tenant (WRONG_TENANT).
            self.reader.session.confirm_tenant(organization)
        except GraphError as exc:
            return TenantSnapshot(tenant.name, tenant.tenant_id, started, error=exc.to_tenant_error())
        sp_section = await _section(self._search())
        census_task = asyncio.ensure_future(_section(self._census()))
        roles: Section[RoleEvidence] | None = None
        exchange: Section[ExchangeAppRoles] | None = None
        if isinstance(sp_section, Collected):
            match = identify_service_principal(
                sp_section.value.candidates, self.vendor, tenant.tenant_id, tenant_name=tenant.name
            )
            if match.identified is not None:
                sp = match.identified.record
                exchange_read = self._exchange(sp) if self.vendor.checks_exchange else None
                roles_section, exchange_section = await asyncio.gather(
                    _section(self._roles(sp)),
                    _section(exchange_read) if exchange_read is not None else _none(),
                )
                roles, exchange = roles_section, exchange_section
        mailboxes = await census_task
        auth_failure = next(
            (
                s.error
                for s in (sp_section, roles, exchange, mailboxes)
                if isinstance(s, Failed) and s.error.code is ErrorCode.AUTH_FAILED
            ),
            None,
        )
        return TenantSnapshot(
            tenant_name=tenant.name,
            tenant_id=tenant.tenant_id,
            collected_at=started,
            error=auth_failure,
            service_principals=sp_section,
            roles=roles,
            exchange=exchange,
            mailboxes=mailboxes,
        )

    async def _search(self) -> ServicePrincipalSearch:
        return await search_vendor(self.reader, self.vendor)

    async def _assignments(self, sp_id: str, group_ids: list[str]) -> list[RoleAssignmentRecord]:
        """Active role assignments of the SP and of every group it is in, `principalId in (...)` in chunks."""
        principals = [sp_id, *group_ids]
        records: list[RoleAssignmentRecord] = []
        for start in range(0, len(principals), PRINCIPALS_PER_FILTER):
            chunk = principals[start : start + PRINCIPALS_PER_FILTER]
            for item in await self.reader.role_assignments(_principal_filter(chunk)):
                via_group = str(item.get("principalId") or "").lower() != sp_id.lower()
                records.append(_assignment(item, via_group=via_group))
        return records

    async def _roles(self, sp: ServicePrincipalRecord) -> RoleEvidence:
        member_of = await self.reader.transitive_member_of(sp.id)
        # Limited-information objects (no group read permission) carry only @odata.type and id: nothing
        # else is relied on, and every group's assignments are asked for.
        groups = tuple(
            GroupRecord(
                str(g["id"]),
                str(g.get("displayName") or ""),
                None if g.get("isAssignableToRole") is None else bool(g.get("isAssignableToRole")),
            )
            for g in member_of
            if str(g.get("@odata.type", "")).endswith(".group") and g.get("id")
        )
        active = await self._assignments(sp.id, [g.id for g in groups])
        principals = {sp.id.lower(), *(g.id.lower() for g in groups)}
        pim_available: bool | None = None
        pim_error: TenantError | None = None
        eligible: list[RoleAssignmentRecord] = []
        # principalId supports only eq/ne on the schedule instances (Graph docs): ask for the Security
        # Reader instances (roleDefinitionId eq, documented) and keep the SP's and its groups' in code.
        role_filter = f"roleDefinitionId eq {_quote(SECURITY_READER_ROLE_ID)}"

        def ours(item: dict[str, Any]) -> bool:
            return str(item.get("principalId") or "").lower() in principals

        try:
            instances = [i for i in await self.reader.role_assignment_instances(role_filter) if ours(i)]
            ends = {(i.get("roleAssignmentOriginId") or i.get("id")): i.get("endDateTime") for i in instances}
            active = [_with_end(a, ends.get(a.id)) for a in active]
            eligible = [
                _assignment(i, via_group=str(i.get("principalId") or "").lower() != sp.id.lower())
                for i in await self.reader.role_eligibility_instances(role_filter)
                if ours(i)
            ]
            pim_available = True  # only once both PIM reads worked (RoleEvidence.pim_available)
        except GraphError as exc:
            if exc.status == 400 and "AadPremiumLicenseRequired" in exc.message:
                pim_available = False
            elif exc.code is ErrorCode.AUTH_FAILED:
                raise
            else:
                pim_error = exc.to_tenant_error()
        return RoleEvidence(tuple(active), tuple(eligible), groups, pim_available, pim_error)

    async def _exchange(self, sp: ServicePrincipalRecord) -> ExchangeAppRoles:
        assignments = await self.reader.app_role_assignments(sp.id)
        if not assignments:
            return ExchangeAppRoles()
        exo = await self.reader.service_principal_by_app_id(EXCHANGE_ONLINE_APP_ID, ["id", "appRoles"])
        names = {str(r.get("id")).lower(): str(r.get("value")) for r in exo.get("appRoles") or []}
        exo_id = str(exo.get("id", "")).lower()
        values, unresolved = [], []
        for assignment in assignments:
            if str(assignment.get("resourceId", "")).lower() != exo_id:
                continue
            role_id = str(assignment.get("appRoleId", "")).lower()
            (values.append(names[role_id]) if role_id in names else unresolved.append(role_id))
        return ExchangeAppRoles(tuple(values), tuple(unresolved))

    async def _census(self) -> MailboxCensus:
        if self.census is None:
            users = await self.reader.users(USER_FIELDS)
            with_mail = [u for u in users if u.get("mail")]
            answers = await self.reader.mailbox_purposes(str(u["id"]) for u in with_mail)
            return census_from(users, answers, self.reader.tenant_label, self.reader.app_label)
        # Incremental nights (auditor.census): the stored census continued with the users delta.
        read = await read_census(
            self.reader, self.census, self.tenant.tenant_id, USER_FIELDS, self.tenant.label
        )
        census = census_from(read.users, read.answers, self.reader.tenant_label, self.reader.app_label)
        return replace(census, age_days=read.age_days) if read.incremental else census


async def _none() -> None:
    return None


def _principal_filter(principal_ids: list[str]) -> str:
    if len(principal_ids) == 1:
        return f"principalId eq {_quote(principal_ids[0])}"
    return f"principalId in ({', '.join(_quote(p) for p in principal_ids)})"


def _assignment(item: dict[str, Any], *, via_group: bool) -> RoleAssignmentRecord:
    principal = str(item.get("principalId") or "")
    return RoleAssignmentRecord(
        id=str(item.get("id") or ""),
        principal_id=principal,
        role_definition_id=str(item.get("roleDefinitionId") or "").lower(),
        directory_scope_id=str(item.get("directoryScopeId") or ""),
        end_date_time=_parse_time(item.get("endDateTime")),
        via_group_id=principal if via_group else None,
        member_type="Group" if via_group else str(item.get("memberType") or "Direct"),
    )


def _with_end(record: RoleAssignmentRecord, end: Any) -> RoleAssignmentRecord:
    parsed = _parse_time(end)
    if parsed is None:
        return record
    return replace(record, end_date_time=parsed)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def census_from(
    users: list[dict[str, Any]], answers: dict[str, MailboxAnswer], tenant_label: str, app_label: str
) -> MailboxCensus:
    """Count users by mailbox purpose; users without a mail address have no mailbox to classify.

    A user synced from on-premises (`onPremisesSyncEnabled`) with a mail address whose mailbox answers
    the way an on-premises-hosted one does (404 MailboxNotEnabledForRESTAPI /
    MailboxNotHostedInExchangeOnline, 403 "REST APIs for this mailbox are currently in preview") is
    counted as `on_premises`. A cloud-only user answering 404 has no mailbox. Only plain 403s (not the
    on-premises kind) can mean the app lacks MailboxSettings.Read.
    """
    counts = {"user": 0, "room": 0, "equipment": 0, "other": 0, "no_mailbox": 0, "on_premises": 0}
    shared: list[SharedMailbox] = []
    failures: dict[str, int] = {}
    denied = 0
    asked = 0
    for user in users:
        uid = str(user["id"])
        answer = answers.get(uid)
        if answer is None:
            counts["no_mailbox"] += 1
            continue
        synced = bool(user.get("onPremisesSyncEnabled")) and bool(user.get("mail"))
        if answer.hybrid_kind and synced:
            counts["on_premises"] += 1
            continue
        asked += 1
        if answer.no_mailbox:
            counts["no_mailbox"] += 1
        elif answer.failure is not None:
            failures[answer.failure] = failures.get(answer.failure, 0) + 1
            denied += answer.status == 403 and not answer.hybrid_kind
        elif answer.purpose == "shared":
            shared.append(
                SharedMailbox(
                    id=uid,
                    display_name=str(user.get("displayName") or ""),
                    user_principal_name=str(user.get("userPrincipalName") or ""),
                    mail=user.get("mail"),
                    account_enabled=bool(user.get("accountEnabled")),
                    licensed=bool(user.get("assignedLicenses")),
                )
            )
        elif answer.purpose in ("user", "linked"):
            counts["user"] += 1
        elif answer.purpose in ("room", "equipment"):
            counts[answer.purpose] += 1
        else:
            counts["other"] += 1
    if asked and denied == asked:
        # Every mailbox Exchange Online hosts refused: the app lacks MailboxSettings.Read, not a few
        # policy-hidden mailboxes.
        raise GraphError(
            f"Every mailbox in tenant {tenant_label} answered 403 ErrorAccessDenied; needs MailboxSettings.Read",
            code=ErrorCode.PERMISSION_DENIED,
            hint=permission_hint("MailboxSettings.Read", tenant_label, app_label),
            status=403,
        )
    unclassified = sum(failures.values())
    reason = "; ".join(f"{n} x {why}" for why, n in sorted(failures.items()))
    if denied:
        reason += (
            " (403 ErrorAccessDenied: an Exchange application access policy may exclude these mailboxes)"
        )
    return MailboxCensus(
        shared_mailboxes=tuple(shared), unclassified=unclassified, unclassified_reason=reason, **counts
    )


SessionFactory = Callable[[ConnectionSettings], Any]


class TenantAuditor:
    """Audits one tenant: sign in, collect, evaluate. Never raises for Graph or sign-in problems."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        session_factory: SessionFactory = open_session,
        environ: Mapping[str, str] | None = None,
        census: CensusBook | None = None,
    ) -> None:
        self.config = config
        self.session_factory = session_factory
        self.environ = environ
        # The run's stored censuses (auditor.app sets it once the history is open); None: full reads.
        self.census = census

    async def snapshot(self, tenant: TenantConfig) -> TenantSnapshot:
        label = tenant.label
        try:
            settings = connection_settings(tenant, self.environ)
        except SettingsError as exc:
            return TenantSnapshot(tenant.name, tenant.tenant_id, datetime.now(UTC), error=exc.error)
        settings = replace(settings, timeout_seconds=self.config.run.request_timeout_seconds)
        try:
            async with self.session_factory(settings) as session:
                return await TenantCollector(
                    GraphReader(session, label), tenant, self.config, self.census
                ).collect()
        except (ValueError, OSError) as exc:
            # The credential could not be built from the given material (e.g. an unreadable certificate).
            error = translate_auth_error(exc, settings.client_id, label, tenant.tenant_id)
            return TenantSnapshot(
                tenant.name, tenant.tenant_id, datetime.now(UTC), error=error.to_tenant_error()
            )

    async def __call__(self, tenant: TenantConfig) -> TenantResult:
        snapshot = await self.snapshot(tenant)
        return evaluate(snapshot, EvaluationSettings.for_tenant(self.config, tenant), datetime.now(UTC))


__all__ = [
    "GraphSession",
    "TenantAuditor",
    "TenantCollector",
    "census_from",
    "connection_settings",
    "describe_vendor_search",
    "search_vendor",
    "vendor_filters",
]
