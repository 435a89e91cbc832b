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
import logging
import math
import re
import ssl
import stat
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
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

log = logging.getLogger(__name__)

__all__ = [
    "MAX_PRICE",
    "AuditConfig",
    "AuthMethod",
    "BillingSettings",
    "CensusSettings",
    "EffectiveAuth",
    "RemediationSettings",
    "ReportSettings",
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
class CensusSettings:
    """``[census]``: the incremental mailbox census (auditor.census)."""

    # Every mailbox's purpose is re-read at least this often (a conversion to shared makes no directory
    # change, so the users delta cannot report it); 0 reads every mailbox every night.
    max_age_days: int = 7


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
class ReportSettings:
    """``[reports]``: how the report files are written."""

    # The permission bits every new report file gets (audit.json/html/xlsx, remediation journal, shard.json),
    # whatever was there before: 0o644 (default), 0o640 or 0o600 (reports name tenants and costs).
    file_mode: int = 0o644


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
    reports: ReportSettings = field(default_factory=ReportSettings)
    census: CensusSettings = field(default_factory=CensusSettings)
    # [auth] allow_custom_endpoints: endpoints that are not the chosen cloud's Microsoft hosts are accepted
    # (the simulator, tests); `custom_endpoints` lists each such setting as (key path, URL), for the warning.
    allow_custom_endpoints: bool = False
    custom_endpoints: tuple[tuple[str, str], ...] = ()


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
    "reports",
    "census",
    "tenants",
)
_CENSUS_KEYS: Final = ("max_age_days",)
_REPORTS_KEYS: Final = ("file_mode",)
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
# Only in [auth]: a fleet-wide opt-in, never per tenant (one tenant's table must not widen where the shared
# client secret may go).
_ALLOW_CUSTOM_KEY: Final = "allow_custom_endpoints"
_AUTH_SECTION_KEYS: Final = (*_AUTH_KEYS, _ALLOW_CUSTOM_KEY)
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
# A price per mailbox per month above this is a typo, not a price (it would make costs overflow).
MAX_PRICE: Final = 10_000
MAX_PRICE_DECIMALS: Final = 4
# Certificate files are a few kB; a CA bundle (e.g. certifi's) a few hundred kB. Anything far larger is
# the wrong file, and is never read into memory.
MAX_CERTIFICATE_BYTES: Final = 1024 * 1024
MAX_CA_BUNDLE_BYTES: Final = 16 * 1024 * 1024
_TOML_POSITION_RE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
# Kiota attaches tokens to plain-http Graph URLs only for these hosts (graph-api-notes §0.10).
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_EXAMPLE_GUID: Final = "11111111-1111-1111-1111-111111111111"

# The Microsoft hosts each cloud signs in at and serves Graph from (graph-api-notes "National clouds":
# learn.microsoft.com graph/deployments; azure-identity KnownAuthorities). login.microsoft.com and
# login.windows.net are MSAL's well-known aliases of the global authority, login.partner.microsoftonline.cn
# of China's. Anything else receives the fleet's client secret or assertion (authority) or its bearer
# tokens (graph_endpoint), so it needs [auth] allow_custom_endpoints = true.
_MICROSOFT_HOSTS: Final = MappingProxyType(
    {
        "global": {
            "authority": frozenset({"login.microsoftonline.com", "login.microsoft.com", "login.windows.net"}),
            "graph_endpoint": frozenset({"graph.microsoft.com"}),
        },
        "usgov": {
            "authority": frozenset({"login.microsoftonline.us"}),
            "graph_endpoint": frozenset({"graph.microsoft.us"}),
        },
        "usgov-dod": {
            "authority": frozenset({"login.microsoftonline.us"}),
            "graph_endpoint": frozenset({"dod-graph.microsoft.us"}),
        },
        "china": {
            "authority": frozenset({"login.chinacloudapi.cn", "login.partner.microsoftonline.cn"}),
            "graph_endpoint": frozenset({"microsoftgraph.chinacloudapi.cn"}),
        },
    }
)


