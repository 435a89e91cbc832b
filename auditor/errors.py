"""The auditor's own small error tree.

Only ``auditor/graph/`` sees SDK exceptions; it translates them into these types so that everything else
(results, reports, exit codes) deals with a stable ``ErrorCode`` plus an admin-ready hint. Every message
and hint passes through :func:`redact` so a token or secret echoed by a library never reaches a report.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final

from auditor.constants import ExitCode


class ErrorCode(StrEnum):
    """Stable codes for "the auditor could not find out" (DESIGN §3.4)."""

    AUTH_FAILED = "AUTH_FAILED"  # no token: wrong client id/secret/certificate, app not consented
    PERMISSION_DENIED = "PERMISSION_DENIED"  # token fine, a Graph permission is missing (403)
    THROTTLED = "THROTTLED"  # still 429/503 after the retry budget
    TIMEOUT = "TIMEOUT"  # a request or the whole tenant ran out of time
    NETWORK_ERROR = "NETWORK_ERROR"  # DNS, TLS, connection refused/reset
    GRAPH_ERROR = "GRAPH_ERROR"  # any other unexpected Graph answer
    CONFIG_ERROR = "CONFIG_ERROR"  # the tenant's settings cannot work (e.g. secret env var unset)
    INTERNAL_ERROR = "INTERNAL_ERROR"  # a bug in the auditor; the message says what was inconsistent
    WRONG_TENANT = "WRONG_TENANT"  # the token or /organization names another tenant than the configured one


# Generic advice used when the layer raising the error has nothing more specific to say.
DEFAULT_HINTS: Final = MappingProxyType(
    {
        ErrorCode.AUTH_FAILED: (
            "Check the auditor app's client_id and its certificate or secret, and that an administrator of "
            "this tenant has consented to the auditor app."
        ),
        ErrorCode.PERMISSION_DENIED: (
            "Grant the missing Microsoft Graph application permission to the auditor app in this tenant and "
            "grant admin consent (see `auditor permissions`)."
        ),
        ErrorCode.THROTTLED: "Microsoft Graph kept throttling; re-run later or lower --concurrency.",
        ErrorCode.TIMEOUT: "Re-run; if it keeps timing out raise run.tenant_timeout_seconds in the config.",
        ErrorCode.NETWORK_ERROR: (
            "Check network access, proxy and TLS trust (ca_bundle / SSL_CERT_FILE) to the sign-in and Graph "
            "endpoints."
        ),
        ErrorCode.GRAPH_ERROR: "Re-run; if it persists, report it with the Graph request-id from the log.",
        ErrorCode.CONFIG_ERROR: "Fix the tenant's settings in the config file.",
        ErrorCode.INTERNAL_ERROR: "This is a bug in the auditor; please report it with the log.",
        ErrorCode.WRONG_TENANT: (
            "The credential signed in to another tenant than the config's tenant_id: check tenant_id, "
            "authority and the auth method (a managed identity only gets tokens for its own tenant)."
        ),
    }
)

# Patterns that look like credentials. Deliberately broad: a redacted word in an error message costs
# nothing, a leaked secret in a report mailed to the billing team costs a lot.
_REDACTIONS: Final = (
    # JSON Web Tokens (access tokens, client assertions, federated tokens)
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), "[redacted-token]"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (
        re.compile(
            r"(?i)(\b(?:client_secret|client_assertion|password|passwd|access_token|refresh_token|"
            r"id_token|assertion|secret)\b[\"']?\s*[:=]\s*[\"']?)[^\s&\"',;}]+"
        ),
        r"\1[redacted]",
    ),
)


# Exact secret values this process has read (client secrets, key and SMTP passwords, webhook URLs): masked
# wherever they appear, even where no pattern would recognise them. Values shorter than this are not
# registered: masking "1" would garble every number.
_MIN_SECRET_LENGTH: Final = 6
_known_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` in everything :func:`redact` scrubs from now on (results, logs, notifications).

    Call it where a secret is read from the environment. Safe from any thread; registering twice is a no-op.
    """
    global _known_secrets
    if not value or len(value) < _MIN_SECRET_LENGTH or value in _known_secrets:
        return
    with _secrets_lock:
        if value not in _known_secrets:
            # Longest first, so a secret that contains another is masked whole.
            _known_secrets = tuple(sorted((*_known_secrets, value), key=len, reverse=True))


