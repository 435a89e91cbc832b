"""The simulator's Graph routes, driven by the real msgraph request builders over HTTPS.

Every test signs in with real azure-identity async credentials (secret or certificate) and calls the
simulator through a real `GraphServiceClient`; assertions are on what the demo fleet
(config/demo-fleet.toml) says each tenant holds, and on Graph's own shapes and error envelopes
(/work/shared/graph-api-notes.md §2, §3.1-3.8, §3.12, §3.13, §4.b, §4.c).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph import GraphServiceClient
from msgraph.generated.directory_roles.directory_roles_request_builder import DirectoryRolesRequestBuilder
from msgraph.generated.models.directory_role import DirectoryRole
from msgraph.generated.models.group import Group
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.service_principal import ServicePrincipal
from msgraph.generated.models.unified_role_assignment import UnifiedRoleAssignment
from msgraph.generated.models.user_purpose import UserPurpose
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
from msgraph.generated.service_principals_with_app_id.service_principals_with_app_id_request_builder import (
    ServicePrincipalsWithAppIdRequestBuilder,
)
from msgraph.generated.users.item.mailbox_settings.mailbox_settings_request_builder import (
    MailboxSettingsRequestBuilder,
)
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from auditor.graph.client import send_for_bytes
from auditor.simulator import GraphSimulator
from auditor.simulator.world import TenantState
from tests.conftest import DEMO_TENANTS, graph_session

SECURITY_READER = "5d6b6bb7-de71-4623-b4af-96380a352509"
VENDOR_APP_ID = "7e1b3f0c-2d54-4c8e-9a61-5f0c3b2a9d17"
VENDOR_LEGACY_APP_ID = "0b7d4c8e-1f3a-4e6b-9d2c-5a8f7e6d4c31"
VENDOR_PUBLISHER = "c0ffee00-5ca1-4ab1-9e55-00000000c0de"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
MANAGE_AS_APP = "dc50a0fb-09a3-484d-be87-e023b12c6440"
USER_DEFAULT_PROPERTIES = {
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
}
SP_SELECT = ["id", "appId", "displayName", "accountEnabled", "appOwnerOrganizationId", "servicePrincipalType"]
CAMEL = re.compile(r"^(?:@odata\.(?:context|nextLink|count|type)|[a-z][A-Za-z0-9]*)$")


# --- helpers ---------------------------------------------------------------------------------------


def tenant_state(sim: GraphSimulator, key: str) -> TenantState:
    tenant = sim.world.tenant(DEMO_TENANTS[key])
    assert tenant is not None, key
    return tenant


def sp_id(sim: GraphSimulator, key: str, app_id: str = VENDOR_APP_ID) -> str:
    sp = tenant_state(sim, key).sp_by_app_id(app_id)
    assert sp is not None, (key, app_id)
    return str(sp["id"])


def metadata(sim: GraphSimulator) -> str:
    return f"{sim.graph_url}/v1.0/$metadata#"


def rc(query: Any = None, *, eventual: bool = False) -> RequestConfiguration[Any]:
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
    if eventual:
        config.headers.add("ConsistencyLevel", "eventual")
    return config


def sp_query(**kwargs: Any) -> Any:
    return ServicePrincipalsRequestBuilder.ServicePrincipalsRequestBuilderGetQueryParameters(**kwargs)


def ra_query(**kwargs: Any) -> Any:
    return RoleAssignmentsRequestBuilder.RoleAssignmentsRequestBuilderGetQueryParameters(**kwargs)


def user_query(**kwargs: Any) -> Any:
    return UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(**kwargs)


def raw_request(
    client: GraphServiceClient,
    path: str,
    *,
    method: Method = Method.GET,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> RequestInformation:
    """A request the builders cannot express (or whose raw JSON we want to see)."""
    ri = RequestInformation()
    ri.http_method = method
    ri.url = path if "://" in path else str(client.request_adapter.base_url).rstrip("/") + path
    ri.headers.try_add("Accept", "application/json")
    for name, value in (headers or {}).items():
        ri.headers.add(name, value)
    if body is not None:
        ri.headers.try_add("Content-Type", "application/json")
        ri.content = json.dumps(body).encode()
    return ri


async def raw_json(client: GraphServiceClient, path: str, **kwargs: Any) -> Any:
    raw = await send_for_bytes(client, raw_request(client, path, **kwargs))
    assert isinstance(raw, bytes)
    return json.loads(raw)


def check_error(exc: BaseException, status: int, code: str) -> ODataError:
    """Graph's error envelope: status, error.code, innerError with request-id and date."""
    assert isinstance(exc, ODataError), repr(exc)
    assert exc.response_status_code == status, (exc.response_status_code, exc.error and exc.error.code)
    assert exc.error is not None
    assert exc.error.code == code, exc.error.message
    assert exc.error.message
    assert exc.error.inner_error is not None
    assert exc.error.inner_error.request_id
    assert exc.error.inner_error.client_request_id
    assert exc.error.inner_error.date is not None
    headers = {k.lower(): v for k, v in (exc.response_headers or {}).items()}
    assert headers.get("request-id") == exc.error.inner_error.request_id
    return exc


async def error_of(call: Any) -> tuple[int, str] | str:
    """Await a call expected to fail: (status, error.code) after checking the envelope, or what it did."""
    try:
        result = await call
    except ODataError as exc:
        assert exc.error is not None and exc.response_status_code is not None
        check_error(exc, exc.response_status_code, exc.error.code or "")
        return exc.response_status_code, exc.error.code or ""
    return f"succeeded: {str(result)[:120]}"


def walk_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_keys(item)


# --- organization (§3.13), both credential kinds --------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "method", "name", "domain"),
    [
        ("contoso", "secret", "Contoso Healthcare", "contoso-health.example"),
        ("contoso", "certificate", "Contoso Healthcare", "contoso-health.example"),
        ("trey", "certificate", "Trey Research", "treyresearch.example"),
        ("fourthcoffee", "secret", "Fourth Coffee", "fourthcoffee.example"),
    ],
)
async def test_organization_is_a_one_item_collection_labelled_by_the_tenant(
    sim: GraphSimulator, tenant: str, method: str, name: str, domain: str
) -> None:
    async with graph_session(sim, tenant, method=method) as session:
        org = await session.client.organization.get()
    assert org is not None and org.value is not None
    assert len(org.value) == 1
    (item,) = org.value
    assert item.id == DEMO_TENANTS[tenant]
    assert item.display_name == name
    domains = {d.name: d for d in item.verified_domains or []}
    assert domains[domain].is_default is True
    initial = [d for d in domains.values() if d.is_initial]
    assert len(initial) == 1 and (initial[0].name or "").endswith(".onmicrosoft.com")
    assert org.odata_next_link is None
    assert sim.count(route="organization.list", tenant=DEMO_TENANTS[tenant], status=200) == 1


# --- service principals (§3.1) ---------------------------------------------------------------------


