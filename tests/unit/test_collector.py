"""TenantCollector over a small fake reader: what is read, what each section holds, what fails the tenant.

The fake answers the reads the collector makes (the GraphReader interface) with plain dicts shaped like
Graph's, and records the filters it was asked for. The same paths run over the SDK against the simulator
in tests/integration/test_audit_engine.py and test_failure_paths.py.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditor.collect import SettingsError, TenantAuditor, TenantCollector, search_vendor
from auditor.config import AuditConfig, AuthMethod, RunSettings, VendorSettings
from auditor.constants import EXCHANGE_ONLINE_APP_ID, SECURITY_READER_ROLE_ID
from auditor.errors import ErrorCode, GraphError, TenantError
from auditor.graph.reader import MailboxAnswer
from auditor.model import Collected, ExchangeAppRoles, Failed, RoleEvidence, Status, TenantSnapshot
from tests.unit.test_collect import auth, tenant

SP = "sp-1"
GROUP = "group-1"
PUBLISHER = "cccccccc-0000-0000-0000-000000000003"
MANAGE_AS_APP = "dc50a0fb-09a3-484d-be87-e023b12c6440"
EXO_SP = "exo-sp"


def vendor_sp(**extra: Any) -> dict[str, Any]:
    return {
        "id": SP,
        "appId": "vendor-app",
        "displayName": "USS AzureAD",
        "accountEnabled": True,
        "appOwnerOrganizationId": PUBLISHER,
        "servicePrincipalType": "Application",
        **extra,
    }


def assignment(principal: str = SP, scope: str = "/", id: str = "ra-1") -> dict[str, Any]:
    return {
        "id": id,
        "principalId": principal,
        "roleDefinitionId": SECURITY_READER_ROLE_ID.upper(),
        "directoryScopeId": scope,
    }


class FakeSession:
    """The session's tenant check (WRONG_TENANT) passes: these tests are about the reads after it."""

    def __init__(self) -> None:
        self.confirmed: list[dict[str, Any] | None] = []

    def confirm_tenant(self, organization: dict[str, Any] | None) -> None:
        self.confirmed.append(organization)