def is_microsoft_endpoint(url: str, key: str, cloud: str) -> bool:
    """Whether ``url`` (an ``authority`` or ``graph_endpoint``) is a Microsoft host of ``cloud``: https,
    default port, no user info."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and parts.username is None
        and port in (None, 443)
        and (parts.hostname or "") in _MICROSOFT_HOSTS.get(cloud, {}).get(key, frozenset())
    )


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
        # utf-8-sig: Notepad and PowerShell save UTF-8 with a byte-order mark, which TOML itself does not allow.
        data = tomllib.loads(raw.decode("utf-8-sig"))
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
    config = parse_config(data, path=path)
    warn_custom_endpoints(config)
    return config


def warn_custom_endpoints(config: AuditConfig) -> None:
    """Log a warning naming every endpoint that is not a Microsoft host (allowed by
    ``allow_custom_endpoints``): the fleet's secrets and tokens go there. Called on every config load."""
    if not config.custom_endpoints:
        return
    urls: dict[str, list[str]] = {}
    for keypath, url in config.custom_endpoints:
        urls.setdefault(url, []).append(keypath)
    where = "; ".join(f"{url} ({', '.join(dict.fromkeys(keys))})" for url, keys in urls.items())
    log.warning(
        "%s: allow_custom_endpoints = true: client secrets, assertions and access tokens are sent to "
        "endpoints that are not Microsoft's: %s",
        config.path,
        where,
        extra={"event": "custom_endpoints"},
    )


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
    # Where each value was written (full key path), so an error names the key the user has to change.
    sources: Mapping[str, str] = field(default_factory=dict)

    def key(self, name: str) -> str:
        return f"{self.keypath}.{name}"

    def source(self, name: str) -> str:
        """The key path ``name`` was written at."""
        return self.sources.get(name) or self.key(name)