def redact(text: str) -> str:
    """Return ``text`` with every registered secret value, and anything that looks like a token, secret or
    password, replaced."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


# The words each `_REDACTIONS` pattern cannot match without (lower case where the pattern ignores case):
# `redact_bulk` runs a pattern only over text holding one of them, cheap on megabytes of plain Graph JSON.
_REDACTION_WORDS: Final = (
    ("eyJ",),
    ("bearer",),
    ("secret", "assertion", "password", "passwd", "access_token", "refresh_token", "id_token"),
)


def redact_bulk(text: str) -> str:
    """:func:`redact`, faster on large text: a pattern runs only where its words occur."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    lowered = text.lower()
    for (pattern, replacement), words in zip(_REDACTIONS, _REDACTION_WORDS, strict=True):
        haystack = lowered if pattern.flags & re.IGNORECASE else text
        if any(word in haystack for word in words):
            text = pattern.sub(replacement, text)
    return text


def permission_hint(permission: str, tenant_label: str, app_label: str = "the auditor app") -> str:
    """Admin-ready hint for a missing Microsoft Graph application permission."""
    return (
        f"Grant the Microsoft Graph application permission {permission} to {app_label} and have an "
        f"administrator of tenant {tenant_label} grant admin consent, then re-run."
    )


@dataclass(frozen=True)
class TenantError:
    """Why a tenant, or one section of it, could not be audited. Goes into results and audit.json."""

    code: ErrorCode
    message: str
    hint: str = ""

    def __post_init__(self) -> None:
        # Scrub at construction so no code path can put an unredacted message into a result.
        object.__setattr__(self, "code", ErrorCode(self.code))
        object.__setattr__(self, "message", redact(self.message))
        object.__setattr__(self, "hint", redact(self.hint or DEFAULT_HINTS[self.code]))

    def to_dict(self) -> dict[str, Any]:
        """JSON form used in audit.json: ``{code, message, hint}``."""
        return {"code": self.code.value, "message": self.message, "hint": self.hint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TenantError:
        """Inverse of :meth:`to_dict`."""
        return cls(ErrorCode(data["code"]), str(data["message"]), str(data.get("hint") or ""))


class AuditorError(Exception):
    """Base of every error the auditor raises on purpose."""

    exit_code: ClassVar[int] = ExitCode.TENANT_ERROR

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.GRAPH_ERROR, hint: str = "") -> None:
        self.code = ErrorCode(code)
        self.message = redact(message)
        self.hint = redact(hint or DEFAULT_HINTS[self.code])
        super().__init__(self.message)

    def __str__(self) -> str:
        # The hint is never empty: the constructor falls back to the code's default advice.
        return f"{self.message} {self.hint}".strip()

    def to_tenant_error(self) -> TenantError:
        """The result-side form of this error."""
        return TenantError(self.code, self.message, self.hint)


class GraphError(AuditorError):
    """A Graph or sign-in call failed; raised by ``auditor/graph/`` after translating the SDK error."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode = ErrorCode.GRAPH_ERROR,
        hint: str = "",
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.status = status
        self.request_id = request_id

    def to_tenant_error(self) -> TenantError:
        """Result-side form; the Graph request-id is kept because support asks for it."""
        suffix = f" (request-id {self.request_id})" if self.request_id else ""
        return TenantError(self.code, self.message + suffix, self.hint)


class ConfigError(AuditorError):
    """The config file cannot be used. Nothing is audited; the CLI exits with code 2.

    ``str()`` is one line naming the file (and line/column for syntax errors), the key path, what is
    wrong and how to fix it, e.g.
    ``fleet.toml: tenants[2].tenant_id: 'contoso' is not a GUID. Fix: use the Directory (tenant) ID ...``
    """

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        key: str | None = None,
        fix: str = "",
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message, code=ErrorCode.CONFIG_ERROR, hint=fix)
        self.path = Path(path) if path is not None else None
        self.key = key
        self.fix = redact(fix)
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "config"
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        parts = [where]
        if self.key:
            parts.append(self.key)
        text = ": ".join(parts) + ": " + self.message.rstrip(". ") + "."
        if self.fix:
            text += " Fix: " + self.fix
        # One line, always: schedulers and log collectors treat each line as a record.
        return " ".join(text.split())


class UsageError(AuditorError):
    """The command line asks for something that cannot work; nothing is audited or written (exit 2)."""

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message, code=ErrorCode.CONFIG_ERROR, hint=hint)