@dataclass
class FakeReader:
    """Graph as the collector reads it; a read named in `fail` raises that GraphError."""

    sps: list[dict[str, Any]] = field(default_factory=lambda: [vendor_sp()])
    active: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {SP: [assignment()]})
    member_of: list[dict[str, Any]] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    eligibilities: list[dict[str, Any]] = field(default_factory=list)
    app_roles: list[dict[str, Any]] = field(
        default_factory=lambda: [{"resourceId": EXO_SP, "appRoleId": MANAGE_AS_APP.upper()}]
    )
    users_list: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"id": "u1", "mail": "a@x.example", "displayName": "A"},
            {"id": "u2", "mail": None},
        ]
    )
    fail: dict[str, GraphError] = field(default_factory=dict)
    mailbox_answer: MailboxAnswer = field(default_factory=lambda: MailboxAnswer("shared"))
    calls: list[tuple[str, Any]] = field(default_factory=list)
    tenant_label: str = "Contoso (t1)"
    app_label: str = "the auditor app"
    session: FakeSession = field(default_factory=FakeSession)

    def _read(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if name in self.fail:
            raise self.fail[name]

    def asked(self, name: str) -> list[Any]:
        return [arg for called, arg in self.calls if called == name]

    async def organization(self) -> dict[str, Any]:
        self._read("organization")
        return {"id": "t1", "displayName": "Contoso"}

    async def service_principals(self, odata_filter: str, select: list[str]) -> list[dict[str, Any]]:
        self._read("service_principals", odata_filter)
        assert "appOwnerOrganizationId" in select and "servicePrincipalType" in select
        return list(self.sps)

    async def role_assignments(self, odata_filter: str) -> list[dict[str, Any]]:
        self._read("role_assignments", odata_filter)
        return [
            a for principal, items in self.active.items() if f"'{principal}'" in odata_filter for a in items
        ]

    async def transitive_member_of(self, sp_id: str) -> list[dict[str, Any]]:
        self._read("transitive_member_of", sp_id)
        return list(self.member_of)

    async def role_assignment_instances(self, odata_filter: str) -> list[dict[str, Any]]:
        self._read("role_assignment_instances", odata_filter)
        return list(self.instances)

    async def role_eligibility_instances(self, odata_filter: str) -> list[dict[str, Any]]:
        self._read("role_eligibility_instances", odata_filter)
        return list(self.eligibilities)

    async def app_role_assignments(self, sp_id: str) -> list[dict[str, Any]]:
        self._read("app_role_assignments", sp_id)
        return list(self.app_roles)

    async def service_principal_by_app_id(self, app_id: str, select: list[str]) -> dict[str, Any]:
        self._read("service_principal_by_app_id", app_id)
        assert select == ["id", "appRoles"], select  # Graph answers only the properties asked for
        return {"id": EXO_SP.upper(), "appRoles": [{"id": MANAGE_AS_APP, "value": "Exchange.ManageAsApp"}]}

    async def users(self, select: list[str]) -> list[dict[str, Any]]:
        self._read("users")
        return list(self.users_list)

    async def mailbox_purposes(self, user_ids: Any) -> dict[str, MailboxAnswer]:
        ids = list(user_ids)
        self._read("mailbox_purposes", ids)
        return {uid: self.mailbox_answer for uid in ids}


def config(vendor: VendorSettings | None = None) -> AuditConfig:
    return AuditConfig(
        path=Path("audit.toml"),
        tenants=(tenant(auth(AuthMethod.SECRET, client_secret_env="S")),),
        vendor=vendor or VendorSettings(publisher_tenant_id=PUBLISHER),
    )


async def collect(reader: FakeReader, vendor: VendorSettings | None = None) -> TenantSnapshot:
    cfg = config(vendor)
    collector = TenantCollector(reader, cfg.tenants[0], cfg)  # type: ignore[arg-type]
    return await collector.collect()


def roles_of(snapshot: TenantSnapshot) -> RoleEvidence:
    assert isinstance(snapshot.roles, Collected), snapshot.roles
    return snapshot.roles.value


async def test_a_healthy_tenant_reads_every_section() -> None:
    reader = FakeReader()
    before = datetime.now(UTC)
    snapshot = await collect(reader)
    assert snapshot.error is None
    assert before <= snapshot.collected_at <= datetime.now(UTC)  # aware, in UTC
    assert (snapshot.tenant_name, snapshot.tenant_id) == ("Contoso", "aaaaaaaa-0000-0000-0000-000000000001")
    assert isinstance(snapshot.service_principals, Collected)
    [candidate] = snapshot.service_principals.value.candidates
    assert (candidate.id, candidate.app_id, candidate.display_name, candidate.account_enabled) == (
        SP,
        "vendor-app",
        "USS AzureAD",
        True,
    )
    assert (candidate.app_owner_organization_id, candidate.service_principal_type) == (
        PUBLISHER,
        "Application",
    )
    roles = roles_of(snapshot)
    [active] = roles.active
    assert (active.id, active.principal_id, active.role_definition_id, active.directory_scope_id) == (
        "ra-1",
        SP,
        SECURITY_READER_ROLE_ID,
        "/",
    )
    assert (active.via_group_id, active.member_type, active.end_date_time) == (None, "Direct", None)
    assert roles.pim_available is True and roles.pim_error is None
    assert snapshot.exchange == Collected(ExchangeAppRoles(("Exchange.ManageAsApp",)))
    assert isinstance(snapshot.mailboxes, Collected) and snapshot.mailboxes.value.shared == 1
    assert reader.asked("mailbox_purposes") == [["u1"]], "only users with a mail address are asked"
    assert reader.asked("role_assignments") == [f"principalId eq '{SP}'"]
    assert reader.asked("service_principal_by_app_id") == [EXCHANGE_ONLINE_APP_ID]
    # with the publisher set, its own apps are searched for too (issue 10)
    assert reader.asked("service_principals") == [
        "displayName eq 'USS AzureAD'",
        f"appOwnerOrganizationId eq '{PUBLISHER}'",
    ]


async def test_a_pinned_app_id_is_searched_too_and_found_once() -> None:
    reader = FakeReader()
    snapshot = await collect(reader, VendorSettings(app_id="vendor-app", app_display_name="O'Brien app"))
    assert reader.asked("service_principals") == ["appId eq 'vendor-app'", "displayName eq 'O''Brien app'"]
    assert isinstance(snapshot.service_principals, Collected)
    assert len(snapshot.service_principals.value.candidates) == 1


async def test_search_without_a_display_name_only_searches_by_app_id() -> None:
    reader = FakeReader(sps=[{"id": SP, "appId": None, "displayName": None}])  # a sparse answer
    found = await search_vendor(reader, VendorSettings(app_id="vendor-app", app_display_name=""))
    assert reader.asked("service_principals") == ["appId eq 'vendor-app'"]
    [sp] = found.candidates
    assert (sp.app_id, sp.display_name, sp.account_enabled) == ("", "", True)


async def test_the_kind_of_service_principal_is_kept_as_graph_gives_it() -> None:
    found = await search_vendor(
        FakeReader(sps=[vendor_sp(servicePrincipalType="ManagedIdentity")]),
        VendorSettings(app_id="vendor-app"),
    )
    assert [sp.service_principal_type for sp in found.candidates] == ["ManagedIdentity"]


async def test_a_disabled_sp_is_read_as_disabled() -> None:
    snapshot = await collect(FakeReader(sps=[vendor_sp(accountEnabled=False)]))
    assert isinstance(snapshot.service_principals, Collected)
    assert snapshot.service_principals.value.candidates[0].account_enabled is False


async def test_no_vendor_sp_means_no_role_or_exchange_reads() -> None:
    reader = FakeReader(sps=[])
    snapshot = await collect(reader)
    assert snapshot.roles is None and snapshot.exchange is None
    assert reader.asked("role_assignments") == [] and reader.asked("app_role_assignments") == []
    assert isinstance(snapshot.mailboxes, Collected), "the census is still taken"


async def test_without_the_exchange_check_exchange_is_not_read() -> None:
    reader = FakeReader()
    snapshot = await collect(reader, VendorSettings(publisher_tenant_id=PUBLISHER, exchange_app_role=""))
    assert snapshot.exchange is None and reader.asked("app_role_assignments") == []
    assert isinstance(snapshot.roles, Collected)


async def test_exchange_roles_of_other_resources_are_ignored_and_unknown_ids_kept() -> None:
    reader = FakeReader(
        app_roles=[
            {"resourceId": "graph-sp", "appRoleId": "bbbb"},  # another API's role, first in the list
            {"resourceId": EXO_SP, "appRoleId": MANAGE_AS_APP},
            {"resourceId": EXO_SP, "appRoleId": "AAAA-unknown"},
        ]
    )
    snapshot = await collect(reader)
    assert isinstance(snapshot.exchange, Collected)
    assert snapshot.exchange.value.role_values == ("Exchange.ManageAsApp",)
    assert snapshot.exchange.value.unresolved_role_ids == ("aaaa-unknown",)


async def test_no_app_role_assignments_needs_no_exchange_lookup() -> None:
    reader = FakeReader(app_roles=[])
    snapshot = await collect(reader)
    assert isinstance(snapshot.exchange, Collected) and snapshot.exchange.value.role_values == ()
    assert reader.asked("service_principal_by_app_id") == []


async def test_roles_held_through_role_assignable_groups() -> None:
    reader = FakeReader(
        active={GROUP: [assignment(principal=GROUP, id="ra-g")]},
        member_of=[
            {
                "@odata.type": "#microsoft.graph.group",
                "id": GROUP,
                "displayName": "Readers",
                "isAssignableToRole": True,
            },
            {
                "@odata.type": "#microsoft.graph.group",
                "id": "plain",
                "displayName": None,
                "isAssignableToRole": False,
            },
            {"@odata.type": "#microsoft.graph.directoryRole", "id": "role-x"},
        ],
        eligibilities=[{"id": "e1", **assignment(principal=GROUP, id="e1")}],
    )
    roles = roles_of(await collect(reader))
    assert [(g.id, g.display_name, g.is_assignable_to_role) for g in roles.groups] == [
        (GROUP, "Readers", True),
        ("plain", "", False),  # no invented name: the report falls back to the id (test_evaluate_edges)
    ]
    [held] = roles.active
    assert (held.id, held.principal_id, held.via_group_id, held.member_type) == (
        "ra-g",
        GROUP,
        GROUP,
        "Group",
    )
    # the SP and every group it is in, in one filter (issue 10)
    assert reader.asked("role_assignments") == [f"principalId in ('{SP}', '{GROUP}', 'plain')"]
    # PIM instances by role (principalId supports only eq there), kept for the SP and its groups in code
    assert reader.asked("role_assignment_instances") == [f"roleDefinitionId eq '{SECURITY_READER_ROLE_ID}'"]
    [eligible] = roles.eligible
    assert eligible.via_group_id == GROUP
    assert reader.asked("role_eligibility_instances") == [f"roleDefinitionId eq '{SECURITY_READER_ROLE_ID}'"]


async def test_a_group_read_without_group_permission_is_kept_with_what_is_unknown() -> None:
    # A limited-information object: only its type and id (no GroupMember.Read.All).
    reader = FakeReader(member_of=[{"@odata.type": "#microsoft.graph.group", "id": "g-limited"}])
    roles = roles_of(await collect(reader))
    assert [(g.id, g.display_name, g.is_assignable_to_role) for g in roles.groups] == [
        ("g-limited", "", None)
    ]


async def test_ids_with_a_quote_are_escaped_in_the_filters() -> None:
    reader = FakeReader(member_of=[{"@odata.type": "#microsoft.graph.group", "id": "o'brien"}])
    await collect(reader)
    assert reader.asked("role_assignments") == [f"principalId in ('{SP}', 'o''brien')"]
    alone = FakeReader(sps=[vendor_sp(id="sp'1")])
    await collect(alone)
    assert alone.asked("role_assignments") == ["principalId eq 'sp''1'"]


async def test_pim_instances_give_end_dates_to_active_assignments() -> None:
    reader = FakeReader(
        active={
            SP: [
                assignment(id="ra-1"),
                assignment(id="ra-2", scope="/administrativeUnits/x"),
                assignment(id="ra-3"),
            ]
        },
        instances=[
            {
                "id": "inst-1",
                "principalId": SP,
                "roleAssignmentOriginId": "ra-1",
                "endDateTime": "2030-01-02T03:04:05Z",
            },
            # the same role held by someone else: read (the filter is by role), never applied to ours
            {
                "id": "inst-x",
                "principalId": "someone-else",
                "roleAssignmentOriginId": "ra-1",
                "endDateTime": "2029-01-01T00:00:00Z",
            },
            {"id": "ra-2", "principalId": SP, "endDateTime": "not a time"},
            # an instance without its origin id is the assignment itself
            {"id": "ra-3", "principalId": SP, "endDateTime": "2032-03-04T00:00:00Z"},
        ],
        eligibilities=[
            {**assignment(id="e1"), "endDateTime": "2031-05-06T00:00:00Z", "memberType": "Direct"}
        ],
    )
    roles = roles_of(await collect(reader))
    by_id = {a.id: a for a in roles.active}
    assert by_id["ra-1"].end_date_time == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert by_id["ra-2"].end_date_time is None
    assert by_id["ra-3"].end_date_time == datetime(2032, 3, 4, tzinfo=UTC)
    [eligible] = roles.eligible
    assert eligible.end_date_time == datetime(2031, 5, 6, tzinfo=UTC) and eligible.via_group_id is None


async def test_no_p2_licence_means_pim_unavailable_not_an_error() -> None:
    no_p2 = GraphError("Graph answered 400 AadPremiumLicenseRequired: ...", status=400)
    roles = roles_of(await collect(FakeReader(fail={"role_assignment_instances": no_p2})))
    assert roles.pim_available is False and roles.pim_error is None
    assert len(roles.active) == 1 and roles.eligible == ()


@pytest.mark.parametrize(
    "failure",
    [
        GraphError("Graph answered 403 ...", code=ErrorCode.PERMISSION_DENIED, status=403, hint="grant it"),
        GraphError("Graph answered 400 BadRequest", status=400),
    ],
)
async def test_other_pim_failures_are_kept_beside_the_active_assignments(failure: GraphError) -> None:
    roles = roles_of(await collect(FakeReader(fail={"role_eligibility_instances": failure})))
    assert roles.pim_available is None, "PIM is only available when both of its reads worked"
    assert roles.pim_error is not None and roles.pim_error.code is failure.code
    assert len(roles.active) == 1


async def test_a_failed_section_keeps_its_error_and_the_others_are_still_read() -> None:
    denied = GraphError("403 on users", code=ErrorCode.PERMISSION_DENIED, status=403, request_id="req-9")
    snapshot = await collect(FakeReader(fail={"users": denied}))
    assert snapshot.error is None
    assert isinstance(snapshot.mailboxes, Failed)
    assert snapshot.mailboxes.error.code is ErrorCode.PERMISSION_DENIED
    assert snapshot.mailboxes.error.message == "403 on users (request-id req-9)"
    assert isinstance(snapshot.roles, Collected) and isinstance(snapshot.exchange, Collected)


async def test_a_census_where_every_mailbox_is_denied_names_the_tenant_and_the_app() -> None:
    denied = MailboxAnswer(None, failure="403 ErrorAccessDenied", status=403)
    snapshot = await collect(FakeReader(mailbox_answer=denied))
    assert isinstance(snapshot.mailboxes, Failed)
    error = snapshot.mailboxes.error
    assert error.code is ErrorCode.PERMISSION_DENIED
    assert error.message == (
        "Every mailbox in tenant Contoso (t1) answered 403 ErrorAccessDenied; needs MailboxSettings.Read"
    )
    assert error.hint == (
        "Grant the Microsoft Graph application permission MailboxSettings.Read to the auditor app and have an "
        "administrator of tenant Contoso (t1) grant admin consent, then re-run."
    )


@pytest.mark.parametrize(
    "section", ["role_assignments", "app_role_assignments", "users", "service_principals"]
)
async def test_a_sign_in_failure_in_any_section_fails_the_tenant(section: str) -> None:
    refused = GraphError("Sign-in failed", code=ErrorCode.AUTH_FAILED)
    snapshot = await collect(FakeReader(fail={section: refused}))
    assert snapshot.error is not None and snapshot.error.code is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize("code", [ErrorCode.AUTH_FAILED, ErrorCode.NETWORK_ERROR, ErrorCode.TIMEOUT])
async def test_no_first_answer_fails_the_tenant_before_anything_else_is_read(code: ErrorCode) -> None:
    reader = FakeReader(fail={"organization": GraphError("no", code=code)})
    snapshot = await collect(reader)
    assert snapshot.error is not None and snapshot.error.code is code
    assert [name for name, _ in reader.calls] == ["organization"]
    assert snapshot.service_principals is None
    assert (snapshot.tenant_name, snapshot.tenant_id) == ("Contoso", "aaaaaaaa-0000-0000-0000-000000000001")
    assert snapshot.collected_at.utcoffset() == timedelta(0)


async def test_an_unreadable_organization_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    denied = GraphError("403", code=ErrorCode.PERMISSION_DENIED, status=403)
    snapshot = await collect(FakeReader(fail={"organization": denied}))
    assert snapshot.error is None and isinstance(snapshot.roles, Collected)
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "organization_unreadable"]
    assert record.levelname == "WARNING"
    assert (
        record.getMessage()
        == "Contoso: organization not readable (PERMISSION_DENIED); using the configured name"
    )
    assert getattr(record, "tenant_id", None) == "aaaaaaaa-0000-0000-0000-000000000001"
    assert getattr(record, "tenant", None) == "Contoso"


