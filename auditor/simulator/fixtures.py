"""Human-readable fixture files (TOML) → a simulator `World`.

A fixture names things by keys (`principal = "uss"`, `role = "Security Reader"`) and the loader turns
them into Graph objects with stable ids. The fleet generator builds the same dictionaries in memory,
so both go through one loader. The demo fleet in `config/demo-fleet.toml` shows every feature.
"""

from __future__ import annotations

import datetime as dt
import tomllib
import uuid
from pathlib import Path
from typing import Any

from .faults import FaultProfile
from .world import (
    EXCHANGE_APP_ROLES,
    ON_PREMISES_ANSWERS,
    PERMISSION_PROFILES,
    ROLE_TEMPLATES,
    SECURITY_READER,
    AppRegistration,
    SyntheticUsers,
    TenantState,
    UserDirectory,
    UserRecord,
    World,
    assignment_id,
    service_principal,
    stable_id,
)

DEFAULT_VENDOR = {
    "display_name": "USS AzureAD",
    "app_id": "7e1b3f0c-2d54-4c8e-9a61-5f0c3b2a9d17",  # made up: the simulator's stand-in for the vendor app
    "publisher_tenant_id": "c0ffee00-5ca1-4ab1-9e55-00000000c0de",
}


class FixtureError(ValueError):
    """A fixture file problem, with the file and the key path that is wrong."""


def load_fixture(path: Path) -> World:
    """Read a fixture file. Raises FixtureError naming the file, the key and the problem."""
    return load_fixture_with_data(path)[0]