async def test_contoso_service_principals_include_vendor_and_exchange(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        page = await session.client.service_principals.get()
    assert page is not None and page.value is not None
    by_name = {sp.display_name: sp for sp in page.value}
    assert {"USS AzureAD", "Office 365 Exchange Online", "Microsoft Graph"} <= set(by_name)
    vendor = by_name["USS AzureAD"]
    assert vendor.app_id == VENDOR_APP_ID
    assert str(vendor.app_owner_organization_id) == VENDOR_PUBLISHER
    assert vendor.account_enabled is True
    assert vendor.service_principal_type == "Application"
    assert vendor.id == sp_id(sim, "contoso")
    assert by_name["Office 365 Exchange Online"].app_id == EXCHANGE_APP_ID
    assert page.odata_next_link is None


SP_FILTERS = [
    # (tenant, $filter, expected (displayName, appId) pairs)
    ("contoso", "displayName eq 'USS AzureAD'", {("USS AzureAD", VENDOR_APP_ID)}),
    ("contoso", "displayName eq 'uss azuread'", {("USS AzureAD", VENDOR_APP_ID)}),  # case-insensitive
    ("contoso", f"appId eq '{VENDOR_APP_ID}'", {("USS AzureAD", VENDOR_APP_ID)}),
    ("contoso", f"appId eq '{VENDOR_APP_ID.upper()}'", {("USS AzureAD", VENDOR_APP_ID)}),
    (
        "contoso",
        f"appId in ('{VENDOR_APP_ID}', '{EXCHANGE_APP_ID}')",
        {("USS AzureAD", VENDOR_APP_ID), ("Office 365 Exchange Online", EXCHANGE_APP_ID)},
    ),
    ("contoso", "startsWith(displayName, 'office 365')", {("Office 365 Exchange Online", EXCHANGE_APP_ID)}),
    ("contoso", "displayName in ('Microsoft Graph', 'Nobody')", {("Microsoft Graph", GRAPH_APP_ID)}),
    ("margies", "displayName eq 'USS AzureAD'", set()),  # never connected: empty value, not 404
    ("coho", "displayName eq 'USS AzureAD' and accountEnabled eq false", {("USS AzureAD", VENDOR_APP_ID)}),
    ("contoso", "displayName eq 'USS AzureAD' and accountEnabled eq false", set()),
    # the look-alike is registered in the customer's own tenant: only the publisher filter tells them apart
    (
        "litware",
        f"appOwnerOrganizationId eq {VENDOR_PUBLISHER} and displayName eq 'USS AzureAD'",
        {("USS AzureAD", VENDOR_APP_ID)},
    ),
    (
        "proseware",
        f"appOwnerOrganizationId eq {VENDOR_PUBLISHER}",
        {("USS AzureAD", VENDOR_APP_ID), ("USS AzureAD", VENDOR_LEGACY_APP_ID)},
    ),
    ("proseware", f"appId eq '{VENDOR_LEGACY_APP_ID}'", {("USS AzureAD", VENDOR_LEGACY_APP_ID)}),
]


@pytest.mark.parametrize("tenant", sorted({row[0] for row in SP_FILTERS}))
async def test_service_principal_filters(sim: GraphSimulator, tenant: str) -> None:
    rows = [(filter_, expected) for key, filter_, expected in SP_FILTERS if key == tenant]
    found: dict[str, Any] = {}
    async with graph_session(sim, tenant) as session:
        for filter_, _ in rows:
            query = sp_query(filter=filter_, select=SP_SELECT, top=999)
            try:
                page = await session.client.service_principals.get(request_configuration=rc(query))
            except ODataError as exc:
                found[filter_] = f"{exc.response_status_code} {exc.error and exc.error.code}"
                continue
            assert page is not None and page.value is not None
            assert all(sp.id for sp in page.value)
            found[filter_] = {(sp.display_name, sp.app_id) for sp in page.value}
            assert len(page.value) == len(found[filter_])
    assert found == dict(rows)


async def test_litware_lookalike_has_the_vendors_name_but_not_its_publisher(sim: GraphSimulator) -> None:
    query = sp_query(filter="displayName eq 'USS AzureAD'", select=["id", "appId", "appOwnerOrganizationId"])
    async with graph_session(sim, "litware") as session:
        page = await session.client.service_principals.get(request_configuration=rc(query))
    assert page is not None and page.value is not None
    owners = Counter(str(sp.app_owner_organization_id) for sp in page.value)
    assert owners == Counter({VENDOR_PUBLISHER: 1, DEMO_TENANTS["litware"]: 1})


async def test_service_principal_by_app_id_alternate_key(sim: GraphSimulator) -> None:
    query = (
        ServicePrincipalsWithAppIdRequestBuilder.ServicePrincipalsWithAppIdRequestBuilderGetQueryParameters(
            select=["id", "appId", "displayName", "appRoles"]
        )
    )
    async with graph_session(sim, "contoso", method="certificate") as session:
        client = session.client
        vendor = await client.service_principals_with_app_id(VENDOR_APP_ID).get()
        exchange = await client.service_principals_with_app_id(EXCHANGE_APP_ID).get(
            request_configuration=rc(query)
        )
        with pytest.raises(ODataError) as missing:
            await client.service_principals_with_app_id("00000000-1111-2222-3333-444444444444").get()
    assert isinstance(vendor, ServicePrincipal)
    assert vendor.id == sp_id(sim, "contoso") and vendor.display_name == "USS AzureAD"
    assert exchange is not None and exchange.display_name == "Office 365 Exchange Online"
    roles = {role.value: str(role.id) for role in exchange.app_roles or []}
    assert roles["Exchange.ManageAsApp"] == MANAGE_AS_APP
    check_error(missing.value, 404, "Request_ResourceNotFound")


async def test_advanced_operator_needs_consistency_level_and_count(sim: GraphSimulator) -> None:
    filter_ = "displayName ne 'USS AzureAD'"
    async with graph_session(sim, "contoso") as session:
        builder = session.client.service_principals
        for count, eventual in [(None, False), (True, False), (None, True)]:
            with pytest.raises(ODataError) as refused:
                await builder.get(
                    request_configuration=rc(sp_query(filter=filter_, count=count), eventual=eventual)
                )
            check_error(refused.value, 400, "Request_UnsupportedQuery")
            assert "ConsistencyLevel" in (refused.value.error.message or "")  # type: ignore[union-attr]
        page = await builder.get(
            request_configuration=rc(sp_query(filter=filter_, count=True), eventual=True)
        )
    assert page is not None and page.value is not None
    names = {sp.display_name for sp in page.value}
    assert names == {"Office 365 Exchange Online", "Microsoft Graph"}
    assert page.odata_count == 2
    assert sim.count(route="servicePrincipals.list", status=400) == 3
    assert sim.count(route="servicePrincipals.list", status=200) == 1


async def test_count_is_only_returned_with_consistency_level(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        builder = session.client.service_principals
        plain = await builder.get(request_configuration=rc(sp_query(count=True)))
        counted = await builder.get(request_configuration=rc(sp_query(count=True), eventual=True))
        header_only = await builder.get(request_configuration=rc(sp_query(), eventual=True))
    assert plain is not None and counted is not None and header_only is not None
    assert plain.odata_count is None  # $count=true without the header is silently ignored
    assert header_only.odata_count is None
    assert counted.odata_count == len(tenant_state(sim, "contoso").service_principals) == 3


BAD_FILTERS = [
    ("/servicePrincipals?$filter=shoeSize eq 'x'", 400, "Request_BadRequest"),  # no such property
    ("/servicePrincipals?$filter=appId ge 'a'", 400, "Request_UnsupportedQuery"),  # not that operator
    ("/servicePrincipals?$filter=displayName eq", 400, "BadRequest"),  # syntax error
    ("/servicePrincipals?$filter=displayName eq 'x' or", 400, "BadRequest"),
    ("/users?$filter=shoeSize eq 42", 400, "Request_BadRequest"),
    ("/users?$filter=accountEnabled ne true", 400, "Request_UnsupportedQuery"),  # advanced, no header
    ("/roleManagement/directory/roleAssignments?$filter=principalId ne 'x'", 400, "Request_UnsupportedQuery"),
    ("/roleManagement/directory/roleAssignments?$filter=colour eq 'x'", 400, "Request_BadRequest"),
]


async def test_unsupported_filters_are_400(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        found = {path: await error_of(raw_json(session.client, path)) for path, _, _ in BAD_FILTERS}
    assert found == {path: (status, code) for path, status, code in BAD_FILTERS}


# --- role assignments (§3.2) -----------------------------------------------------------------------


async def test_role_assignment_filter_by_principal_and_role(sim: GraphSimulator) -> None:
    vendor = sp_id(sim, "contoso")
    query = ra_query(filter=f"principalId eq '{vendor}' and roleDefinitionId eq '{SECURITY_READER}'")
    async with graph_session(sim, "contoso") as session:
        page = await session.client.role_management.directory.role_assignments.get(
            request_configuration=rc(query)
        )
    assert page is not None and page.value is not None
    (assignment,) = page.value
    assert assignment.principal_id == vendor
    assert assignment.role_definition_id == SECURITY_READER
    assert assignment.directory_scope_id == "/"
    assert assignment.id and assignment.id.endswith("-1")


async def test_role_assignment_filter_with_in_finds_the_group_based_assignment(sim: GraphSimulator) -> None:
    woodgrove = tenant_state(sim, "woodgrove")
    vendor = sp_id(sim, "woodgrove")
    group = woodgrove.groups[0]["id"]
    query = ra_query(filter=f"principalId in ('{vendor}', '{group}')")
    async with graph_session(sim, "woodgrove") as session:
        builder = session.client.role_management.directory.role_assignments
        both = await builder.get(request_configuration=rc(query))
        direct = await builder.get(request_configuration=rc(ra_query(filter=f"principalId eq '{vendor}'")))
    assert both is not None and both.value is not None and direct is not None
    assert [(a.principal_id, a.role_definition_id, a.directory_scope_id) for a in both.value] == [
        (group, SECURITY_READER, "/")
    ]
    assert direct.value == []  # held only through the role-assignable group


@pytest.mark.parametrize(
    ("tenant", "scopes"),
    [
        ("contoso", ["/"]),
        ("northwind", ["/administrativeUnits/"]),  # scoped to an administrative unit
        ("tailspin", ["/"]),  # active (time-bound, see the schedule instances)
        ("adatum", []),  # eligible only: not an active assignment
        ("litware", []),  # the look-alike holds it, not the vendor
        ("lucerne", []),
        ("alpine", ["/"]),
    ],
)
async def test_vendor_role_assignments_per_tenant(
    sim: GraphSimulator, tenant: str, scopes: list[str]
) -> None:
    vendor = sp_id(sim, tenant)
    query = ra_query(filter=f"principalId eq '{vendor}'")
    async with graph_session(sim, tenant) as session:
        page = await session.client.role_management.directory.role_assignments.get(
            request_configuration=rc(query)
        )
    assert page is not None and page.value is not None
    assert len(page.value) == len(scopes)
    for assignment, scope in zip(page.value, scopes, strict=True):
        assert assignment.principal_id == vendor
        assert assignment.role_definition_id == SECURITY_READER
        if scope == "/":
            assert assignment.directory_scope_id == "/"
        else:
            assert (assignment.directory_scope_id or "").startswith(scope)
            assert len(assignment.directory_scope_id or "") > len(scope)


async def test_northwind_scope_filter_excludes_the_administrative_unit(sim: GraphSimulator) -> None:
    vendor = sp_id(sim, "northwind")
    tenant_wide = ra_query(
        filter=f"principalId eq '{vendor}' and roleDefinitionId eq '{SECURITY_READER}' "
        "and directoryScopeId eq '/'"
    )
    async with graph_session(sim, "northwind") as session:
        page = await session.client.role_management.directory.role_assignments.get(
            request_configuration=rc(tenant_wide)
        )
    assert page is not None and page.value == []


async def test_litware_security_reader_is_held_by_the_lookalike(sim: GraphSimulator) -> None:
    litware = tenant_state(sim, "litware")
    lookalike = next(
        sp["id"] for sp in litware.service_principals if sp["appOwnerOrganizationId"] == litware.tenant_id
    )
    query = ra_query(filter=f"roleDefinitionId eq '{SECURITY_READER}'")
    async with graph_session(sim, "litware") as session:
        page = await session.client.role_management.directory.role_assignments.get(
            request_configuration=rc(query)
        )
    assert page is not None and page.value is not None
    assert [a.principal_id for a in page.value] == [lookalike]


async def test_role_assignments_expand_role_definition_and_principal(sim: GraphSimulator) -> None:
    """§3.2 / §4.b: `$expand=roleDefinition` and `$expand=principal` are supported on this list."""
    vendor = sp_id(sim, "contoso")
    async with graph_session(sim, "contoso") as session:
        builder = session.client.role_management.directory.role_assignments
        with_definition = await builder.get(
            request_configuration=rc(ra_query(filter=f"principalId eq '{vendor}'", expand=["roleDefinition"]))
        )
        with_principal = await builder.get(
            request_configuration=rc(ra_query(filter=f"principalId eq '{vendor}'", expand=["principal"]))
        )
    assert with_definition is not None and with_definition.value is not None
    (assignment,) = with_definition.value
    assert assignment.role_definition is not None
    assert assignment.role_definition.id == SECURITY_READER
    assert assignment.role_definition.display_name == "Security Reader"
    assert with_principal is not None and with_principal.value is not None
    (assignment,) = with_principal.value
    assert assignment.principal is not None and assignment.principal.id == vendor
    assert assignment.principal.odata_type == "#microsoft.graph.servicePrincipal"


# --- PIM (§3.4) --------------------------------------------------------------------------------------


async def test_adatum_eligibility_instance(sim: GraphSimulator) -> None:
    vendor = sp_id(sim, "adatum")
    query = RoleEligibilityScheduleInstancesRequestBuilder.RoleEligibilityScheduleInstancesRequestBuilderGetQueryParameters(
        filter=f"principalId eq '{vendor}' and roleDefinitionId eq '{SECURITY_READER}'"
    )
    async with graph_session(sim, "adatum") as session:
        directory = session.client.role_management.directory
        eligible = await directory.role_eligibility_schedule_instances.get(request_configuration=rc(query))
        active = await directory.role_assignment_schedule_instances.get()
    assert eligible is not None and eligible.value is not None
    (instance,) = eligible.value
    assert instance.principal_id == vendor
    assert instance.directory_scope_id == "/"
    assert instance.member_type == "Direct"
    assert instance.role_eligibility_schedule_id
    assert instance.end_date_time is not None
    days_left = (instance.end_date_time - dt.datetime.now(dt.UTC)).days
    assert 178 <= days_left <= 180
    assert active is not None and active.value == []  # eligible is not active


@pytest.mark.parametrize(("tenant", "ends_in_days"), [("tailspin", 9), ("contoso", None)])
async def test_assignment_schedule_instance_end_date(
    sim: GraphSimulator, tenant: str, ends_in_days: int | None
) -> None:
    vendor = sp_id(sim, tenant)
    query = RoleAssignmentScheduleInstancesRequestBuilder.RoleAssignmentScheduleInstancesRequestBuilderGetQueryParameters(
        filter=f"principalId eq '{vendor}'"
    )
    async with graph_session(sim, tenant) as session:
        page = await session.client.role_management.directory.role_assignment_schedule_instances.get(
            request_configuration=rc(query)
        )
    assert page is not None and page.value is not None
    (instance,) = page.value
    assert instance.role_definition_id == SECURITY_READER
    assert instance.directory_scope_id == "/"
    assert instance.assignment_type == "Assigned"
    assert instance.member_type == "Direct"
    if ends_in_days is None:
        assert instance.end_date_time is None
    else:
        assert instance.end_date_time is not None
        left = instance.end_date_time - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=ends_in_days - 1) < left <= dt.timedelta(days=ends_in_days)


async def test_pim_without_p2_is_aad_premium_license_required(sim: GraphSimulator) -> None:
    async with graph_session(sim, "lucerne") as session:
        directory = session.client.role_management.directory
        found = {
            "assignments": await error_of(directory.role_assignment_schedule_instances.get()),
            "eligibilities": await error_of(directory.role_eligibility_schedule_instances.get()),
            "roleAssignments": len((await directory.role_assignments.get()).value or []),  # type: ignore[union-attr]
        }
    expected = (400, "AadPremiumLicenseRequired")
    assert found == {"assignments": expected, "eligibilities": expected, "roleAssignments": 0}


# --- legacy directory roles (§3.5) and transitive membership (§3.6) -------------------------------


async def test_directory_roles_by_template_and_members(sim: GraphSimulator) -> None:
    query = DirectoryRolesRequestBuilder.DirectoryRolesRequestBuilderGetQueryParameters(
        filter=f"roleTemplateId eq '{SECURITY_READER}'"
    )
    async with graph_session(sim, "contoso") as session:
        client = session.client
        listed = await client.directory_roles.get()
        filtered = await client.directory_roles.get(request_configuration=rc(query))
        role = await client.directory_roles_with_role_template_id(SECURITY_READER).get()
        assert role is not None and role.id
        members = await client.directory_roles.by_directory_role_id(role.id).members.get()
    assert listed is not None and listed.value is not None
    assert [(r.display_name, r.role_template_id) for r in listed.value] == [
        ("Security Reader", SECURITY_READER)
    ]
    assert filtered is not None and [r.id for r in filtered.value or []] == [role.id]
    assert isinstance(role, DirectoryRole)
    assert role.role_template_id == SECURITY_READER and role.display_name == "Security Reader"
    assert role.id != SECURITY_READER  # the activated role's object id is not the template id
    assert members is not None and members.value is not None
    (member,) = members.value
    assert isinstance(member, ServicePrincipal)
    assert member.id == sp_id(sim, "contoso") and member.app_id == VENDOR_APP_ID


async def test_directory_role_members_show_the_role_assignable_group(sim: GraphSimulator) -> None:
    group = tenant_state(sim, "woodgrove").groups[0]
    async with graph_session(sim, "woodgrove") as session:
        role = await session.client.directory_roles_with_role_template_id(SECURITY_READER).get()
        assert role is not None and role.id
        members = await session.client.directory_roles.by_directory_role_id(role.id).members.get()
    assert members is not None and members.value is not None
    assert [(type(m), m.id) for m in members.value] == [(Group, group["id"])]


@pytest.mark.parametrize("tenant", ["lucerne", "margies", "adatum"])
async def test_directory_role_not_activated_is_404(sim: GraphSimulator, tenant: str) -> None:
    async with graph_session(sim, tenant) as session:
        with pytest.raises(ODataError) as missing:
            await session.client.directory_roles_with_role_template_id(SECURITY_READER).get()
    check_error(missing.value, 404, "Request_ResourceNotFound")


@pytest.mark.parametrize(
    ("tenant", "groups", "roles"),
    [
        ("woodgrove", ["USS Security Readers"], [SECURITY_READER]),
        ("contoso", [], [SECURITY_READER]),
        ("northwind", [], []),  # AU-scoped: not a member of the directoryRole
        ("adatum", [], []),
        ("tailspin", [], [SECURITY_READER]),
    ],
)
async def test_transitive_member_of(
    sim: GraphSimulator, tenant: str, groups: list[str], roles: list[str]
) -> None:
    async with graph_session(sim, tenant) as session:
        page = await session.client.service_principals.by_service_principal_id(
            sp_id(sim, tenant)
        ).transitive_member_of.get()
    assert page is not None and page.value is not None
    found_groups = [g for g in page.value if isinstance(g, Group)]
    found_roles = [r for r in page.value if isinstance(r, DirectoryRole)]
    assert len(found_groups) + len(found_roles) == len(page.value)
    assert [g.display_name for g in found_groups] == groups
    assert all(g.is_assignable_to_role is True for g in found_groups)
    assert [r.role_template_id for r in found_roles] == roles
    assert all(r.display_name == "Security Reader" for r in found_roles)


# --- app role assignments (§3.12) -------------------------------------------------------------------


@pytest.mark.parametrize(("tenant", "expected"), [("contoso", ["Exchange.ManageAsApp"]), ("alpine", [])])
async def test_exchange_app_role_assignments_resolve_through_the_exchange_app_roles(
    sim: GraphSimulator, tenant: str, expected: list[str]
) -> None:
    vendor = sp_id(sim, tenant)
    async with graph_session(sim, tenant) as session:
        client = session.client
        assignments = await client.service_principals.by_service_principal_id(
            vendor
        ).app_role_assignments.get()
        exchange = await client.service_principals_with_app_id(EXCHANGE_APP_ID).get()
    assert assignments is not None and assignments.value is not None
    assert exchange is not None and exchange.id == sp_id(sim, tenant, EXCHANGE_APP_ID)
    role_names = {role.id: role.value for role in exchange.app_roles or []}
    resolved = []
    for assignment in assignments.value:
        assert str(assignment.principal_id) == vendor
        assert assignment.principal_type == "ServicePrincipal"
        assert assignment.principal_display_name == "USS AzureAD"
        assert str(assignment.resource_id) == exchange.id
        assert assignment.resource_display_name == "Office 365 Exchange Online"
        assert str(assignment.app_role_id) == MANAGE_AS_APP
        resolved.append(role_names[assignment.app_role_id])
    assert resolved == expected


# --- users and paging (§3.8) --------------------------------------------------------------------------


async def test_lucerne_pages_of_999_cover_every_user_once(sim: GraphSimulator) -> None:
    """2,150 users in pages of 999. The pages are read as raw JSON through the SDK's adapter: the SDK's
    models cost ~6 ms per user to deserialize (`Entity.get_field_deserializers`), ~6 s per full page."""
    lucerne = tenant_state(sim, "lucerne")
    async with graph_session(sim, "lucerne") as session:
        client = session.client
        config = rc(user_query(select=["id", "userPrincipalName"], top=999))
        request = client.users.to_get_request_information(request_configuration=config)  # the builder's URL
        raw = await send_for_bytes(client, request)
        body = json.loads(raw)
        sizes, ids, links = [], [], []
        while True:
            sizes.append(len(body["value"]))
            ids += [u["id"] for u in body["value"]]
            assert all(set(u) == {"id", "userPrincipalName"} for u in body["value"])
            if "@odata.nextLink" not in body:
                break
            links.append(body["@odata.nextLink"])
            body = await raw_json(client, links[-1])  # followed verbatim
        # The SDK's own way to follow a link gives the same last page.
        last = await client.users.with_url(links[-1]).get()
    assert sizes == [999, 999, 152]
    assert len(ids) == len(set(ids)) == 2150
    assert set(ids) == {u.id for u in lucerne.users}
    assert last is not None and last.odata_next_link is None
    assert [u.id for u in last.value or []] == ids[-152:]
    for link in links:
        parts = urlsplit(link)
        assert f"{parts.scheme}://{parts.netloc}" == sim.graph_url
        assert parts.path == "/v1.0/users"
        query = parse_qs(parts.query)
        assert query["$select"] == ["id,userPrincipalName"]
        assert query["$top"] == ["999"]
        assert len(query["$skiptoken"]) == 1
    assert links[0] != links[1]
    assert sim.count(route="users.list", tenant=lucerne.tenant_id, status=200) == 4


async def test_default_page_size_and_filtered_paging_with_count(sim: GraphSimulator) -> None:
    async with graph_session(sim, "lucerne", method="certificate") as session:
        users = session.client.users
        first = await raw_json(session.client, "/users")
        # a filter with a quoted literal: the nextLink must carry it through intact
        filter_ = "accountEnabled eq false and userType eq 'Member'"
        query = user_query(filter=filter_, count=True, top=50, select=["id", "accountEnabled"])
        config = rc(query, eventual=True)
        page = await users.get(request_configuration=config)
        assert page is not None
        counts, seen = [page.odata_count], []
        while True:
            assert page is not None and page.value is not None
            seen += [(u.id, u.account_enabled) for u in page.value]
            if not page.odata_next_link:
                break
            assert parse_qs(urlsplit(page.odata_next_link).query)["$filter"] == [filter_]
            page = await users.with_url(page.odata_next_link).get(request_configuration=rc(eventual=True))
            counts.append(page.odata_count if page else None)
    assert len(first["value"]) == 100 and first["@odata.nextLink"]  # default page size
    # shared 64 + room 12 + equipment 4 cannot sign in
    assert counts == [80, 80]
    assert len(seen) == len({uid for uid, _ in seen}) == 80
    assert all(enabled is False for _, enabled in seen)


USER_FILTERS = [
    # (tenant, $filter, advanced, expected count) — contoso: 180 users, 12 shared, 3 room, 1 equipment,
    # 8 without a mailbox (no mail, no licence)
    ("contoso", "accountEnabled eq false", False, 16),
    ("contoso", "mail ne null", True, 172),
    ("contoso", "assignedLicenses/$count eq 0", True, 24),
    ("contoso", "endsWith(userPrincipalName, '@contoso-health.example')", True, 180),
    ("contoso", "startsWith(userPrincipalName, 'ROOM')", False, 3),
    ("contoso", "not(accountEnabled eq true)", True, 16),
    ("fabrikam", "accountEnabled eq false", False, 28),  # 23 + 2 shared (one can sign in), 4 rooms
    (
        "fabrikam",
        "userPrincipalName in ('sales-html@fabrikam-retail.example', 'Formula@FABRIKAM-retail.example')",
        False,
        2,
    ),
]


@pytest.mark.parametrize("tenant", sorted({row[0] for row in USER_FILTERS}))
async def test_user_filters(sim: GraphSimulator, tenant: str) -> None:
    """Default filters come back whole; advanced ones are refused without ConsistencyLevel + $count and
    then counted by Graph (@odata.count), so one short page is enough to check them."""
    rows = [row[1:] for row in USER_FILTERS if row[0] == tenant]
    select = ["id", "mail", "accountEnabled", "assignedLicenses"]
    found, wanted = {}, {}
    async with graph_session(sim, tenant) as session:
        for filter_, advanced, expected in rows:
            top = 10 if advanced else 999
            query = user_query(filter=filter_, select=select, top=top, count=True if advanced else None)
            refused = (
                await error_of(session.client.users.get(request_configuration=rc(query)))
                if advanced
                else None
            )
            try:
                page = await session.client.users.get(request_configuration=rc(query, eventual=advanced))
            except ODataError as exc:
                found[filter_] = f"{exc.response_status_code} {exc.error and exc.error.code}"
            else:
                assert page is not None and page.value is not None
                found[filter_] = (
                    len(page.value),
                    page.odata_count,
                    page.odata_next_link is not None,
                    refused,
                )
            wanted[filter_] = (
                min(expected, top),
                expected if advanced else None,
                expected > top,
                (400, "Request_UnsupportedQuery") if advanced else None,
            )
    assert found == wanted


async def test_user_select_returns_only_the_selected_properties(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        client = session.client
        selected = await raw_json(client, "/users?$select=id,accountEnabled,assignedLicenses&$top=5")
        default = await raw_json(client, "/users?$top=5")
        model = await client.users.get(
            request_configuration=rc(user_query(select=["id", "accountEnabled"], top=5))
        )
    assert len(selected["value"]) == 5
    assert all(set(u) == {"id", "accountEnabled", "assignedLicenses"} for u in selected["value"])
    assert selected["@odata.context"] == metadata(sim) + "users(id,accountEnabled,assignedLicenses)"
    assert all(set(u) == USER_DEFAULT_PROPERTIES for u in default["value"])  # accountEnabled needs $select
    assert model is not None and model.value is not None
    for user in model.value:
        assert user.id and user.account_enabled is not None
        assert user.display_name is None and user.user_principal_name is None and user.mail is None


async def test_user_by_id_and_by_upn(sim: GraphSimulator) -> None:
    fabrikam = tenant_state(sim, "fabrikam")
    hostile = fabrikam.users.find("sales-html@fabrikam-retail.example")
    assert hostile is not None
    query = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id", "accountEnabled"])
    async with graph_session(sim, "fabrikam") as session:
        users = session.client.users
        by_id = await users.by_user_id(hostile.id).get()
        by_upn = await users.by_user_id(hostile.user_principal_name).get()
        selected = await users.by_user_id(hostile.id).get(request_configuration=rc(query))
        with pytest.raises(ODataError) as missing:
            await users.by_user_id("00000000-0000-0000-0000-00000000beef").get()
    assert by_id is not None and by_upn is not None and selected is not None
    assert by_id.id == by_upn.id == hostile.id
    assert by_id.display_name == "<script>alert('owned')</script> Sales"  # data comes back verbatim
    assert by_id.account_enabled is None  # not a default property
    assert selected.account_enabled is False and selected.display_name is None
    check_error(missing.value, 404, "Request_ResourceNotFound")


INVALID_REQUESTS = [
    ("/users?$select=mailboxSettings", 501, "NotImplemented"),  # per-user only (§0.1)
    ("/users?$select=id,mailboxSettings", 501, "NotImplemented"),
    ("/users?$top=1000", 400, "Request_UnsupportedQuery"),  # max 999
    ("/users?$top=0", 400, "Request_UnsupportedQuery"),
    ("/servicePrincipals?$top=1000", 400, "Request_UnsupportedQuery"),
    ("/users?$skip=10", 400, "Request_BadRequest"),  # $skip is not supported on users
    ("/users?$skiptoken=garbage", 400, "Request_BadRequest"),
    ("/users?$select=id,shoeSize", 400, "Request_BadRequest"),
    ("/users?$frobnicate=1", 400, "BadRequest"),  # unknown system query option
    ("/servicePrincipals?$frobnicate=1", 400, "BadRequest"),
    ("/users?$top=5&$top=6", 400, "BadRequest"),
    ("/nonsense", 400, "BadRequest"),  # unknown segment
    ("/servicePrincipals/x/nonsense", 400, "BadRequest"),
    ("/users/0badc0de-0000-4000-8000-000000000000", 404, "Request_ResourceNotFound"),
]


async def test_invalid_requests_get_a_graph_error_envelope(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        found = {path: await error_of(raw_json(session.client, path)) for path, _, _ in INVALID_REQUESTS}
    assert found == {path: (status, code) for path, status, code in INVALID_REQUESTS}


async def test_unknown_route_envelope_is_graphs(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        client = session.client
        ri = raw_request(client, "/nonsense")
        try:
            await send_for_bytes(client, ri)
        except ODataError as exc:
            error = check_error(exc, 400, "BadRequest")
        else:
            pytest.fail("GET /v1.0/nonsense did not fail")
        with pytest.raises(ODataError) as not_allowed:
            await raw_json(client, "/users", method=Method.DELETE)
    assert "nonsense" in (error.error.message or "")  # type: ignore[union-attr]
    check_error(not_allowed.value, 405, "Request_BadRequest")


async def test_unknown_version_gets_a_graph_error_envelope(sim: GraphSimulator) -> None:
    """§2: every Graph error carries innerError with request-id, client-request-id and date."""
    async with graph_session(sim, "contoso") as session:
        with pytest.raises(ODataError) as refused:
            await raw_json(session.client, f"{sim.graph_url}/v9.9/users")
    check_error(refused.value, 400, "BadRequest")


async def test_tampered_skiptoken_is_refused(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        users = session.client.users
        page = await users.get(request_configuration=rc(user_query(select=["id"], top=10)))
        assert page is not None and page.odata_next_link
        link = page.odata_next_link
        token = parse_qs(urlsplit(link).query)["$skiptoken"][0]
        flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
        with pytest.raises(ODataError) as tampered:
            await users.with_url(link.replace(token, flipped)).get()
        following = await users.with_url(link).get()
    check_error(tampered.value, 400, "Request_BadRequest")
    assert following is not None and len(following.value or []) == 10
    assert {u.id for u in following.value or []}.isdisjoint({u.id for u in page.value or []})


# --- mailbox settings (§3.7) --------------------------------------------------------------------------


def first_user(tenant: TenantState, purpose: str | None) -> str:
    return next(u.id for u in tenant.users if u.purpose == purpose and not u.mailbox_access_denied)


MAILBOX_PURPOSES = {
    "shared": UserPurpose.Shared,
    "room": UserPurpose.Room,
    "equipment": UserPurpose.Equipment,
    "user": UserPurpose.User,
}


async def test_mailbox_settings_user_purpose(sim: GraphSimulator) -> None:
    contoso = tenant_state(sim, "contoso")
    query = MailboxSettingsRequestBuilder.MailboxSettingsRequestBuilderGetQueryParameters(
        select=["userPurpose"]
    )
    async with graph_session(sim, "contoso") as session:
        for purpose, expected in MAILBOX_PURPOSES.items():
            user_id = first_user(contoso, purpose)
            settings = session.client.users.by_user_id(user_id).mailbox_settings
            full = await settings.get()
            # $select on mailboxSettings is undocumented (ignored or broken in the field): refused here.
            assert await error_of(settings.get(request_configuration=rc(query))) == (
                400,
                "RequestBroker--ParseUri",
            )
            sub = await raw_json(session.client, f"/users/{user_id}/mailboxSettings/userPurpose")
            assert full is not None and full.user_purpose == expected, purpose
            assert full.time_zone and full.working_hours is not None
            assert sub == {
                "@odata.context": metadata(sim) + f"users('{user_id}')/mailboxSettings/userPurpose",
                "value": purpose,
            }


async def test_lucerne_user_purpose_counts_over_a_sample(sim: GraphSimulator) -> None:
    lucerne = tenant_state(sim, "lucerne")
    everyone = list(lucerne.users)
    # The fixture's exact counts for the whole tenant…
    assert Counter(u.purpose for u in everyone) == Counter(
        {"user": 1860, "shared": 64, "room": 12, "equipment": 4, None: 210}
    )
    # …and a sample through Graph: the first five of each kind plus every 50th user.
    sample: dict[str, str | None] = {}
    for purpose in ("user", "shared", "room", "equipment", None):
        for user in [u for u in everyone if u.purpose == purpose][:5]:
            sample[user.id] = purpose
    for user in everyone[::50]:
        sample[user.id] = user.purpose
    expected = Counter(sample.values())
    gate = asyncio.Semaphore(3)  # Exchange allows 4 concurrent mailbox requests per app and tenant

    async with graph_session(sim, "lucerne") as session:

        async def purpose_of(user_id: str) -> str | None:
            async with gate:
                try:
                    answer = await raw_json(session.client, f"/users/{user_id}/mailboxSettings/userPurpose")
                except ODataError as exc:
                    check_error(exc, 404, "MailboxNotEnabledForRESTAPI")
                    return None
            return str(answer["value"])

        found = await asyncio.gather(*(purpose_of(uid) for uid in sample))
    assert Counter(found) == expected
    assert dict(zip(sample, found, strict=True)) == sample
    assert (
        expected["shared"] >= 5
        and expected["room"] >= 5
        and expected["equipment"] == 4
        and expected[None] >= 5
    )
    assert sim.count(route="mailboxSettings.userPurpose", tenant=lucerne.tenant_id, status=429) == 0


MAILBOX_PATHS = [
    "/users/{id}/mailboxSettings",
    "/users/{id}/mailboxSettings?$select=userPurpose",
    "/users/{id}/mailboxSettings/userPurpose",
]


MAILBOX_ERRORS = [
    # (tenant, whose mailbox, status, code)
    ("contoso", "no-mailbox", 404, "MailboxNotEnabledForRESTAPI"),
    ("contoso", "unknown", 404, "ErrorInvalidUser"),
    # hidden from the auditor by an Exchange application access policy
    ("trey", "Board Room Mailbox", 403, "ErrorAccessDenied"),
    ("trey", "Legal Hold", 403, "ErrorAccessDenied"),
    ("trey", "CEO Office", 403, "ErrorAccessDenied"),
]


@pytest.mark.parametrize("tenant", ["contoso", "trey"])
async def test_mailbox_errors(sim: GraphSimulator, tenant: str) -> None:
    state = tenant_state(sim, tenant)
    rows = [row[1:] for row in MAILBOX_ERRORS if row[0] == tenant]
    found, wanted = {}, {}
    async with graph_session(sim, tenant) as session:
        for who, status, code in rows:
            if who == "no-mailbox":
                user_id = first_user(state, None)
            elif who == "unknown":
                user_id = "0badc0de-0000-4000-8000-000000000000"
            else:
                user = next(u for u in state.users if u.display_name == who)
                assert user.mailbox_access_denied
                user_id = user.id
            for path in MAILBOX_PATHS:
                found[who, path] = await error_of(raw_json(session.client, path.format(id=user_id)))
                wanted[who, path] = (status, code)
    assert found == wanted


async def test_mailbox_errors_through_the_builder(sim: GraphSimulator) -> None:
    trey = tenant_state(sim, "trey")
    board = next(u for u in trey.users if u.display_name == "Board Room Mailbox")
    others = [u for u in trey.users if u.purpose == "shared" and not u.mailbox_access_denied]
    async with graph_session(sim, "trey", method="certificate") as session:
        users = session.client.users
        with pytest.raises(ODataError) as denied:
            await users.by_user_id(board.id).mailbox_settings.get()
        allowed = await users.by_user_id(others[0].id).mailbox_settings.get()
    check_error(denied.value, 403, "ErrorAccessDenied")
    assert allowed is not None and allowed.user_purpose == UserPurpose.Shared
    assert len(others) == 6


# --- permissions (§1, §2) ---------------------------------------------------------------------------


async def test_fourthcoffee_lacks_role_management_read(sim: GraphSimulator) -> None:
    async with graph_session(sim, "fourthcoffee") as session:
        client = session.client
        directory = client.role_management.directory
        found = {
            "roleAssignments": await error_of(directory.role_assignments.get()),
            "roleAssignmentScheduleInstances": await error_of(
                directory.role_assignment_schedule_instances.get()
            ),
            "roleEligibilityScheduleInstances": await error_of(
                directory.role_eligibility_schedule_instances.get()
            ),
            "directoryRoles": await error_of(client.directory_roles.get()),
        }
        # what it was consented to still works
        page = await client.service_principals.get(
            request_configuration=rc(sp_query(filter="displayName eq 'USS AzureAD'"))
        )
    assert found == dict.fromkeys(found, (403, "Authorization_RequestDenied"))
    assert page is not None and [sp.app_id for sp in page.value or []] == [VENDOR_APP_ID]


# --- remediation: POST roleAssignments (§3.3) ---------------------------------------------------------


async def test_create_role_assignment_then_conflict(fresh_sim: GraphSimulator) -> None:
    tenant = tenant_state(fresh_sim, "fabrikam")
    vendor = sp_id(fresh_sim, "fabrikam")
    body = UnifiedRoleAssignment(
        principal_id=vendor, role_definition_id=SECURITY_READER, directory_scope_id="/"
    )
    listing = ra_query(filter=f"principalId eq '{vendor}' and roleDefinitionId eq '{SECURITY_READER}'")
    async with graph_session(fresh_sim, "fabrikam") as session:
        assignments = session.client.role_management.directory.role_assignments
        before = await assignments.get(request_configuration=rc(listing))
        created = await assignments.post(body)
        after = await assignments.get(request_configuration=rc(listing))
        with pytest.raises(ODataError) as duplicate:
            await assignments.post(body)
        again = await assignments.get(request_configuration=rc(listing))
    assert before is not None and before.value == []
    assert created is not None and created.id and created.id.endswith("-1")
    assert (created.principal_id, created.role_definition_id, created.directory_scope_id) == (
        vendor,
        SECURITY_READER,
        "/",
    )
    assert fresh_sim.count(route="roleAssignments.create", tenant=tenant.tenant_id, status=201) == 1
    assert after is not None and [a.id for a in after.value or []] == [created.id]
    error = check_error(duplicate.value, 400, "Request_BadRequest")
    assert "conflicting object" in (error.error.message or "")  # type: ignore[union-attr]
    assert again is not None and [a.id for a in again.value or []] == [created.id]
    assert fresh_sim.count(route="roleAssignments.create", tenant=tenant.tenant_id, status=400) == 1


async def test_create_role_assignment_raw_shape(fresh_sim: GraphSimulator) -> None:
    vendor = sp_id(fresh_sim, "lucerne")
    payload = {
        "@odata.type": "#microsoft.graph.unifiedRoleAssignment",
        "roleDefinitionId": SECURITY_READER,
        "principalId": vendor,
        "directoryScopeId": "/",
    }
    async with graph_session(fresh_sim, "lucerne", method="certificate") as session:
        created = await raw_json(
            session.client, "/roleManagement/directory/roleAssignments", method=Method.POST, body=payload
        )
        by_id = await raw_json(session.client, f"/roleManagement/directory/roleAssignments/{created['id']}")
    assert (
        created["@odata.context"] == metadata(fresh_sim) + "roleManagement/directory/roleAssignments/$entity"
    )
    assert {"id", "principalId", "roleDefinitionId", "directoryScopeId"} <= set(created)
    assert (created["principalId"], created["roleDefinitionId"], created["directoryScopeId"]) == (
        vendor,
        SECURITY_READER,
        "/",
    )
    assert all(CAMEL.match(k) for k in walk_keys(created))
    assert by_id["id"] == created["id"]
    assert by_id["@odata.context"].endswith("roleAssignments/$entity")
    assert fresh_sim.count(route="roleAssignments.create", status=201) == 1


async def test_create_without_role_management_write_is_denied(fresh_sim: GraphSimulator) -> None:
    tenant = tenant_state(fresh_sim, "fourthcoffee")
    before = len(tenant.role_assignments)
    vendor = sp_id(fresh_sim, "fourthcoffee")
    body = UnifiedRoleAssignment(
        principal_id=vendor, role_definition_id=SECURITY_READER, directory_scope_id="/"
    )
    async with graph_session(fresh_sim, "fourthcoffee") as session:
        with pytest.raises(ODataError) as denied:
            await session.client.role_management.directory.role_assignments.post(body)
    check_error(denied.value, 403, "Authorization_RequestDenied")
    assert len(tenant.role_assignments) == before
    assert fresh_sim.count(route="roleAssignments.create", status=403) == 1


# --- raw shapes (§2, §3) --------------------------------------------------------------------------------


def shape_cases(sim: GraphSimulator) -> list[tuple[str, str, str, set[str]]]:
    """(tenant, path, @odata.context suffix, camelCase keys every item must have)."""
    contoso, adatum, woodgrove = sp_id(sim, "contoso"), sp_id(sim, "adatum"), sp_id(sim, "woodgrove")
    assignment = {"id", "principalId", "roleDefinitionId", "directoryScopeId"}
    instance = assignment | {"appScopeId", "startDateTime", "endDateTime", "memberType"}
    rm = "roleManagement/directory/"
    return [
        ("contoso", "/organization", "organization", {"id", "displayName", "verifiedDomains"}),
        (
            "contoso",
            "/servicePrincipals",
            "servicePrincipals",
            {
                "id",
                "appId",
                "appOwnerOrganizationId",
                "accountEnabled",
                "displayName",
                "servicePrincipalType",
                "signInAudience",
            },
        ),
        ("contoso", "/servicePrincipals?$select=id,appId", "servicePrincipals(id,appId)", {"id", "appId"}),
        (
            "contoso",
            f"/{rm}roleAssignments?$filter=principalId eq '{contoso}'",
            f"{rm}roleAssignments",
            assignment,
        ),
        (
            "contoso",
            f"/{rm}roleAssignmentScheduleInstances",
            f"{rm}roleAssignmentScheduleInstances",
            instance | {"assignmentType", "roleAssignmentOriginId", "roleAssignmentScheduleId"},
        ),
        (
            "adatum",
            f"/{rm}roleEligibilityScheduleInstances?$filter=principalId eq '{adatum}'",
            f"{rm}roleEligibilityScheduleInstances",
            instance | {"roleEligibilityScheduleId"},
        ),
        (
            "contoso",
            "/directoryRoles",
            "directoryRoles",
            {"id", "description", "displayName", "roleTemplateId"},
        ),
        (
            "contoso",
            f"/servicePrincipals/{contoso}/appRoleAssignments",
            "appRoleAssignments",
            {
                "id",
                "createdDateTime",
                "appRoleId",
                "principalDisplayName",
                "principalId",
                "principalType",
                "resourceDisplayName",
                "resourceId",
            },
        ),
        (
            "woodgrove",
            f"/servicePrincipals/{woodgrove}/transitiveMemberOf",
            "directoryObjects",
            {"@odata.type", "id", "displayName"},
        ),
        ("contoso", "/users?$top=3", "users", USER_DEFAULT_PROPERTIES),
        (
            "contoso",
            "/users?$select=id,userPrincipalName,accountEnabled,userType&$top=3",
            "users(id,userPrincipalName,accountEnabled,userType)",
            {"id", "userPrincipalName", "accountEnabled", "userType"},
        ),
    ]


async def test_collection_shapes(sim: GraphSimulator) -> None:
    cases = shape_cases(sim)
    for tenant in sorted({c[0] for c in cases}):
        async with graph_session(sim, tenant) as session:
            for _, path, context, keys in [c for c in cases if c[0] == tenant]:
                body = await raw_json(session.client, path)
                assert body["@odata.context"] == metadata(sim) + context, path
                assert isinstance(body["value"], list) and body["value"], path
                for item in body["value"]:
                    assert keys <= set(item), (path, keys - set(item))
                bad = [k for k in walk_keys(body) if not CAMEL.match(k)]
                assert bad == [], (path, bad)


async def test_organization_verified_domain_shape(sim: GraphSimulator) -> None:
    async with graph_session(sim, "contoso") as session:
        body = await raw_json(session.client, "/organization?$select=id,displayName,verifiedDomains")
    assert body["@odata.context"] == metadata(sim) + "organization(id,displayName,verifiedDomains)"
    (org,) = body["value"]
    assert set(org) == {"id", "displayName", "verifiedDomains"}
    for domain in org["verifiedDomains"]:
        assert set(domain) == {"capabilities", "isDefault", "isInitial", "name", "type"}
    assert [d["isDefault"] for d in org["verifiedDomains"]].count(True) == 1


async def test_entity_shapes(sim: GraphSimulator) -> None:
    contoso = tenant_state(sim, "contoso")
    vendor = sp_id(sim, "contoso")
    user_id = first_user(contoso, "shared")
    cases = [
        (f"/servicePrincipals(appId='{VENDOR_APP_ID}')", "servicePrincipals/$entity"),
        (f"/servicePrincipals/{vendor}", "servicePrincipals/$entity"),
        (f"/users/{user_id}", "users/$entity"),
        (f"/directoryRoles(roleTemplateId='{SECURITY_READER}')", "directoryRoles/$entity"),
        (f"/users/{user_id}/mailboxSettings", f"users('{user_id}')/mailboxSettings"),
    ]
    async with graph_session(sim, "contoso") as session:
        for path, context in cases:
            body = await raw_json(session.client, path)
            assert body["@odata.context"] == metadata(sim) + context, path
            assert "value" not in body and body["id" if "mailbox" not in path else "userPurpose"]
            bad = [k for k in walk_keys(body) if not CAMEL.match(k)]
            assert bad == [], (path, bad)
    assert body["userPurpose"] == "shared"