class WrongTenantSession(FakeSession):
    """The token names another tenant than the configured one."""

    def confirm_tenant(self, organization: dict[str, Any] | None) -> None:
        raise GraphError("The token is for tenant t2, not t1", code=ErrorCode.WRONG_TENANT)


async def test_a_token_for_another_tenant_fails_the_tenant_before_any_section_is_read() -> None:
    reader = FakeReader(session=WrongTenantSession())
    before = datetime.now(UTC)
    snapshot = await collect(reader)
    assert snapshot.error is not None and snapshot.error.code is ErrorCode.WRONG_TENANT
    assert (snapshot.tenant_name, snapshot.tenant_id) == ("Contoso", "aaaaaaaa-0000-0000-0000-000000000001")
    assert before <= snapshot.collected_at <= datetime.now(UTC)
    assert [name for name, _ in reader.calls] == ["organization"]
    assert snapshot.service_principals is None and snapshot.mailboxes is None


async def test_the_tenant_check_gets_the_organization_or_nothing_when_it_was_unreadable() -> None:
    reader = FakeReader()
    await collect(reader)
    assert reader.session.confirmed == [{"id": "t1", "displayName": "Contoso"}]
    denied = FakeReader(
        fail={"organization": GraphError("403", code=ErrorCode.PERMISSION_DENIED, status=403)}
    )
    await collect(denied)
    assert denied.session.confirmed == [None]


