"""The ``[notifications]`` table of the config file -> :class:`NotificationSettings`.

``auditor.config`` keeps ``[notifications]`` as written; it is validated here, before a run audits
anything, with the same strictness as the rest of the config: an unknown key is an error with a
did-you-mean suggestion, and every error is a :class:`~auditor.errors.ConfigError` naming the file, the
key, what is wrong and how to fix it (exit code 2).

Secrets are referenced, never written: the SMTP password and the webhook URL (a Teams or Slack webhook
URL carries its own access token) come from environment variables the file names.

```toml
[notifications]
report_url = "https://intranet.example/uss/latest/audit.html"   # optional: linked from every message

[notifications.email]                  # or [[notifications.email]] for several
when = "on_gaps"                       # always (default) | on_gaps | on_change
smtp_host = "smtp.office365.com"
smtp_port = 587                        # default: 587 starttls, 465 tls, 25 none
security = "starttls"                  # starttls (default) | tls | none (loopback relays only)
username = "uss-auditor@example.com"
password_env = "AUDITOR_SMTP_PASSWORD"
from = "uss-auditor@example.com"
to = ["billing@example.com"]
cc = []
subject_prefix = "[USS audit]"
attach = ["html", "xlsx", "json"]      # default: every report the run wrote
max_attachments_mb = 20
timeout_seconds = 30
# ca_bundle = "corp-ca.pem"

[[notifications.webhook]]              # or [notifications.webhook] for one
name = "billing channel"
format = "teams"                       # teams (Adaptive Card) | teams_messagecard | slack
url_env = "AUDITOR_TEAMS_WEBHOOK_URL"
when = "on_change"
timeout_seconds = 10
```
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, NoReturn, TypeAlias
from urllib.parse import urlsplit

from auditor.config import AuditConfig, did_you_mean
from auditor.errors import ConfigError
from auditor.reporting import FORMATS

__all__ = [
    "REPORT_FILES",
    "Channel",
    "EmailSettings",
    "NotificationSettings",
    "Policy",
    "SmtpSecurity",
    "WebhookFormat",
    "WebhookSettings",
    "is_loopback_host",
    "notification_settings",
    "parse_notifications_table",
]


class Policy(StrEnum):
    """When a channel sends (the ``when`` key)."""

    ALWAYS = "always"  # after every run
    ON_GAPS = "on_gaps"  # when a tenant has a gap or could not be audited (exit code 1 or 3)
    ON_CHANGE = "on_change"  # when a tenant's status differs from the previous run (or there is none)


class SmtpSecurity(StrEnum):
    """How the SMTP connection is protected."""

    STARTTLS = "starttls"  # plain connect, then STARTTLS before anything else (port 587)
    TLS = "tls"  # implicit TLS from the first byte (port 465)
    NONE = "none"  # no TLS: only for a relay on this machine, and never with a password


class WebhookFormat(StrEnum):
    """The message shape a webhook receiver expects."""

    TEAMS = "teams"  # Adaptive Card in a message envelope (Teams Workflows / Power Automate webhooks)
    TEAMS_MESSAGECARD = "teams_messagecard"  # legacy Office 365 connector MessageCard
    SLACK = "slack"  # Block Kit (Slack incoming webhooks)


# Report format name (as in --format) -> file name in --out, in attachment order.
REPORT_FILES: Final = {name: FORMATS[name].filename for name in ("html", "xlsx", "json")}
_DEFAULT_PORTS: Final = {SmtpSecurity.STARTTLS: 587, SmtpSecurity.TLS: 465, SmtpSecurity.NONE: 25}
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})

_TOP_KEYS: Final = ("report_url", "max_tenants_listed", "email", "webhook")
_EMAIL_KEYS: Final = (
    "name",
    "enabled",
    "when",
    "smtp_host",
    "smtp_port",
    "security",
    "username",
    "password_env",
    "from",
    "to",
    "cc",
    "subject_prefix",
    "attach",
    "max_attachments_mb",
    "timeout_seconds",
    "ca_bundle",
)
_WEBHOOK_KEYS: Final = ("name", "enabled", "when", "format", "url_env", "timeout_seconds", "ca_bundle")
# Keys that would hold a secret, with the key to use instead.
_SECRET_KEYS: Final = {
    "password": "password_env",
    "smtp_password": "password_env",
    "url": "url_env",
    "webhook_url": "url_env",
    "token": "url_env",
}
_ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOST_RE: Final = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")


@dataclass(frozen=True)
class EmailSettings:
    """One e-mail channel: an SMTP submission of an HTML summary with the reports attached."""

    name: str
    host: str
    sender: str
    recipients: tuple[str, ...]
    policy: Policy = Policy.ALWAYS
    port: int = 587
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    cc: tuple[str, ...] = ()
    username: str | None = None
    password_env: str | None = None  # the NAME of the variable holding the password
    subject_prefix: str = "[USS audit]"
    attach: tuple[str, ...] = tuple(REPORT_FILES)  # report formats to attach when they exist
    max_attachment_bytes: int = 20 * 1024 * 1024
    timeout_seconds: float = 30.0
    ca_bundle: Path | None = None

    @property
    def kind(self) -> str:
        """The channel kind, for outcomes and log lines."""
        return "email"


@dataclass(frozen=True)
class WebhookSettings:
    """One webhook channel: a JSON POST in the receiver's message format."""

    name: str
    format: WebhookFormat
    url_env: str  # the NAME of the variable holding the webhook URL (it is a secret)
    policy: Policy = Policy.ALWAYS
    timeout_seconds: float = 10.0
    ca_bundle: Path | None = None

    @property
    def kind(self) -> str:
        """The channel kind, for outcomes and log lines."""
        return "webhook"


