"""TOML config file -> validated, frozen settings (DESIGN §3.2).

Validation is strict on purpose: an unknown key is far more likely a typo that silently disables a
setting than a deliberate extra, so it is an error with a did-you-mean suggestion. Every error is a
:class:`~auditor.errors.ConfigError` whose ``str()`` is one line naming the file, the key path, what is
wrong and how to fix it.

Secrets never live in the file. The file names an environment variable (``client_secret_env``,
``certificate_password_env``) or a certificate file; the values are read only when a credential is built,
so a missing environment variable is reported per tenant by the credential layer, not here.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

from auditor.constants import (
    CLOUDS,
    DEFAULT_APP_DISPLAY_NAME,
    DEFAULT_CLOUD,
    EXCHANGE_MANAGE_AS_APP_ROLE_VALUE,
    GRAPH_API_VERSION,
    graph_scope,
)
from auditor.errors import ConfigError

__all__ = [
    "AuditConfig",
    "AuthMethod",
    "BillingSettings",
    "EffectiveAuth",
    "RemediationSettings",
    "RunSettings",
    "TenantConfig",
    "VendorSettings",
    "did_you_mean",
    "load_config",
    "parse_config",
    "select_tenants",
]


class AuthMethod(StrEnum):
    """How the auditor signs in to a tenant (app-only, client credentials)."""

    CERTIFICATE = "certificate"
    SECRET = "secret"  # noqa: S105 - the method name, not a secret
    WORKLOAD_IDENTITY = "workload_identity"
    MANAGED_IDENTITY = "managed_identity"


@dataclass(frozen=True)
class VendorSettings:
    """How to recognise the vendor's service principal and what it must hold."""

    app_display_name: str = DEFAULT_APP_DISPLAY_NAME
    app_id: str = ""  # pinned appId: the strongest identification
    publisher_tenant_id: str = ""  # the vendor's tenant, i.e. the SP's appOwnerOrganizationId
    exchange_app_role: str = EXCHANGE_MANAGE_AS_APP_ROLE_VALUE  # "" turns the Exchange check off

    @property
    def checks_exchange(self) -> bool:
        """Whether the Exchange Online app role is part of the compliance verdict."""
        return bool(self.exchange_app_role)


@dataclass(frozen=True)
class BillingSettings:
    """What the vendor charges per billed (shared) mailbox per month."""

    price_per_mailbox: float = 0.0
    currency: str = "GBP"


@dataclass(frozen=True)
class RunSettings:
    """Fleet-level run limits."""

    concurrency: int = 8
    tenant_timeout_seconds: float = 600.0  # the whole audit of one tenant, retries and waits included
    request_timeout_seconds: float = 60.0  # one HTTP request (Graph or sign-in) without an answer


@dataclass(frozen=True)
class RemediationSettings:
    """How `--remediate` waits for a new role assignment to become visible (directory replication)."""

    verify_timeout_seconds: float = 60.0


@dataclass(frozen=True)
class EffectiveAuth:
    """Everything needed to build one tenant's credential and Graph client, after defaults, per-tenant
    overrides and the cloud table have been applied. Secrets are referenced by env var name only."""

    method: AuthMethod
    client_id: str | None
    cloud: str
    authority: str  # e.g. https://login.microsoftonline.com
    graph_endpoint: str  # e.g. https://graph.microsoft.com (no /v1.0)
    scope: str  # "<graph_endpoint>/.default"
    client_secret_env: str | None = None
    certificate_path: Path | None = None
    certificate_password_env: str | None = None
    token_file_path: Path | None = None
    ca_bundle: Path | None = None

    @property
    def graph_base_url(self) -> str:
        """The Graph v1.0 base URL requests are sent to."""
        return f"{self.graph_endpoint}/{GRAPH_API_VERSION}"