async def test_sparse_assignment_items_are_kept_without_invented_values() -> None:
    reader = FakeReader(
        active={SP: [{"principalId": SP}]},
        eligibilities=[{"principalId": SP, "memberType": "Inherited"}, {"id": "e2", "principalId": SP}],
    )
    roles = roles_of(await collect(reader))
    [active] = roles.active
    assert (active.id, active.role_definition_id, active.directory_scope_id) == ("", "", "")
    assert active.member_type == "Direct"
    inherited, plain = roles.eligible
    assert inherited.member_type == "Inherited" and plain.member_type == "Direct"
    nobody = roles_of(await collect(FakeReader(active={SP: [{"id": "x"}]}))).active[0]
    assert nobody.principal_id == ""


def test_a_settings_error_reads_as_its_message() -> None:
    error = SettingsError(TenantError(ErrorCode.CONFIG_ERROR, "Contoso: variable S is not set", "Set S"))
    assert str(error) == "Contoso: variable S is not set"


# --- TenantAuditor: a tenant that cannot even be signed in to ---------------------------------------


async def test_an_unset_secret_is_a_config_error_for_that_tenant_only() -> None:
    cfg = config()
    before = datetime.now(UTC)
    snapshot = await TenantAuditor(cfg, environ={}).snapshot(cfg.tenants[0])
    assert before <= snapshot.collected_at <= datetime.now(UTC)  # aware, in UTC
    assert snapshot.error is not None and snapshot.error.code is ErrorCode.CONFIG_ERROR
    assert "environment variable S" in snapshot.error.message
    assert (snapshot.tenant_name, snapshot.tenant_id) == ("Contoso", cfg.tenants[0].tenant_id)
    assert snapshot.service_principals is None