Channel: TypeAlias = EmailSettings | WebhookSettings


@dataclass(frozen=True)
class NotificationSettings:
    """Every enabled channel, in config order, and what all messages share."""

    channels: tuple[Channel, ...] = ()
    report_url: str | None = None  # where the reports are published, linked from messages
    max_tenants_listed: int = 20  # tenants needing attention named in a message; the rest are counted


def notification_settings(config: AuditConfig) -> NotificationSettings:
    """Validate ``config.notifications`` (the raw ``[notifications]`` table). Raises :class:`ConfigError`."""
    return parse_notifications_table(config.notifications, config_path=config.path)


def parse_notifications_table(table: Mapping[str, Any], *, config_path: Path) -> NotificationSettings:
    """Validate a ``[notifications]`` table; relative paths resolve against ``config_path``'s directory."""
    return _Parser(Path(config_path)).parse(table)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# --- implementation -------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}
    return names.get(type(value), "a table" if isinstance(value, Mapping) else type(value).__name__)


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base_dir = path.resolve().parent

    def fail(self, key: str, problem: str, fix: str) -> NoReturn:
        raise ConfigError(problem, path=self.path, key=key, fix=fix)

    def parse(self, table: Mapping[str, Any]) -> NotificationSettings:
        self.check_keys(table, _TOP_KEYS, "notifications", "[notifications] section")
        report_url = None
        if "report_url" in table:
            report_url = self.url(table["report_url"], "notifications.report_url")
        max_listed = table.get("max_tenants_listed", 20)
        if isinstance(max_listed, bool) or not isinstance(max_listed, int) or not 1 <= max_listed <= 200:
            self.fail(
                "notifications.max_tenants_listed",
                f"must be a whole number from 1 to 200, not {max_listed!r}",
                "e.g. max_tenants_listed = 20",
            )
        channels: list[Channel] = []
        used_names: dict[str, str] = {}
        for kind, parse_one in (("email", self.email), ("webhook", self.webhook)):
            for keypath, raw in self.tables(table, kind):
                channel = parse_one(raw, keypath)
                if channel is None:
                    continue
                first = used_names.setdefault(channel.name.casefold(), keypath)
                if first != keypath:
                    self.fail(
                        f"{keypath}.name",
                        f"channel name {channel.name!r} is also used by {first}",
                        "give each channel its own name (it appears in the run's output and logs)",
                    )
                channels.append(channel)
        return NotificationSettings(tuple(channels), report_url, max_listed)

    # -- structure
    def tables(self, table: Mapping[str, Any], kind: str) -> list[tuple[str, Mapping[str, Any]]]:
        """``[notifications.X]`` (one table) or ``[[notifications.X]]`` (a list of tables)."""
        value = table.get(kind)
        if value is None:
            return []
        if isinstance(value, Mapping):
            return [(f"notifications.{kind}", value)]
        if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            return [(f"notifications.{kind}[{i}]", v) for i, v in enumerate(value)]
        self.fail(
            f"notifications.{kind}",
            f"must be a table or a list of tables, not {_type_name(value)}",
            f"write it as [notifications.{kind}] (one) or [[notifications.{kind}]] (several)",
        )

    def check_keys(self, table: Mapping[str, Any], allowed: Sequence[str], keypath: str, what: str) -> None:
        for key in table:
            if key in _SECRET_KEYS:
                replacement = _SECRET_KEYS[key]
                self.fail(
                    f"{keypath}.{key}",
                    "secrets must not be stored in the config file"
                    + (" (a webhook URL carries its own access token)" if replacement == "url_env" else ""),
                    f"remove {key} (and rotate it if this file was shared); set {replacement} = "
                    '"ENV_VAR_NAME" naming an environment variable that holds it instead',
                )
            if key not in allowed:
                self.fail(
                    f"{keypath}.{key}",
                    f"unknown key in the {what}{did_you_mean(key, allowed)}",
                    f"valid keys are: {', '.join(allowed)}",
                )

    # -- channels
    def common(self, raw: Mapping[str, Any], keypath: str, default_name: str) -> tuple[str, bool, Policy]:
        name = raw.get("name", default_name)
        if not isinstance(name, str) or not name.strip() or len(name) > 80:
            self.fail(
                f"{keypath}.name",
                "must be a non-empty string of at most 80 characters",
                'e.g. name = "billing"',
            )
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            self.fail(f"{keypath}.enabled", f"must be true or false, not {enabled!r}", "e.g. enabled = false")
        when = raw.get("when", Policy.ALWAYS.value)
        choices = [p.value for p in Policy]
        if not isinstance(when, str) or when.strip().lower() not in choices:
            shown = when if isinstance(when, str) else _type_name(when)
            self.fail(
                f"{keypath}.when",
                f"unknown policy {shown!r}{did_you_mean(str(when), choices)}",
                "use always (every run), on_gaps (a tenant has a gap or could not be audited) or "
                "on_change (a tenant's status changed since the previous run)",
            )
        return name.strip(), enabled, Policy(when.strip().lower())

    def email(self, raw: Mapping[str, Any], keypath: str) -> EmailSettings | None:
        self.check_keys(raw, _EMAIL_KEYS, keypath, "e-mail channel")
        name, enabled, policy = self.common(raw, keypath, "email")
        if "smtp_host" not in raw:
            self.fail(
                f"{keypath}.smtp_host",
                "an e-mail channel needs smtp_host",
                'e.g. smtp_host = "smtp.office365.com"',
            )
        host = raw["smtp_host"]
        if not isinstance(host, str) or not host.strip() or not _HOST_RE.match(host.strip()):
            self.fail(
                f"{keypath}.smtp_host",
                "must be a host name or IP address (no scheme, no port)",
                'e.g. smtp_host = "smtp.office365.com" and smtp_port = 587',
            )
        host = host.strip().strip("[]")
        security_value = raw.get("security", SmtpSecurity.STARTTLS.value)
        choices = [s.value for s in SmtpSecurity]
        if not isinstance(security_value, str) or security_value.strip().lower() not in choices:
            self.fail(
                f"{keypath}.security",
                f"unknown security {security_value!r}{did_you_mean(str(security_value), choices)}",
                "use starttls (port 587), tls (port 465) or none (a relay on this machine only)",
            )
        security = SmtpSecurity(security_value.strip().lower())
        port = raw.get("smtp_port", _DEFAULT_PORTS[security])
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            self.fail(
                f"{keypath}.smtp_port",
                f"must be a port number from 1 to 65535, not {port!r}",
                "e.g. smtp_port = 587",
            )
        username = raw.get("username")
        if username is not None and (not isinstance(username, str) or not username.strip()):
            self.fail(
                f"{keypath}.username", "must be a non-empty string", 'e.g. username = "auditor@example.com"'
            )
        password_env = self.env_name(raw, "password_env", keypath) if "password_env" in raw else None
        if username and not password_env:
            self.fail(
                f"{keypath}.password_env",
                "username is set but password_env is not",
                'set password_env = "AUDITOR_SMTP_PASSWORD" naming the variable that holds the password',
            )
        if password_env and not username:
            self.fail(
                f"{keypath}.username", "password_env is set but username is not", "set the SMTP user name"
            )
        if security is SmtpSecurity.NONE:
            if not is_loopback_host(host):
                self.fail(
                    f"{keypath}.security",
                    f'"none" sends the reports unencrypted; it is only accepted for a relay on this machine, not {host}',
                    'use security = "starttls" (port 587) or "tls" (port 465)',
                )
            if username:
                self.fail(
                    f"{keypath}.security",
                    '"none" would send the SMTP password unencrypted',
                    'use security = "starttls" or "tls", or drop username/password_env for a local relay',
                )
        sender = self.address(raw.get("from"), f"{keypath}.from", required=True)
        recipients = self.addresses(raw, "to", keypath, required=True)
        cc = self.addresses(raw, "cc", keypath, required=False)
        prefix = raw.get("subject_prefix", "[USS audit]")
        if not isinstance(prefix, str) or "\n" in prefix or "\r" in prefix or len(prefix) > 100:
            self.fail(
                f"{keypath}.subject_prefix",
                "must be a one-line string of at most 100 characters",
                'e.g. subject_prefix = "[USS audit]"',
            )
        attach_value = raw.get("attach", list(REPORT_FILES))
        if not isinstance(attach_value, list) or not all(isinstance(a, str) for a in attach_value):
            self.fail(
                f"{keypath}.attach",
                "must be a list of report formats",
                'e.g. attach = ["html", "xlsx"] (or [] for none)',
            )
        attach = [a.strip().lower() for a in attach_value]
        unknown = [a for a in attach if a not in REPORT_FILES]
        if unknown:
            self.fail(
                f"{keypath}.attach",
                f"unknown report format {unknown[0]!r}{did_you_mean(unknown[0], REPORT_FILES)}",
                f"use any of: {', '.join(REPORT_FILES)}",
            )
        max_mb = self.number(raw, "max_attachments_mb", keypath, 20.0, low=0.0, high=500.0)
        timeout = self.number(raw, "timeout_seconds", keypath, 30.0, low=1.0, high=600.0)
        if not enabled:
            return None
        return EmailSettings(
            name=name,
            host=host,
            port=port,
            security=security,
            sender=sender,
            recipients=recipients,
            cc=cc,
            policy=policy,
            username=username.strip() if username else None,
            password_env=password_env,
            subject_prefix=prefix.strip(),
            attach=tuple(f for f in REPORT_FILES if f in attach),
            max_attachment_bytes=int(max_mb * 1024 * 1024),
            timeout_seconds=timeout,
            ca_bundle=self.path_value(raw, "ca_bundle", keypath),
        )

    def webhook(self, raw: Mapping[str, Any], keypath: str) -> WebhookSettings | None:
        self.check_keys(raw, _WEBHOOK_KEYS, keypath, "webhook channel")
        fmt_value = raw.get("format")
        choices = [f.value for f in WebhookFormat]
        if not isinstance(fmt_value, str) or fmt_value.strip().lower() not in choices:
            shown = f" {fmt_value!r}" if isinstance(fmt_value, str) else ""
            self.fail(
                f"{keypath}.format",
                ("unknown format" + shown + did_you_mean(str(fmt_value), choices))
                if fmt_value is not None
                else "a webhook channel needs format",
                "use teams (Teams Workflows: Adaptive Card), teams_messagecard (legacy Office 365 connector) "
                "or slack (incoming webhook)",
            )
        fmt = WebhookFormat(fmt_value.strip().lower())
        name, enabled, policy = self.common(raw, keypath, f"webhook ({fmt.value})")
        if "url_env" not in raw:
            self.fail(
                f"{keypath}.url_env",
                "a webhook channel needs url_env (the webhook URL is a secret, so it is read from the environment)",
                'e.g. url_env = "AUDITOR_TEAMS_WEBHOOK_URL"',
            )
        url_env = self.env_name(raw, "url_env", keypath)
        timeout = self.number(raw, "timeout_seconds", keypath, 10.0, low=1.0, high=300.0)
        if not enabled:
            return None
        return WebhookSettings(
            name=name,
            format=fmt,
            url_env=url_env,
            policy=policy,
            timeout_seconds=timeout,
            ca_bundle=self.path_value(raw, "ca_bundle", keypath),
        )

    # -- scalar validators
    def env_name(self, raw: Mapping[str, Any], key: str, keypath: str) -> str:
        value = raw[key]
        if not isinstance(value, str) or not _ENV_NAME_RE.match(value.strip()):
            # Never echo the value: if it is not a variable name it is probably the secret itself.
            self.fail(
                f"{keypath}.{key}",
                "must be the NAME of an environment variable (letters, digits, underscore), not the secret",
                f'e.g. {key} = "{"AUDITOR_SMTP_PASSWORD" if key == "password_env" else "AUDITOR_WEBHOOK_URL"}", '
                "then export that variable before running",
            )
        return value.strip()

    def address(self, value: object, keypath: str, *, required: bool) -> str:
        if value is None and required:
            self.fail(keypath, "is required", 'e.g. from = "uss-auditor@example.com"')
        if not isinstance(value, str) or "\r" in value or "\n" in value:
            self.fail(keypath, "must be an e-mail address string", 'e.g. "billing@example.com"')
        _, address = parseaddr(value.strip())
        local, _, domain = address.rpartition("@")
        if not local or not domain or " " in address or "." not in domain.strip("."):
            self.fail(
                keypath,
                f"{value!r} is not an e-mail address",
                'e.g. "billing@example.com" or "Billing <billing@example.com>"',
            )
        return value.strip()

    def addresses(self, raw: Mapping[str, Any], key: str, keypath: str, *, required: bool) -> tuple[str, ...]:
        value = raw.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.fail(
                f"{keypath}.{key}",
                "must be a list of e-mail addresses",
                f'e.g. {key} = ["billing@example.com"]',
            )
        if required and not value:
            self.fail(
                f"{keypath}.{key}", "needs at least one recipient", f'e.g. {key} = ["billing@example.com"]'
            )
        return tuple(self.address(v, f"{keypath}.{key}[{i}]", required=True) for i, v in enumerate(value))

    def number(
        self, raw: Mapping[str, Any], key: str, keypath: str, default: float, *, low: float, high: float
    ) -> float:
        value = raw.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            self.fail(
                f"{keypath}.{key}",
                f"must be a number from {low:g} to {high:g}, not {value!r}",
                f"e.g. {key} = {default:g}",
            )
        return float(value)

    def path_value(self, raw: Mapping[str, Any], key: str, keypath: str) -> Path | None:
        if key not in raw:
            return None
        value = raw[key]
        if not isinstance(value, str) or not value.strip():
            self.fail(
                f"{keypath}.{key}", "must be a non-empty file path string", f'e.g. {key} = "corp-ca.pem"'
            )
        path = Path(value.strip()).expanduser()
        path = path if path.is_absolute() else (self.base_dir / path).resolve()
        if not path.is_file():
            self.fail(
                f"{keypath}.{key}", f"file {path} does not exist", "point it at a PEM file of CA certificates"
            )
        return path

    def url(self, value: object, keypath: str) -> str:
        example = 'e.g. report_url = "https://intranet.example/uss/latest/audit.html"'
        if not isinstance(value, str) or not value.strip():
            self.fail(keypath, "must be a URL string", example)
        parts = urlsplit(value.strip())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            self.fail(keypath, f"{value!r} is not an absolute http(s) URL", example)
        return value.strip()