@dataclass(frozen=True)
class TenantConfig:
    """One ``[[tenants]]`` entry, fully resolved."""

    name: str
    tenant_id: str  # lower-case GUID
    auth: EffectiveAuth
    price_per_mailbox: float  # the tenant's override, else [billing].price_per_mailbox
    tags: tuple[str, ...] = ()
    remediate: bool = True  # may --remediate write in this tenant?
    # A separate credential for --remediate's one write (RoleManagement.ReadWrite.Directory), so the nightly
    # read-only identity need not hold it; None: write with `auth`.
    write_auth: EffectiveAuth | None = None

    @property
    def label(self) -> str:
        """``Name (tenant id)``: how messages and logs name the tenant."""
        return f"{self.name} ({self.tenant_id})"

    @property
    def remediation_auth(self) -> EffectiveAuth:
        """The credential remediation writes with."""
        return self.write_auth or self.auth


@dataclass(frozen=True)
class AuditConfig:
    """The whole validated config file."""

    path: Path
    tenants: tuple[TenantConfig, ...]
    vendor: VendorSettings = field(default_factory=VendorSettings)
    billing: BillingSettings = field(default_factory=BillingSettings)
    run: RunSettings = field(default_factory=RunSettings)
    remediation: RemediationSettings = field(default_factory=RemediationSettings)
    # [history] and [notifications] are validated by the modules that use them (auditor.history,
    # auditor.notify) when a run starts; here they are kept as written.
    history: Mapping[str, Any] = field(default_factory=dict)
    notifications: Mapping[str, Any] = field(default_factory=dict)


# --- keys -------------------------------------------------------------------------------------------------

_TOP_KEYS: Final = (
    "vendor",
    "billing",
    "auth",
    "remediation_auth",
    "run",
    "remediation",
    "history",
    "notifications",
    "tenants",
)
_VENDOR_KEYS: Final = ("app_display_name", "app_id", "publisher_tenant_id", "exchange_app_role")
_BILLING_KEYS: Final = ("price_per_mailbox", "currency")
_RUN_KEYS: Final = ("concurrency", "tenant_timeout_seconds", "request_timeout_seconds")
_REMEDIATION_KEYS: Final = ("verify_timeout_seconds",)
_AUTH_KEYS: Final = (
    "method",
    "client_id",
    "certificate_path",
    "certificate_password_env",
    "client_secret_env",
    "token_file_path",
    "cloud",
    "authority",
    "graph_endpoint",
    "ca_bundle",
)
_TENANT_KEYS: Final = (
    "name",
    "tenant_id",
    "tags",
    "remediate",
    "price_per_mailbox",
    "auth",
    "remediation_auth",
    *_AUTH_KEYS,
)
# Keys that say which credential to use; a level that sets one replaces all of them from lower levels.
_CREDENTIAL_KEYS: Final = (
    "method",
    "certificate_path",
    "certificate_password_env",
    "client_secret_env",
    "token_file_path",
)

# Keys that would hold a secret value. Rejected wherever they appear, with the key to use instead.
_SECRET_KEYS: Final = {
    "client_secret": "client_secret_env",
    "secret": "client_secret_env",
    "client_assertion": "client_secret_env",
    "password": "certificate_password_env",
    "certificate_password": "certificate_password_env",
    "private_key": "certificate_path",
    "certificate": "certificate_path",
    "token": "token_file_path",
    "access_token": "token_file_path",
    "api_key": "client_secret_env",
}

# Keys that pick an auth method when `method` is absent, checked at the most specific level first.
_METHOD_BY_KEY: Final = {
    "certificate_path": AuthMethod.CERTIFICATE,
    "client_secret_env": AuthMethod.SECRET,
    "token_file_path": AuthMethod.WORKLOAD_IDENTITY,
}

_GUID_RE: Final = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CURRENCY_RE: Final = re.compile(r"^[A-Z]{3}$")
_TOML_POSITION_RE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
# Kiota attaches tokens to plain-http Graph URLs only for these hosts (graph-api-notes §0.10).
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_EXAMPLE_GUID: Final = "11111111-1111-1111-1111-111111111111"