async def test_credential_material_that_cannot_be_used_is_a_sign_in_failure() -> None:
    cfg = config()
    seen: list[str] = []

    @asynccontextmanager
    async def unusable(settings: Any) -> Any:
        seen.append(settings.client_secret)
        raise ValueError("Could not deserialize key data")
        yield

    auditor = TenantAuditor(cfg, session_factory=unusable, environ={"S": "secret-value-9"})
    before = datetime.now(UTC)
    snapshot = await auditor.snapshot(cfg.tenants[0])
    assert before <= snapshot.collected_at <= datetime.now(UTC)  # aware, in UTC
    result = await auditor(cfg.tenants[0])
    assert seen == ["secret-value-9", "secret-value-9"]
    assert result.status is Status.ERROR
    assert result.error is not None and result.error.code is ErrorCode.AUTH_FAILED
    assert (
        result.error.message
        == f"Sign-in to tenant {cfg.tenants[0].label} failed: Could not deserialize key data"
    )
    assert result.name == "Contoso" and result.tenant_id == cfg.tenants[0].tenant_id


async def test_the_session_gets_the_request_time_out_and_sign_in_failures_name_app_and_tenant() -> None:
    cfg = replace(config(), run=RunSettings(request_timeout_seconds=7.5))
    seen: list[float] = []

    @asynccontextmanager
    async def refused(settings: Any) -> Any:
        seen.append(settings.timeout_seconds)
        raise ValueError("AADSTS700016: Application with identifier was not found in the directory.")
        yield

    tenant_config = cfg.tenants[0]
    snapshot = await TenantAuditor(cfg, session_factory=refused, environ={"S": "secret-value-9"}).snapshot(
        tenant_config
    )
    assert seen == [7.5]
    assert snapshot.error is not None and snapshot.error.code is ErrorCode.AUTH_FAILED
    client = tenant_config.auth.client_id
    assert snapshot.error.hint == (
        f"App {client} is not known in tenant {tenant_config.label}: an administrator of that tenant must grant "
        f"admin consent to it (https://login.microsoftonline.com/{tenant_config.tenant_id}/adminconsent?client_id="
        f"{client}), or client_id/tenant_id in the config are wrong."
    )