def load_fixture_with_data(path: Path) -> tuple[World, dict[str, Any]]:
    """Read a fixture file once: the world it describes and the file's data (what ``auditor demo`` writes
    its config from). Raises FixtureError naming the file, the key and the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FixtureError(f"{path}: fixture file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise FixtureError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return world_from_dict(data), data
    except FixtureError as exc:
        raise FixtureError(f"{path}: {exc}") from exc


def _check_keys(where: str, data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise FixtureError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def world_from_dict(data: dict[str, Any], *, now: dt.datetime | None = None) -> World:
    """Build a World from fixture data (already parsed TOML, or the fleet generator's dictionaries)."""
    _check_keys("top level", data, {"vendor", "apps", "tenants", "faults", "description"})
    now = now or dt.datetime.now(dt.UTC)
    vendor = {**DEFAULT_VENDOR, **data.get("vendor", {})}
    _check_keys("vendor", vendor, set(DEFAULT_VENDOR))
    world = World()
    app_ids: dict[str, str] = {}
    homes: dict[str, tuple[str, str, Any]] = {}  # managed identity client id -> (where, tenant key, consent)
    tenant_keys: dict[str, str] = {}
    for index, app in enumerate(data.get("apps", [])):
        where = f"apps[{index}]"
        _check_keys(
            where,
            app,
            {
                "key",
                "client_id",
                "name",
                "credentials",
                "env_prefix",
                "federated_subjects",
                "certificate_valid_days",
                "home_tenant",
                "home_consent",
            },
        )
        key = _required(where, app, "key")
        client_id = app.get("client_id") or stable_id("app", key)
        kinds = tuple(app.get("credentials", ["secret"]))
        for kind in kinds:
            if kind not in ("secret", "previous_secret", "certificate", "managed_identity"):
                raise FixtureError(
                    f"{where}.credentials: unknown kind '{kind}' "
                    "(secret, previous_secret, certificate, managed_identity)"
                )
        if ("managed_identity" in kinds) != ("home_tenant" in app):
            raise FixtureError(
                f'{where}: a managed identity (credentials = ["managed_identity"]) and home_tenant (the key '
                "of the tenant it lives in) go together"
            )
        if "home_tenant" in app:
            homes[client_id.lower()] = (where, str(app["home_tenant"]), app.get("home_consent", "audit"))
        world.apps[client_id.lower()] = AppRegistration(
            client_id=client_id,
            name=app.get("name", key),
            credential_kinds=kinds,
            env_prefix=app.get("env_prefix", f"USS_SIM_{key.upper().replace('-', '_')}"),
            federated_subjects=list(app.get("federated_subjects", [])),
            certificate_valid_days=int(app.get("certificate_valid_days", 365)),
        )
        app_ids[key] = client_id
    if "faults" in data:
        world.default_faults = _faults("faults", data["faults"])
    for index, tenant in enumerate(data.get("tenants", [])):
        state = _tenant(f"tenants[{index}]", tenant, vendor, app_ids, now)
        if state.tenant_id.lower() in world.tenants:
            raise FixtureError(f"tenants[{index}].tenant_id: {state.tenant_id} is used twice")
        world.add_tenant(state)
        tenant_keys[str(tenant.get("key"))] = state.tenant_id
    for client_id, (where, home, consent) in homes.items():
        # A managed identity's Graph permissions are app role assignments in its home tenant.
        if home not in tenant_keys:
            raise FixtureError(f"{where}.home_tenant: no tenant with key '{home}'")
        home_id = tenant_keys[home]
        world.apps[client_id].home_tenant_id = home_id
        world.tenants[home_id].consents[client_id] = set(_permissions(f"{where}.home_consent", consent))
    return world


def _permissions(where: str, permissions: Any) -> set[str]:
    """A consent: a profile name ("audit", "remediation") or a list of permissions."""
    if isinstance(permissions, str):
        if permissions not in PERMISSION_PROFILES:
            raise FixtureError(
                f"{where}: unknown profile '{permissions}' "
                f"({', '.join(PERMISSION_PROFILES)}) — or give a list of permissions"
            )
        return set(PERMISSION_PROFILES[permissions])
    return {str(p) for p in permissions}


def _required(where: str, data: dict[str, Any], key: str) -> Any:
    if key not in data or data[key] in (None, ""):
        raise FixtureError(f"{where}.{key}: required")
    return data[key]


def _faults(where: str, data: dict[str, Any]) -> FaultProfile:
    try:
        return FaultProfile.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise FixtureError(f"{where}: {exc}") from exc


def _role_id(where: str, role: str) -> str:
    if role.lower() in ROLE_TEMPLATES:
        return role.lower()
    for template, name in ROLE_TEMPLATES.items():
        if name.lower() == role.lower():
            return template
    raise FixtureError(f"{where}.role: unknown role '{role}'; known: {', '.join(ROLE_TEMPLATES.values())}")


_TENANT_KEYS = {
    "key",
    "tenant_id",
    "name",
    "domain",
    "p2",
    "consent",
    "vendor",
    "service_principals",
    "roles",
    "eligible",
    "groups",
    "app_roles",
    "users",
    "faults",
    "notes",
}


def _tenant(
    where: str, data: dict[str, Any], vendor: dict[str, str], app_ids: dict[str, str], now: dt.datetime
) -> TenantState:
    _check_keys(where, data, _TENANT_KEYS)
    key = _required(where, data, "key")
    tenant_id = str(data.get("tenant_id") or stable_id("tenant", key))
    try:
        uuid.UUID(tenant_id)
    except ValueError as exc:
        raise FixtureError(f"{where}.tenant_id: '{tenant_id}' is not a GUID") from exc
    domain = data.get("domain", f"{key}.example")
    tenant = TenantState(
        tenant_id=tenant_id.lower(),
        display_name=data.get("name", key),
        domain=domain,
        p2=bool(data.get("p2", True)),
    )
    for app_key, permissions in data.get("consent", {}).items():
        if app_key not in app_ids:
            raise FixtureError(
                f"{where}.consent.{app_key}: no app with that key (apps: {', '.join(app_ids)})"
            )
        if isinstance(permissions, str):
            if permissions not in PERMISSION_PROFILES:
                raise FixtureError(
                    f"{where}.consent.{app_key}: unknown profile '{permissions}' "
                    f"({', '.join(PERMISSION_PROFILES)}) — or give a list of permissions"
                )
            permissions = PERMISSION_PROFILES[permissions]
        tenant.consents[app_ids[app_key].lower()] = set(permissions)
    if "faults" in data:
        tenant.faults = _faults(f"{where}.faults", data["faults"])

    principals: dict[str, str] = {}
    vendor_spec = data.get("vendor", True)
    if vendor_spec is not False:
        vendor_spec = {} if vendor_spec is True else dict(vendor_spec)
        _check_keys(f"{where}.vendor", vendor_spec, {"enabled", "display_name"})
        sp = service_principal(
            tenant.tenant_id,
            "uss",
            vendor["app_id"],
            vendor_spec.get("display_name", vendor["display_name"]),
            vendor["publisher_tenant_id"],
            enabled=bool(vendor_spec.get("enabled", True)),
        )
        tenant.service_principals.append(sp)
        principals["uss"] = sp["id"]
    for index, spec in enumerate(data.get("service_principals", [])):
        sp_where = f"{where}.service_principals[{index}]"
        _check_keys(sp_where, spec, {"key", "display_name", "app_id", "owner", "enabled"})
        sp_key = _required(sp_where, spec, "key")
        owner = spec.get("owner", "tenant")
        owner_id = {"tenant": tenant.tenant_id, "vendor": vendor["publisher_tenant_id"]}.get(owner, owner)
        sp = service_principal(
            tenant.tenant_id,
            sp_key,
            spec.get("app_id") or stable_id(tenant.tenant_id, "app", sp_key),
            spec.get("display_name", vendor["display_name"]),
            owner_id,
            enabled=bool(spec.get("enabled", True)),
        )
        tenant.service_principals.append(sp)
        principals[sp_key] = sp["id"]
    for index, spec in enumerate(data.get("groups", [])):
        group_where = f"{where}.groups[{index}]"
        _check_keys(group_where, spec, {"key", "display_name", "role_assignable", "members"})
        group_key = _required(group_where, spec, "key")
        members = [_principal(f"{group_where}.members", m, principals) for m in spec.get("members", [])]
        group = {
            "id": stable_id(tenant.tenant_id, "group", group_key),
            "displayName": spec.get("display_name", group_key),
            "isAssignableToRole": bool(spec.get("role_assignable", True)),
            "members": members,
        }
        tenant.groups.append(group)
        principals[f"group:{group_key}"] = group["id"]
    for index, spec in enumerate(data.get("roles", [])):
        tenant.role_assignments.append(_assignment(f"{where}.roles[{index}]", spec, tenant, principals, now))
    for index, spec in enumerate(data.get("eligible", [])):
        record = _assignment(f"{where}.eligible[{index}]", spec, tenant, principals, now)
        tenant.eligibilities.append(
            {
                "id": record["id"] + "-e",
                "principalId": record["principalId"],
                "roleDefinitionId": record["roleDefinitionId"],
                "directoryScopeId": record["directoryScopeId"],
                "startDateTime": record["_start"],
                "endDateTime": record["_end"],
            }
        )
    for index, spec in enumerate(data.get("app_roles", [])):
        ar_where = f"{where}.app_roles[{index}]"
        _check_keys(ar_where, spec, {"principal", "resource", "role"})
        principal = _principal(f"{ar_where}.principal", _required(ar_where, spec, "principal"), principals)
        resource = spec.get("resource", "exchange")
        if resource != "exchange":
            raise FixtureError(f"{ar_where}.resource: only 'exchange' is modelled")
        role = _required(ar_where, spec, "role")
        if role not in EXCHANGE_APP_ROLES:
            raise FixtureError(
                f"{ar_where}.role: unknown Exchange app role '{role}' ({', '.join(EXCHANGE_APP_ROLES)})"
            )
        # World.add_tenant adds the Exchange Online service principal under this id.
        exo = stable_id(tenant.tenant_id, "sp", "exchange-online")
        tenant.app_role_assignments.append(
            {
                "id": stable_id(tenant.tenant_id, "ara", principal, role).replace("-", "")[:43],
                "principalId": principal,
                "resourceId": exo,
                "appRoleId": EXCHANGE_APP_ROLES[role],
            }
        )
    tenant.users = _users(f"{where}.users", data.get("users", {}), tenant)
    return tenant


def _principal(where: str, key: str, principals: dict[str, str]) -> str:
    if key in principals:
        return principals[key]
    try:
        return str(uuid.UUID(key))
    except ValueError as exc:
        raise FixtureError(
            f"{where}: unknown principal '{key}' (known: {', '.join(principals) or 'none'})"
        ) from exc


def _assignment(
    where: str, spec: dict[str, Any], tenant: TenantState, principals: dict[str, str], now: dt.datetime
) -> dict[str, Any]:
    _check_keys(where, spec, {"principal", "role", "scope", "expires_in_days", "started_days_ago"})
    principal = _principal(f"{where}.principal", _required(where, spec, "principal"), principals)
    role = _role_id(where, spec.get("role", SECURITY_READER))
    scope = spec.get("scope", "/")
    if scope.startswith("au:"):
        scope = f"/administrativeUnits/{stable_id(tenant.tenant_id, 'au', scope[3:])}"
    elif scope != "/" and not scope.startswith("/"):
        raise FixtureError(f"{where}.scope: '{scope}' must be '/', 'au:<name>' or a directory scope path")
    start = now - dt.timedelta(days=float(spec.get("started_days_ago", 90)))
    end = now + dt.timedelta(days=float(spec["expires_in_days"])) if "expires_in_days" in spec else None
    return {
        "id": assignment_id(),
        "principalId": principal,
        "roleDefinitionId": role,
        "directoryScopeId": scope,
        "appScopeId": None,
        "condition": None,
        "_start": _iso(start),
        "_end": _iso(end) if end else None,
    }


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_USER_KEYS = {
    "count",
    "shared",
    "room",
    "equipment",
    "no_mailbox",
    "shared_signin_enabled",
    "shared_licensed",
    "on_premises",
    "list",
}


def _users(where: str, spec: dict[str, Any], tenant: TenantState) -> UserDirectory:
    _check_keys(where, spec, _USER_KEYS)
    explicit = []
    for index, user in enumerate(spec.get("list", [])):
        user_where = f"{where}.list[{index}]"
        _check_keys(
            user_where,
            user,
            {
                "key",
                "display_name",
                "upn",
                "mail",
                "purpose",
                "enabled",
                "licensed",
                "id",
                "user_type",
                "mailbox_access_denied",
                "synced",
                "mailbox_on_premises",
            },
        )
        on_premises = user.get("mailbox_on_premises")
        if on_premises is not None and on_premises not in ON_PREMISES_ANSWERS:
            raise FixtureError(
                f"{user_where}.mailbox_on_premises: '{on_premises}' is not one of "
                f"{', '.join(ON_PREMISES_ANSWERS)}"
            )
        key = user.get("key") or user.get("upn") or str(index)
        purpose = user.get("purpose", "user")
        if purpose not in ("user", "shared", "room", "equipment", "linked", "others", "none"):
            raise FixtureError(f"{user_where}.purpose: '{purpose}' is not a mailbox purpose (or 'none')")
        upn = user.get("upn") or f"{key}@{tenant.domain}"
        explicit.append(
            UserRecord(
                id=user.get("id") or stable_id(tenant.tenant_id, "user", key),
                display_name=user.get("display_name", key),
                user_principal_name=upn,
                mail=user.get("mail", None if purpose == "none" else upn),
                account_enabled=bool(user.get("enabled", purpose in ("user", "linked"))),
                licensed=bool(user.get("licensed", purpose in ("user", "linked"))),
                user_type=user.get("user_type", "Member"),
                purpose=None if purpose == "none" else purpose,
                mailbox_access_denied=bool(user.get("mailbox_access_denied", False)),
                # A mailbox hosted on-premises belongs to a synced user unless the fixture says otherwise.
                synced=bool(user.get("synced", on_premises is not None)),
                mailbox_on_premises=on_premises,
            )
        )
    synthetic = None
    if spec.get("count"):
        try:
            synthetic = SyntheticUsers(
                namespace=uuid.UUID(tenant.tenant_id).int >> 64,
                domain=tenant.domain,
                count=int(spec["count"]),
                shared=int(spec.get("shared", 0)),
                room=int(spec.get("room", 0)),
                equipment=int(spec.get("equipment", 0)),
                no_mailbox=int(spec.get("no_mailbox", 0)),
                shared_signin_enabled=int(spec.get("shared_signin_enabled", 0)),
                shared_licensed=int(spec.get("shared_licensed", 0)),
                on_premises=int(spec.get("on_premises", 0)),
            )
        except ValueError as exc:
            raise FixtureError(f"{where}: {exc}") from exc
    return UserDirectory(explicit, synthetic)