def _overlay(base: _AuthLayer, top: _AuthLayer) -> _AuthLayer:
    """`top` over `base`; when `top` names a credential, none of `base`'s credential keys survive."""
    values = dict(base.values)
    sources = {key: base.source(key) for key in base.values}
    if any(key in top.values for key in _CREDENTIAL_KEYS):
        for key in _CREDENTIAL_KEYS:
            values.pop(key, None)
            sources.pop(key, None)
    values.update(top.values)
    sources.update({key: top.source(key) for key in top.values})
    return _AuthLayer(top.keypath if top.values else base.keypath, values, sources)


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base_dir = path.resolve().parent
        self.allow_custom_endpoints = False
        self.custom_endpoints: dict[tuple[str, str], None] = {}  # (key path, URL), in order, once each

    # -- error helper
    def fail(self, key: str, problem: str, fix: str = "") -> NoReturn:
        raise ConfigError(problem, path=self.path, key=key, fix=fix)

    # -- structure
    def parse(self, data: Mapping[str, Any]) -> AuditConfig:
        self.check_keys(data, _TOP_KEYS, "", what="top-level table")
        vendor = self.parse_vendor(self.table(data, "vendor"))
        billing = self.parse_billing(self.table(data, "billing"))
        run = self.parse_run(self.table(data, "run"))
        auth_table = self.table(data, "auth")
        allow_custom = auth_table.get(_ALLOW_CUSTOM_KEY, False)
        if not isinstance(allow_custom, bool):
            self.fail(
                f"auth.{_ALLOW_CUSTOM_KEY}",
                f"must be true or false, not {_type_name(allow_custom)}",
                f"e.g. {_ALLOW_CUSTOM_KEY} = false",
            )
        self.allow_custom_endpoints = allow_custom
        remediation = self.parse_remediation(self.table(data, "remediation"))
        defaults = self.auth_layer(auth_table, "auth")
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
            reports=self.parse_reports(self.table(data, "reports")),
            census=self.parse_census(self.table(data, "census")),
            allow_custom_endpoints=self.allow_custom_endpoints,
            custom_endpoints=tuple(self.custom_endpoints),
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

    def parse_reports(self, table: Mapping[str, Any]) -> ReportSettings:
        self.check_keys(table, _REPORTS_KEYS, "reports", what="[reports] section")
        value = table.get("file_mode", "0644")
        modes = {"0644": 0o644, "0640": 0o640, "0600": 0o600}
        if not isinstance(value, str) or value.strip() not in modes:
            shown = repr(value) if isinstance(value, str) else _type_name(value)
            self.fail(
                "reports.file_mode",
                f"must be one of {', '.join(repr(m) for m in modes)} (a quoted octal mode), not {shown}; "
                "report files are never group- or world-writable",
                'e.g. file_mode = "0640" (readable by the owner\'s group only)',
            )
        return ReportSettings(file_mode=modes[value.strip()])

    def parse_census(self, table: Mapping[str, Any]) -> CensusSettings:
        self.check_keys(table, _CENSUS_KEYS, "census", what="[census] section")
        days = table.get("max_age_days", 7)
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 90:
            self.fail(
                "census.max_age_days",
                f"must be a whole number of days from 0 to 90, not {days!r}",
                "e.g. max_age_days = 7 (every mailbox's purpose is re-read at least weekly; 0: every night)",
            )
        return CensusSettings(max_age_days=days)

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
        for where, sub in (
            (keypath, table),
            (f"{keypath}.auth", table.get("auth")),
            (f"{keypath}.remediation_auth", table.get("remediation_auth")),
        ):
            if isinstance(sub, dict):
                self.check_allow_custom_placement(sub, where)
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
        overrides = replace(
            overrides, sources={key: f"{keypath}.auth.{key}" for key in nested_raw if key in _AUTH_KEYS}
        )
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
            allowed = _AUTH_SECTION_KEYS if keypath == "auth" else _AUTH_KEYS
            self.check_allow_custom_placement(table, keypath)
            self.check_keys(table, allowed, keypath, what=f"[{keypath}] section")
        values: dict[str, Any] = {}
        for key, value in table.items():
            where = f"{keypath}.{key}"
            if key == _ALLOW_CUSTOM_KEY:
                continue  # read once for the fleet in parse()
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
                if key == "ca_bundle":
                    self.check_ca_bundle(values[key], where)
                elif key == "certificate_path":
                    self.check_certificate(values[key], where)
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

    def check_allow_custom_placement(self, table: Mapping[str, Any], keypath: str) -> None:
        if _ALLOW_CUSTOM_KEY in table and keypath != "auth":
            self.fail(
                f"{keypath}.{_ALLOW_CUSTOM_KEY}",
                "can only be set in the [auth] section, for the whole fleet",
                f"move {_ALLOW_CUSTOM_KEY} = true to [auth] (only for the simulator or a test double: the "
                "fleet's secrets and tokens then go to non-Microsoft hosts)",
            )

    def check_endpoint(self, url: str, key: str, cloud: str, source: str) -> None:
        """Refuse an ``authority``/``graph_endpoint`` that is not a Microsoft host of the tenant's cloud,
        unless the fleet allows custom endpoints (then it is remembered for the warning)."""
        if is_microsoft_endpoint(url, key, cloud):
            return
        if self.allow_custom_endpoints:
            self.custom_endpoints[(source, url)] = None
            return
        hosts = sorted(_MICROSOFT_HOSTS[cloud][key])
        sends = "the client secret or assertion" if key == "authority" else "bearer tokens"
        self.fail(
            source,
            f"{url!r} is not a Microsoft {'sign-in' if key == 'authority' else 'Graph'} host of cloud "
            f"{cloud!r}, and the auditor would send it {sends}",
            f"remove {key} (cloud = {cloud!r} already uses https://{hosts[0]}), or use one of: "
            + ", ".join(f"https://{h}" for h in hosts)
            + f"; only for the simulator or a test double set {_ALLOW_CUSTOM_KEY} = true in [auth]",
        )

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
                self.check_endpoint(value, key, cloud, tenant.source(key))
                return value
            if "cloud" in tenant.values or key not in defaults.values:
                return cloud_value
            inherited: str = defaults.values[key]
            self.check_endpoint(inherited, key, cloud, defaults.source(key))
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

    def regular_file(self, path: Path, where: str, limit: int, *, required: bool) -> bool:
        """Whether ``path`` is a regular file of at most ``limit`` bytes (False: missing and not
        ``required``); fails naming the key otherwise. Looked at with stat(), never read whole."""
        try:
            info = path.stat()
        except FileNotFoundError:
            if not required:
                return False
            self.fail(where, f"file {path} does not exist", "point it at an existing PEM file")
        except OSError as exc:
            self.fail(where, f"cannot read {path} ({exc.strerror or exc})", "check the path and permissions")
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a special file"
            self.fail(where, f"{path} is {kind}, not a regular file", "point it at the PEM file itself")
        if info.st_size > limit:
            self.fail(
                where,
                f"{path} is too large for a certificate file ({info.st_size:,} bytes; at most {limit:,})",
                "point it at the PEM file itself, not at an archive or a disk image",
            )
        return True

    def check_ca_bundle(self, path: Path, where: str) -> None:
        """``ca_bundle`` must exist and hold CA certificates that TLS can load (a broken one would fail
        every tenant as AUTH_FAILED, with a hint about client ids and secrets)."""
        self.regular_file(path, where, MAX_CA_BUNDLE_BYTES, required=True)
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(path))
        except (ssl.SSLError, OSError, ValueError) as exc:
            self.fail(
                where,
                f"{path} holds no PEM CA certificate that TLS can load ({getattr(exc, 'reason', None) or exc})",
                "point it at a PEM file of CA certificates (-----BEGIN CERTIFICATE----- blocks)",
            )

    def check_certificate(self, path: Path, where: str) -> None:
        """A ``certificate_path`` that exists must be a small regular file holding PEM blocks (or a PKCS#12
        archive). A missing one stays that tenant's CONFIG_ERROR: each shard host has its own files."""
        if not self.regular_file(path, where, MAX_CERTIFICATE_BYTES, required=False):
            return
        try:
            with path.open("rb") as handle:
                head = handle.read(MAX_CERTIFICATE_BYTES)
        except OSError as exc:
            self.fail(where, f"cannot read {path} ({exc.strerror or exc})", "check the path and permissions")
        if head[:1] == b"\x30":  # DER SEQUENCE: a PKCS#12 (.pfx) archive, which azure-identity also takes
            return
        if b"-----BEGIN " not in head or b"-----END " not in head:
            self.fail(
                where,
                f"{path} is not a PEM file (no -----BEGIN ...----- block)",
                "point it at the PEM file holding the app's private key and certificate",
            )

    def url(self, table: Mapping[str, Any], key: str, keypath: str) -> str:
        value = table[key]
        where = f"{keypath}.{key}"
        host = "login.microsoftonline.com" if key == "authority" else "graph.microsoft.com"
        example = f'e.g. {key} = "https://{host}"'
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
        fix = f"write a plain decimal number with at most {MAX_PRICE_DECIMALS} decimals, e.g. {key} = 2.50"
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(
                f"{keypath}.{key}",
                f"{prefix}must be a number >= 0 (price per mailbox per month), not {value!r}",
                fix,
            )
        # Bounded so that a cost (price x mailboxes) and a fleet's total stay exact, printable numbers: a
        # typo such as 1e25 would otherwise end tenants in INTERNAL_ERROR or lose the night's reports.
        if value < 0 or value > MAX_PRICE:
            self.fail(
                f"{keypath}.{key}",
                f"{prefix}price {value!r} is out of range: it must be a number >= 0 and at most {MAX_PRICE:,}",
                fix,
            )
        exponent = Decimal(repr(float(value))).as_tuple().exponent
        if isinstance(exponent, int) and exponent < -MAX_PRICE_DECIMALS:
            self.fail(
                f"{keypath}.{key}",
                f"{prefix}price {value!r} has more than {MAX_PRICE_DECIMALS} decimals",
                fix,
            )
        return float(value)