# --- public API -----------------------------------------------------------------------------------------


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate a TOML config file.

    Raises :class:`ConfigError` (one line: file, key, problem, fix) for a missing or unreadable file,
    a TOML syntax error (with line and column) or any invalid setting.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "config file not found",
            path=path,
            fix="pass --config with the path of an existing TOML file "
            "(config/example.toml shows every setting)",
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            "is a directory, not a config file", path=path, fix="pass the TOML file itself"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the config file ({exc.strerror or exc})",
            path=path,
            fix="check the path and permissions",
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (bad byte at offset {exc.start})", path=path, fix="save the file as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = column = None
        match = _TOML_POSITION_RE.search(message)
        if match:
            line, column = int(match.group(1)), int(match.group(2))
            message = message[: match.start()]
        elif message.endswith("(at end of document)"):
            # e.g. an unclosed array: point at the last line, where the reader will look first.
            line = raw.count(b"\n") or 1
            message = message.removesuffix("(at end of document)").rstrip() + " at end of file"
        raise ConfigError(
            f"TOML syntax error: {message}",
            path=path,
            line=line,
            column=column,
            fix="correct the TOML at that position (strings need double quotes, lists square brackets)",
        ) from None
    return parse_config(data, path=path)


def parse_config(data: Mapping[str, Any], *, path: str | Path) -> AuditConfig:
    """Validate already-parsed TOML data. ``path`` is used in messages and as the base directory of
    relative paths (the config file's directory)."""
    return _Parser(Path(path)).parse(data)


def select_tenants(
    config: AuditConfig, names_or_ids: Sequence[str] = (), tags: Sequence[str] = ()
) -> list[TenantConfig]:
    """Tenants chosen by ``--tenant`` / ``--tag`` options, in config file order.

    With neither option every tenant is selected. Otherwise a tenant is selected when it matches any
    given name or tenant id, or carries any given tag (a union: each option adds tenants). Names, ids and
    tags match case-insensitively. An unknown name/id or a tag no tenant carries is a :class:`ConfigError`
    listing the valid values, because a typo would otherwise silently audit nothing.
    """
    if not names_or_ids and not tags:
        return list(config.tenants)
    wanted: set[int] = set()
    for wanted_name in names_or_ids:
        needle = wanted_name.strip().casefold()
        hits = [i for i, t in enumerate(config.tenants) if needle in (t.name.casefold(), t.tenant_id)]
        if not hits:
            valid = ", ".join(t.name for t in config.tenants)
            raise ConfigError(
                f"--tenant {wanted_name!r} matches no tenant name or tenant_id in the config",
                path=config.path,
                key="tenants",
                fix=f"use one of: {valid}" + did_you_mean(wanted_name, [t.name for t in config.tenants]),
            )
        wanted.update(hits)
    # Tags match case-insensitively, so list each once (first spelling seen).
    known_tags = sorted(
        {tag.casefold(): tag for t in reversed(config.tenants) for tag in t.tags}.values(), key=str.casefold
    )
    for tag in tags:
        needle = tag.strip().casefold()
        hits = [i for i, t in enumerate(config.tenants) if needle in {x.casefold() for x in t.tags}]
        if not hits:
            raise ConfigError(
                f"--tag {tag!r} is not carried by any tenant",
                path=config.path,
                key="tenants.tags",
                fix=(f"use one of: {', '.join(known_tags)}" if known_tags else "no tenant has tags")
                + did_you_mean(tag, known_tags),
            )
        wanted.update(hits)
    return [t for i, t in enumerate(config.tenants) if i in wanted]


# --- implementation -------------------------------------------------------------------------------------


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``word`` (any case), or ``""``; shared by every
    settings table (`[history]`, `[notifications]`)."""
    choices = list(choices)
    folded = {c.casefold(): c for c in choices}
    needle = word.casefold()
    close = difflib.get_close_matches(needle, list(folded), n=1, cutoff=0.6)
    if not close and len(needle) >= 3:
        # difflib misses abbreviations ("price" for "price_per_mailbox"); a unique prefix/substring is a hint.
        close = [c for c in folded if c.startswith(needle) or needle in c][:1]
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""


def _type_name(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class _AuthLayer:
    """The auth keys set at one level ([auth] or one tenant), already validated."""

    keypath: str  # "auth" or "tenants[3]"
    values: Mapping[str, Any]

    def key(self, name: str) -> str:
        return f"{self.keypath}.{name}"


def _overlay(base: _AuthLayer, top: _AuthLayer) -> _AuthLayer:
    """`top` over `base`; when `top` names a credential, none of `base`'s credential keys survive."""
    values = dict(base.values)
    if any(key in top.values for key in _CREDENTIAL_KEYS):
        for key in _CREDENTIAL_KEYS:
            values.pop(key, None)
    values.update(top.values)
    return _AuthLayer(top.keypath if top.values else base.keypath, values)


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base_dir = path.resolve().parent

    # -- error helper
    def fail(self, key: str, problem: str, fix: str = "") -> NoReturn:
        raise ConfigError(problem, path=self.path, key=key, fix=fix)

    # -- structure
    def parse(self, data: Mapping[str, Any]) -> AuditConfig:
        self.check_keys(data, _TOP_KEYS, "", what="top-level table")
        vendor = self.parse_vendor(self.table(data, "vendor"))
        billing = self.parse_billing(self.table(data, "billing"))
        run = self.parse_run(self.table(data, "run"))
        remediation = self.parse_remediation(self.table(data, "remediation"))
        defaults = self.auth_layer(self.table(data, "auth"), "auth")
        write_defaults = self.auth_layer(self.table(data, "remediation_auth"), "remediation_auth")

        raw_tenants = data.get("tenants")
        if raw_tenants is None or raw_tenants == []:
            self.fail(
                "tenants",
                "no tenants are configured",
                f'add at least one [[tenants]] table with name = "..." and tenant_id = "{_EXAMPLE_GUID}"',
            )
        if not isinstance(raw_tenants, list) or not all(isinstance(t, dict) for t in raw_tenants):
            self.fail("tenants", "must be an array of tables", "write each tenant as a [[tenants]] table")
        tenants = tuple(
            self.parse_tenant(raw, f"tenants[{i}]", defaults, billing, write_defaults)
            for i, raw in enumerate(raw_tenants)
        )
        self.check_unique(tenants)
        return AuditConfig(
            path=self.path.resolve(),
            vendor=vendor,
            billing=billing,
            run=run,
            remediation=remediation,
            tenants=tenants,
            history=MappingProxyType(dict(self.table(data, "history"))),
            notifications=MappingProxyType(dict(self.table(data, "notifications"))),
        )

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, not {_type_name(value)}", f"write it as a [{key}] section")
        return value

    def check_keys(
        self, table: Mapping[str, Any], allowed: Sequence[str], keypath: str, *, what: str
    ) -> None:
        prefix = f"{keypath}." if keypath else ""
        for key in table:
            if key in _SECRET_KEYS:
                replacement = _SECRET_KEYS[key]
                self.fail(
                    prefix + key,
                    "secrets must not be stored in the config file",
                    f"remove {key} (and rotate the secret if this file was shared); set {replacement} = "
                    + ('"/path/to/file"' if replacement.endswith("_path") else '"ENV_VAR_NAME"')
                    + (
                        " naming a file"
                        if replacement.endswith("_path")
                        else " naming an environment variable"
                    )
                    + " that holds it instead",
                )
            if key not in allowed:
                self.fail(
                    prefix + key,
                    f"unknown key in the {what}{did_you_mean(key, allowed)}",
                    f"valid keys are: {', '.join(allowed)}",
                )

    # -- sections
    def parse_vendor(self, table: Mapping[str, Any]) -> VendorSettings:
        self.check_keys(table, _VENDOR_KEYS, "vendor", what="[vendor] section")
        name = self.string(table, "app_display_name", "vendor", DEFAULT_APP_DISPLAY_NAME).strip()
        app_id = self.guid(table, "app_id", "vendor", allow_empty=True, echo=True)
        publisher = self.guid(table, "publisher_tenant_id", "vendor", allow_empty=True, echo=True)
        role = self.string(table, "exchange_app_role", "vendor", EXCHANGE_MANAGE_AS_APP_ROLE_VALUE).strip()
        if not (name or app_id or publisher):
            self.fail(
                "vendor.app_display_name",
                "is empty and neither app_id nor publisher_tenant_id is set: the vendor app cannot be found",
                f'set app_id (recommended) or app_display_name = "{DEFAULT_APP_DISPLAY_NAME}"',
            )
        return VendorSettings(
            app_display_name=name, app_id=app_id, publisher_tenant_id=publisher, exchange_app_role=role
        )

    def parse_billing(self, table: Mapping[str, Any]) -> BillingSettings:
        self.check_keys(table, _BILLING_KEYS, "billing", what="[billing] section")
        price = self.price(table, "price_per_mailbox", "billing", 0.0)
        currency = self.string(table, "currency", "billing", "GBP").strip().upper()
        if not _CURRENCY_RE.match(currency):
            self.fail(
                "billing.currency", f"{currency!r} is not a 3-letter currency code", 'e.g. currency = "GBP"'
            )
        return BillingSettings(price_per_mailbox=price, currency=currency)

    def parse_run(self, table: Mapping[str, Any]) -> RunSettings:
        self.check_keys(table, _RUN_KEYS, "run", what="[run] section")
        concurrency = table.get("concurrency", 8)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 1000:
            self.fail(
                "run.concurrency",
                f"must be a whole number from 1 to 1000, not {concurrency!r}",
                "e.g. concurrency = 8 (tenants audited at the same time)",
            )
        timeout = table.get("tenant_timeout_seconds", 600.0)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            self.fail(
                "run.tenant_timeout_seconds",
                f"must be a positive number of seconds, not {timeout!r}",
                "e.g. tenant_timeout_seconds = 600",
            )
        request_timeout = table.get("request_timeout_seconds", min(60.0, float(timeout)))
        if (
            isinstance(request_timeout, bool)
            or not isinstance(request_timeout, int | float)
            or not math.isfinite(request_timeout)
            or request_timeout <= 0
            or request_timeout > timeout
        ):
            self.fail(
                "run.request_timeout_seconds",
                f"must be a positive number of seconds, at most run.tenant_timeout_seconds ({timeout:g}), "
                f"not {request_timeout!r}",
                "e.g. request_timeout_seconds = 60 (how long one Graph or sign-in request may go unanswered)",
            )
        return RunSettings(
            concurrency=concurrency,
            tenant_timeout_seconds=float(timeout),
            request_timeout_seconds=float(request_timeout),
        )

    def parse_remediation(self, table: Mapping[str, Any]) -> RemediationSettings:
        self.check_keys(table, _REMEDIATION_KEYS, "remediation", what="[remediation] section")
        verify = table.get("verify_timeout_seconds", 60.0)
        if (
            isinstance(verify, bool)
            or not isinstance(verify, int | float)
            or not math.isfinite(verify)
            or not 0 <= verify <= 3600
        ):
            self.fail(
                "remediation.verify_timeout_seconds",
                f"must be a number of seconds from 0 to 3600, not {verify!r}",
                "e.g. verify_timeout_seconds = 60 (how long to wait for a new assignment to be readable)",
            )
        return RemediationSettings(verify_timeout_seconds=float(verify))

    def parse_tenant(
        self,
        table: Mapping[str, Any],
        keypath: str,
        defaults: _AuthLayer,
        billing: BillingSettings,
        write_defaults: _AuthLayer | None = None,
    ) -> TenantConfig:
        self.check_keys(table, _TENANT_KEYS, keypath, what="[[tenants]] table")
        name_value = table.get("name")
        if not isinstance(name_value, str) or not name_value.strip():
            self.fail(f"{keypath}.name", "every tenant needs a non-empty name", 'e.g. name = "Contoso"')
        name = name_value.strip()
        label = f"tenant {name!r}"
        if "tenant_id" not in table:
            self.fail(
                f"{keypath}.tenant_id",
                f"{label} has no tenant_id",
                f'add tenant_id = "{_EXAMPLE_GUID}" (the Directory (tenant) ID from the Entra admin center)',
            )
        tenant_id = self.guid(table, "tenant_id", keypath, allow_empty=False, echo=True, label=label)

        tags_value = table.get("tags", [])
        if not isinstance(tags_value, list) or not all(isinstance(t, str) and t.strip() for t in tags_value):
            self.fail(
                f"{keypath}.tags", f"{label}: must be a list of non-empty strings", 'e.g. tags = ["gold"]'
            )
        tags = tuple(dict.fromkeys(t.strip() for t in tags_value))  # de-duplicated, order kept

        remediate = table.get("remediate", True)
        if not isinstance(remediate, bool):
            self.fail(f"{keypath}.remediate", f"{label}: must be true or false", "e.g. remediate = false")

        price = self.price(table, "price_per_mailbox", keypath, billing.price_per_mailbox, label=label)

        # Per-tenant auth overrides may be written flat in [[tenants]] or in a [tenants.auth] sub-table.
        flat = {k: v for k, v in table.items() if k in _AUTH_KEYS}
        nested_raw = table.get("auth", {})
        if not isinstance(nested_raw, dict):
            self.fail(f"{keypath}.auth", f"{label}: must be a table", "write it as [tenants.auth]")
        self.check_keys(nested_raw, _AUTH_KEYS, f"{keypath}.auth", what="[tenants.auth] table")
        for key in flat.keys() & nested_raw.keys():
            self.fail(
                f"{keypath}.auth.{key}",
                f"{label}: set both in [[tenants]] and in [tenants.auth]",
                "keep only one of them",
            )
        overrides = self.auth_layer({**flat, **nested_raw}, keypath)
        auth = self.resolve_auth(defaults, overrides, label)
        write_raw = table.get("remediation_auth", {})
        if not isinstance(write_raw, dict):
            self.fail(
                f"{keypath}.remediation_auth",
                f"{label}: must be a table",
                "write it as [tenants.remediation_auth]",
            )
        self.check_keys(
            write_raw, _AUTH_KEYS, f"{keypath}.remediation_auth", what="[tenants.remediation_auth] table"
        )
        write_auth = None
        write_layer = self.auth_layer(write_raw, f"{keypath}.remediation_auth")
        if write_raw or (write_defaults is not None and write_defaults.values):
            # Most specific first: the tenant's remediation_auth, [remediation_auth], the tenant, [auth].
            layered = _overlay(overrides, write_defaults) if write_defaults is not None else overrides
            write_auth = self.resolve_auth(defaults, _overlay(layered, write_layer), label)
        return TenantConfig(
            name=name,
            tenant_id=tenant_id,
            tags=tags,
            remediate=remediate,
            price_per_mailbox=price,
            auth=auth,
            write_auth=write_auth,
        )

    def check_unique(self, tenants: Sequence[TenantConfig]) -> None:
        seen_names: dict[str, int] = {}
        seen_ids: dict[str, int] = {}
        for i, tenant in enumerate(tenants):
            first = seen_names.setdefault(tenant.name.casefold(), i)
            if first != i:
                self.fail(
                    f"tenants[{i}].name",
                    f"duplicate tenant name {tenant.name!r} (also tenants[{first}]; names ignore case)",
                    "give each tenant a unique name",
                )
            first = seen_ids.setdefault(tenant.tenant_id, i)
            if first != i:
                self.fail(
                    f"tenants[{i}].tenant_id",
                    f"duplicate tenant_id {tenant.tenant_id} (tenant {tenant.name!r} and "
                    f"tenants[{first}] {tenants[first].name!r})",
                    "list each tenant once",
                )

    # -- auth
    def auth_layer(self, table: Mapping[str, Any], keypath: str) -> _AuthLayer:
        if keypath in ("auth", "remediation_auth"):
            self.check_keys(table, _AUTH_KEYS, keypath, what=f"[{keypath}] section")
        values: dict[str, Any] = {}
        for key, value in table.items():
            where = f"{keypath}.{key}"
            if key == "method":
                choices = [m.value for m in AuthMethod]
                if not isinstance(value, str) or value.strip().lower() not in choices:
                    shown = value if isinstance(value, str) else _type_name(value)
                    self.fail(
                        where,
                        f"unknown method {shown!r}{did_you_mean(str(value), choices)}",
                        f"use one of: {', '.join(choices)}",
                    )
                values[key] = AuthMethod(value.strip().lower())
            elif key == "client_id":
                values[key] = self.guid(table, key, keypath, allow_empty=False, echo=False)
            elif key in ("certificate_path", "token_file_path", "ca_bundle"):
                values[key] = self.path_value(table, key, keypath)
            elif key in ("client_secret_env", "certificate_password_env"):
                values[key] = self.env_name(table, key, keypath)
            elif key == "cloud":
                cloud = self.string(table, key, keypath, DEFAULT_CLOUD).strip().lower()
                if cloud not in CLOUDS:
                    self.fail(
                        where,
                        f"unknown cloud {cloud!r}{did_you_mean(cloud, CLOUDS)}",
                        f"use one of: {', '.join(CLOUDS)}",
                    )
                values[key] = cloud
            elif key in ("authority", "graph_endpoint"):
                values[key] = self.url(table, key, keypath)
        return _AuthLayer(keypath, values)

    def method_of(self, layer: _AuthLayer) -> AuthMethod | None:
        """The auth method a level asks for: explicit ``method``, else implied by a credential key."""
        if "method" in layer.values:
            method: AuthMethod = layer.values["method"]
            return method
        implied = [key for key in _METHOD_BY_KEY if key in layer.values]
        if len(implied) > 1:
            self.fail(
                layer.key(implied[1]),
                f"both {implied[0]} and {implied[1]} are set, so the auth method is ambiguous",
                f'add method = "{_METHOD_BY_KEY[implied[0]].value}" or "{_METHOD_BY_KEY[implied[1]].value}"',
            )
        return _METHOD_BY_KEY[implied[0]] if implied else None

    def resolve_auth(self, defaults: _AuthLayer, tenant: _AuthLayer, label: str) -> EffectiveAuth:
        # The most specific level that says anything about the credential decides the method, so a tenant
        # that sets client_secret_env uses a secret even when [auth] sets a certificate.
        method = self.method_of(tenant) or self.method_of(defaults)
        if method is None:
            self.fail(
                tenant.keypath,
                f"{label} has no authentication method",
                "set certificate_path, client_secret_env, token_file_path or method in [auth] or the tenant",
            )

        def pick(key: str) -> Any:
            return tenant.values.get(key, defaults.values.get(key))

        def require(key: str) -> Any:
            value = pick(key)
            if value is None:
                self.fail(
                    tenant.key(key),
                    f"{label}: auth method {method.value!r} needs {key}",
                    f"set {key} in [auth] or in this tenant",
                )
            return value

        client_id: str | None = (
            pick("client_id") if method is AuthMethod.MANAGED_IDENTITY else require("client_id")
        )
        secret_env = require("client_secret_env") if method is AuthMethod.SECRET else None
        cert_path = require("certificate_path") if method is AuthMethod.CERTIFICATE else None
        cert_password_env = pick("certificate_password_env") if method is AuthMethod.CERTIFICATE else None
        token_file = pick("token_file_path") if method is AuthMethod.WORKLOAD_IDENTITY else None

        # A tenant that names its own cloud gets that cloud's endpoints, not endpoint overrides inherited
        # from [auth]; explicit endpoint overrides at the same or a more specific level still win.
        cloud: str = pick("cloud") or DEFAULT_CLOUD
        endpoints = CLOUDS[cloud]

        def endpoint(key: str, cloud_value: str) -> str:
            if key in tenant.values:
                value: str = tenant.values[key]
                return value
            if "cloud" in tenant.values or key not in defaults.values:
                return cloud_value
            inherited: str = defaults.values[key]
            return inherited

        authority = endpoint("authority", endpoints.authority)
        graph_endpoint = endpoint("graph_endpoint", endpoints.graph_endpoint)
        return EffectiveAuth(
            method=method,
            client_id=client_id,
            cloud=cloud,
            authority=authority,
            graph_endpoint=graph_endpoint,
            scope=graph_scope(graph_endpoint),
            client_secret_env=secret_env,
            certificate_path=cert_path,
            certificate_password_env=cert_password_env,
            token_file_path=token_file,
            ca_bundle=pick("ca_bundle"),
        )

    # -- scalar validators
    def string(self, table: Mapping[str, Any], key: str, keypath: str, default: str) -> str:
        value = table.get(key, default)
        if not isinstance(value, str):
            self.fail(f"{keypath}.{key}", f"must be a string, not {_type_name(value)}", f'e.g. {key} = "..."')
        return value

    def guid(
        self,
        table: Mapping[str, Any],
        key: str,
        keypath: str,
        *,
        allow_empty: bool,
        echo: bool,
        label: str = "",
    ) -> str:
        value = table.get(key, "")
        where = f"{keypath}.{key}"
        prefix = f"{label}: " if label else ""
        if not isinstance(value, str):
            self.fail(
                where,
                f"{prefix}must be a GUID string, not {_type_name(value)}",
                f'e.g. {key} = "{_EXAMPLE_GUID}"',
            )
        value = value.strip()
        if not value and allow_empty:
            return ""
        if not _GUID_RE.match(value):
            # client ids are not echoed: people paste secrets into the wrong field, and messages get logged.
            shown = f"{value!r} " if echo and len(value) <= 80 else ""
            self.fail(
                where,
                f"{prefix}{shown}is not a GUID" if shown else f"{prefix}is not a GUID",
                f'use the form {key} = "{_EXAMPLE_GUID}"'
                + (
                    " (the Directory (tenant) ID in the Entra admin center overview)"
                    if key == "tenant_id"
                    else ""
                ),
            )
        return value.lower()

    def env_name(self, table: Mapping[str, Any], key: str, keypath: str) -> str:
        value = table[key]
        if not isinstance(value, str) or not _ENV_NAME_RE.match(value.strip()):
            # Never echo the value: if it is not a variable name it is probably the secret itself.
            self.fail(
                f"{keypath}.{key}",
                "must be the NAME of an environment variable (letters, digits, underscore), not the secret",
                f'e.g. {key} = "AUDITOR_CLIENT_SECRET", then export that variable before running',
            )
        return value.strip()

    def path_value(self, table: Mapping[str, Any], key: str, keypath: str) -> Path:
        value = table[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(
                f"{keypath}.{key}",
                "must be a non-empty file path string",
                f'e.g. {key} = "secrets/auditor.pem"',
            )
        path = Path(value.strip()).expanduser()
        # Relative paths are relative to the config file, not to wherever the scheduler starts the job.
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    def url(self, table: Mapping[str, Any], key: str, keypath: str) -> str:
        value = table[key]
        where = f"{keypath}.{key}"
        example = f'e.g. {key} = "https://{"login" if key == "authority" else "graph"}.example.com"'
        if not isinstance(value, str):
            self.fail(where, f"must be a URL string, not {_type_name(value)}", example)
        text = value.strip().rstrip("/")
        if key == "graph_endpoint" and text.lower().endswith("/" + GRAPH_API_VERSION):
            # The API version is added by the client; accept it written out but store the bare endpoint.
            text = text[: -len(GRAPH_API_VERSION) - 1]
        parts = urlsplit(text)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            self.fail(where, f"{value!r} is not an absolute https URL", example)
        if parts.scheme == "http" and (key == "authority" or parts.hostname not in _LOCAL_HOSTS):
            # azure-identity refuses non-TLS authorities; kiota sends tokens over http only to loopback hosts.
            self.fail(
                where,
                f"{value!r} must use https"
                + ("" if key == "authority" else " (plain http is only accepted for localhost)"),
                example,
            )
        return text

    def price(
        self, table: Mapping[str, Any], key: str, keypath: str, default: float, *, label: str = ""
    ) -> float:
        value = table.get(key, default)
        prefix = f"{label}: " if label else ""
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            self.fail(
                f"{keypath}.{key}",
                f"{prefix}must be a number >= 0 (price per mailbox per month), not {value!r}",
                f"e.g. {key} = 2.50",
            )
        return float(value)
