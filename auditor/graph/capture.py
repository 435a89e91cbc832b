"""`auditor audit --capture DIR`: record what Graph and the sign-in endpoint actually said, per tenant.

A capture is a directory holding one JSON-lines file per tenant (``<tenant id>.jsonl``, one exchange a
line, in the order the requests were sent) and ``manifest.json`` (the tenants, the vendor settings, what
the capture never contains). `auditor simulator serve --replay DIR` serves it back, so a problem seen in
a real tenant becomes a regression test here.

What is never written, not even in a URL or a form body:
- the ``Authorization`` header, cookies (``Cookie``, ``Set-Cookie``) and proxy credentials;
- in token requests: ``client_secret``, ``client_assertion`` (certificate or federated), ``assertion``,
  ``refresh_token``, ``password`` and ``code`` values (the key is kept, the value is ``"[redacted]"``);
- in token responses: ``access_token``, ``refresh_token`` and ``id_token``. A few claims of the access
  token (tenant, app, audience, issuer, permissions: see `TOKEN_CLAIMS`) are kept as ``token_claims``, so a
  replay can issue a token that says the same; the token itself and its signature are not;
- any value the run registered as a secret, and anything shaped like a token (`auditor.errors.redact`
  runs over every line as a last guard).

With ``redact=True`` (``--capture-redact``) the names, user principal names and mail addresses of users,
groups and the organisation are replaced by stable pseudonyms: the same input gives the same pseudonym
throughout the capture (a keyed hash whose key is never written), so relationships survive; ids stay,
since verdicts depend on them. Kept as they are: service principals, applications, app roles and
directory roles (the vendor app and Microsoft's apps are not customer data, and the audit finds the
vendor app by its name), and URLs, which the auditor builds from ids and the configured vendor name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO
from urllib.parse import parse_qsl, urlsplit

from auditor.errors import redact_bulk as redact_secrets

if TYPE_CHECKING:  # the SDKs load only when a capture is recorded: the replay server reads captures too
    import httpx

    from auditor.graph.client import ConnectionSettings, GraphSession

CAPTURE_FORMAT: Final = "uss-auditor-capture"
CAPTURE_VERSION: Final = 1
MANIFEST_NAME: Final = "manifest.json"
NOT_CAPTURED: Final = "[redacted]"

# Request and response headers that carry credentials or session state.
SECRET_HEADERS: Final = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-identity-header",
        "secret",
        "x-ms-token",
    }
)
# Form fields of a token request whose values are credentials.
SECRET_FORM_FIELDS: Final = frozenset(
    {"client_secret", "client_assertion", "assertion", "refresh_token", "password", "code", "code_verifier"}
)
# Token response fields that are credentials.
SECRET_TOKEN_FIELDS: Final = frozenset({"access_token", "refresh_token", "id_token"})
# Access token claims a replay needs to say the same thing (which tenant, which app, which permissions).
TOKEN_CLAIMS: Final = ("aud", "iss", "tid", "appid", "azp", "idtyp", "roles", "ver", "xms_cc")
NEVER_CONTAINS: Final = (
    "Authorization headers, cookies",
    "client secrets, client assertions (certificate or federated) and other credential form fields",
    "access, refresh and id tokens (only the access token's tid, appid, aud, iss and roles claims)",
    "values registered as secrets during the run, and anything shaped like a token",
)


# --- pseudonyms (--capture-redact) ------------------------------------------------------------------

# Object keys whose values are names, addresses or free text about people and the organisation.
_NAME_KEYS: Final = frozenset(
    {
        "displayName",
        "givenName",
        "surname",
        "mailNickname",
        "onPremisesSamAccountName",
        "onPremisesDistinguishedName",
        "onPremisesDomainName",
        "principalName",
    }
)
_ADDRESS_KEYS: Final = frozenset({"userPrincipalName", "mail", "onPremisesUserPrincipalName"})
_ADDRESS_LIST_KEYS: Final = frozenset(
    {
        "otherMails",
        "proxyAddresses",
        "imAddresses",
        "technicalNotificationMails",
        "marketingNotificationEmails",
        "securityComplianceNotificationMails",
    }
)
_TEXT_KEYS: Final = frozenset(
    {
        "internalReplyMessage",
        "externalReplyMessage",
        "businessPhones",
        "mobilePhone",
        "faxNumber",
        "streetAddress",
        "street",
        "city",
        "state",
        "postalCode",
        "officeLocation",
        "jobTitle",
        "department",
        "companyName",
        "employeeId",
        "securityComplianceNotificationPhones",
    }
)
# Objects that describe apps and roles (the vendor app, Microsoft's apps, role definitions) keep their names.
_KEEP_TYPES: Final = frozenset(
    {
        "#microsoft.graph.serviceprincipal",
        "#microsoft.graph.application",
        "#microsoft.graph.directoryrole",
        "#microsoft.graph.unifiedroledefinition",
        "#microsoft.graph.approle",
        "#microsoft.graph.approleassignment",
    }
)
_KEEP_MARKERS: Final = frozenset({"appId", "appRoles", "allowedMemberTypes", "roleTemplateId", "templateId"})
_MIN_MAPPED: Final = 3  # shorter originals are not replaced inside other text ("HR" would garble words)
_TEXT_WITH_NAMES: Final = frozenset({"message", "url"})  # error messages; $batch items' URLs
_MAX_NAME_WORDS: Final = 8
_AROUND_NAMES: Final = "'\"()[]<>,.;:!?"
_ADDRESS: Final = re.compile(r"[\w.%+-](?:[\w.%+'-]*[\w.%+-])?@[\w-]+(?:\.[\w-]+)+")  # o'neil@x, not 'a@x


class Pseudonyms:
    """Stable pseudonyms: a keyed hash of the value, so the same name or address always maps to the same
    pseudonym within one capture, and nobody holding the capture can test a guess (the key stays in memory).
    Addresses keep their shape (``u-…@d-….invalid``; one domain, one pseudonym domain)."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self._mapped: dict[str, str] = {}  # original -> pseudonym
        self._made: set[str] = set()  # every pseudonym handed out (never pseudonymised again)
        self._lock = threading.Lock()

    def _digest(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()[:10]

    def _remember(self, original: str, pseudonym: str) -> str:
        with self._lock:
            self._made.add(pseudonym)
            if len(original) >= _MIN_MAPPED:
                self._mapped[original] = pseudonym
        return pseudonym

    def domain(self, value: str) -> str:
        return self._remember(value, f"d-{self._digest('domain', value.casefold())}.invalid")

    def address(self, value: str) -> str:
        """A mail address or UPN (case-insensitive); a value without ``@`` is taken for a name."""
        local, at, domain = value.rpartition("@")
        if not at or not local:
            return self.name(value)
        pseudonym = f"u-{self._digest('address', value.casefold())}@{self.domain(domain)}"
        return self._remember(value, pseudonym)

    def name(self, value: str) -> str:
        if "@" in value:
            return self.address(value)
        return self._remember(value, f"name-{self._digest('name', value)}")

    def proxy_address(self, value: str) -> str:
        prefix, colon, rest = value.partition(":")
        return f"{prefix}:{self.address(rest)}" if colon and "@" in rest else self.address(value)

    def in_text(self, text: str) -> str:
        """``text`` (an error message, a URL) with every address, and every name already pseudonymised,
        replaced. Names are looked up as runs of up to `_MAX_NAME_WORDS` words (quotes and brackets
        around them ignored): a dictionary look-up per run, whatever the number of names known."""
        text = _ADDRESS.sub(lambda m: m[0] if m[0] in self._made else self.address(m[0]), text)
        words = text.split()
        found: set[str] = set()
        with self._lock:
            for start in range(len(words)):
                for end in range(start + 1, min(start + _MAX_NAME_WORDS, len(words)) + 1):
                    run = " ".join(words[start:end])
                    for candidate in (run, run.strip(_AROUND_NAMES)):
                        if candidate in self._mapped:
                            found.add(candidate)
            replacements = [(original, self._mapped[original]) for original in found]
        for original, pseudonym in sorted(replacements, key=lambda item: len(item[0]), reverse=True):
            text = text.replace(original, pseudonym)
        return text

    def scrub(self, value: Any) -> Any:
        """A JSON value with the names and addresses of people, groups and the organisation pseudonymised,
        and in free text (error messages, `$batch` item URLs) the addresses and the names known so far."""
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if not isinstance(value, dict):
            return value
        keep = _keeps_names(value)
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                out[key] = self.scrub(item)
            elif not isinstance(item, str) or not item or keep:
                out[key] = item
            elif key in _ADDRESS_KEYS:
                out[key] = self.address(item)
            elif key in _NAME_KEYS:
                out[key] = self.name(item)
            elif key in _TEXT_KEYS:
                out[key] = "[redacted]"
            elif key in _TEXT_WITH_NAMES:
                out[key] = self.in_text(item)
            else:
                out[key] = item
        if not keep:
            for key in _ADDRESS_LIST_KEYS & out.keys():
                if isinstance(out[key], list):
                    out[key] = [self.proxy_address(v) if isinstance(v, str) else v for v in out[key]]
            for key in _TEXT_KEYS & out.keys():
                if isinstance(out[key], list):
                    out[key] = ["[redacted]" for _ in out[key]]
            domains = out.get("verifiedDomains")
            if isinstance(domains, list):
                out["verifiedDomains"] = [
                    {**d, "name": self.domain(d["name"])} if isinstance(d.get("name"), str) else d
                    for d in domains
                    if isinstance(d, dict)
                ]
        return out


def _keeps_names(obj: dict[str, Any]) -> bool:
    odata_type = obj.get("@odata.type")
    if isinstance(odata_type, str) and odata_type.lower() in _KEEP_TYPES:
        return True
    return bool(_KEEP_MARKERS & obj.keys())


# --- turning one exchange into a record ----------------------------------------------------------


def clean_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers without credentials (names lower-cased; repeated headers joined)."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in SECRET_HEADERS:
            continue
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def json_or_text(data: bytes) -> Any:
    """A body as JSON when it is JSON, else as text (``None`` when empty)."""
    if not data:
        return None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def token_form(data: Any) -> dict[str, str]:
    """A token request's form fields, credential values replaced by ``[redacted]``."""
    if isinstance(data, dict):
        pairs = [(str(k), str(v)) for k, v in data.items()]
    elif isinstance(data, (bytes, str)):
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
        pairs = parse_qsl(text, keep_blank_values=True)
    else:
        pairs = []
    return {k: NOT_CAPTURED if k.lower() in SECRET_FORM_FIELDS else v for k, v in pairs}


def token_answer(body: Any) -> Any:
    """A token response without its tokens; the access token's useful claims kept as ``token_claims``."""
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if k.lower() not in SECRET_TOKEN_FIELDS}
    claims = jwt_claims(body.get("access_token"))
    if claims is not None:
        out["token_claims"] = {k: claims[k] for k in TOKEN_CLAIMS if k in claims}
    return out


def jwt_claims(token: Any) -> dict[str, Any] | None:
    """The payload of a JWT, or None when ``token`` is not one (Graph tokens are opaque to clients)."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


# --- the capture ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturedTenant:
    """What the manifest says about one tenant (the name is pseudonymised with ``redact``)."""

    tenant_id: str
    name: str
    client_id: str = ""
    method: str = ""
    price_per_mailbox: float | None = None


@dataclass
class _TenantLog:
    path: Path
    handle: TextIO
    exchanges: int = 0
    # Requests sent and not yet answered: the request, when it left, and how it failed if it did.
    pending: dict[int, tuple[httpx.Request, float, str | None]] = field(default_factory=dict)


class CaptureError(Exception):
    """The capture directory cannot be used (exists with files in it, or cannot be written)."""


class Capture:
    """Records every Graph and token exchange of a run into a capture directory (see the module doc).

    Use `session_factory` where a `TenantAuditor` (or remediation) opens its Graph sessions, and `close`
    at the end of the run (it writes the manifest's totals).
    """

    SEQ_KEY: Final = "uss_capture_seq"

    def __init__(
        self,
        directory: Path,
        *,
        redact: bool = False,
        tenants: Sequence[CapturedTenant] = (),
        vendor: dict[str, Any] | None = None,
        currency: str = "",
        tool_version: str = "",
    ) -> None:
        self.directory = directory
        self.pseudonyms = Pseudonyms() if redact else None
        self.vendor = dict(vendor or {})
        self.currency = currency
        self.tool_version = tool_version
        self.started = _now()
        self._tenants = {t.tenant_id.lower(): t for t in tenants}
        self._logs: dict[str, _TenantLog] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._prepare()
        self._write_manifest(finished=None)

    @property
    def redacted(self) -> bool:
        return self.pseudonyms is not None

    def _prepare(self) -> None:
        try:
            if self.directory.exists():
                if not self.directory.is_dir():
                    raise CaptureError(f"{self.directory} is not a directory")
                if any(self.directory.iterdir()):
                    raise CaptureError(
                        f"{self.directory} is not empty: a capture goes into a new or empty directory"
                    )
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise CaptureError(f"{self.directory} cannot be created: {exc.strerror or exc}") from exc

    # --- what a session gets ----------------------------------------------------------------

    @asynccontextmanager
    async def session_factory(self, settings: ConnectionSettings) -> AsyncIterator[GraphSession]:
        """`open_session` with this capture's hooks on the Graph client and the credential."""
        from auditor.graph.client import open_session

        tenant_id = settings.tenant_id.lower()
        if tenant_id not in self._tenants:
            self._tenants[tenant_id] = CapturedTenant(settings.tenant_id, settings.tenant_id)
        known = self._tenants[tenant_id]
        if not known.client_id:
            self._tenants[tenant_id] = CapturedTenant(
                known.tenant_id, known.name, settings.client_id, settings.method, known.price_per_mailbox
            )

        async def on_request(request: httpx.Request) -> None:
            seq = self._next_seq()
            pending = self._log(tenant_id).pending
            pending[seq] = (request, time.monotonic(), None)
            request.extensions[self.SEQ_KEY] = seq
            # httpcore's documented "trace" extension reports a failed step with its exception: how a
            # request that gets no answer failed (reset or time-out), which no response hook sees.
            previous = request.extensions.get("trace")

            async def trace(event: str, info: dict[str, Any]) -> None:
                if previous is not None:
                    await previous(event, info)
                if event.endswith(".failed") and seq in pending:
                    failed = info.get("exception")
                    kind = "timeout" if type(failed).__name__.endswith("Timeout") else "reset"
                    pending[seq] = (*pending[seq][:2], kind)

            request.extensions["trace"] = trace

        async def on_response(response: httpx.Response) -> None:
            await response.aread()
            request = response.request
            seq = request.extensions.get(self.SEQ_KEY)
            started = None
            if isinstance(seq, int):
                started = self._log(tenant_id).pending.pop(seq, (None, None, None))[1]
            else:
                seq = self._next_seq()
            elapsed = time.monotonic() - started if started is not None else None
            self._graph_record(tenant_id, seq, request, response, elapsed)

        def on_token_response(pipeline_response: Any) -> None:
            self._token_record(tenant_id, self._next_seq(), pipeline_response)

        try:
            async with open_session(
                settings,
                event_hooks={"request": [on_request], "response": [on_response]},
                pipeline_options={"raw_response_hook": on_token_response},
            ) as session:
                yield session
        finally:
            self._flush_pending(tenant_id)

    # --- records -----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _log(self, tenant_id: str) -> _TenantLog:
        log = self._logs.get(tenant_id)
        if log is None:
            path = self.directory / f"{_file_stem(tenant_id)}.jsonl"
            # Owner-only, like the directory: a capture holds tenant data.
            handle = os.fdopen(
                os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", encoding="utf-8"
            )
            log = _TenantLog(path, handle)
            self._logs[tenant_id] = log
        return log

    def _graph_record(
        self,
        tenant_id: str,
        seq: int,
        request: httpx.Request,
        response: httpx.Response | None,
        elapsed: float | None,
        *,
        no_answer: str | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "seq": seq,
            "time": _now(),
            "kind": "graph",
            "request": {
                "method": request.method,
                "url": str(request.url),
                "headers": clean_headers(request.headers.multi_items()),
                "body": json_or_text(_request_content(request)),
            },
            "response": None,
            "elapsed_ms": round(elapsed * 1000, 1) if elapsed is not None else None,
        }
        if response is not None:
            record["response"] = {
                "status": response.status_code,
                "headers": clean_headers(response.headers.multi_items()),
                "body": json_or_text(response.content),
            }
        if no_answer is not None:
            record["no_answer"] = no_answer
        self._write(tenant_id, record)

    def _token_record(self, tenant_id: str, seq: int, pipeline_response: Any) -> None:
        request = pipeline_response.http_request
        response = pipeline_response.http_response
        data = getattr(request, "data", None) or getattr(request, "content", None) or request.body
        try:
            body = response.body()
        except Exception:  # a streamed answer that was never loaded
            body = b""
        url = str(request.url)
        parts = urlsplit(url)
        query = {k: NOT_CAPTURED if k.lower() in SECRET_FORM_FIELDS else v for k, v in parse_qsl(parts.query)}
        record = {
            "seq": seq,
            "time": _now(),
            "kind": "token",
            "request": {
                "method": request.method,
                "url": parts._replace(query="").geturl(),
                "query": query,
                "headers": clean_headers(request.headers.items()),
                "form": token_form(data),
            },
            "response": {
                "status": response.status_code,
                "headers": clean_headers(response.headers.items()),
                "body": token_answer(json_or_text(body)),
            },
        }
        self._write(tenant_id, record)

    def _flush_pending(self, tenant_id: str) -> None:
        """Requests that never got an answer: a reset, a time-out, or still waiting when the session ended
        (the tenant's time limit, say: ``cancelled``). Written with their sequence numbers, so a reader
        sorts them into place."""
        log = self._logs.get(tenant_id)
        if log is None:
            return
        now = time.monotonic()
        for seq, (request, started, failure) in sorted(log.pending.items()):
            self._graph_record(tenant_id, seq, request, None, now - started, no_answer=failure or "cancelled")
        log.pending.clear()

    def _write(self, tenant_id: str, record: dict[str, Any]) -> None:
        if self.pseudonyms is not None:
            record = self._pseudonymise(record)
        line = redact_secrets(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        log = self._log(tenant_id)
        log.handle.write(line + "\n")
        log.handle.flush()  # a run killed mid-way leaves every exchange it had
        log.exchanges += 1

    def _pseudonymise(self, record: dict[str, Any]) -> dict[str, Any]:
        assert self.pseudonyms is not None
        p = self.pseudonyms
        for part in ("request", "response"):
            section = record.get(part)
            if isinstance(section, dict) and "body" in section:
                section["body"] = p.scrub(section["body"])
        request = record["request"]
        request["url"] = p.in_text(request["url"])
        return record

    # --- the manifest ------------------------------------------------------------------------

    def close(self) -> Path:
        """Close the tenant files and write the manifest's totals; returns the manifest's path."""
        for log in self._logs.values():
            log.handle.close()
        return self._write_manifest(finished=_now())

    def _write_manifest(self, *, finished: str | None) -> Path:
        tenants = []
        for key, tenant in sorted(self._tenants.items()):
            log = self._logs.get(key)
            name = self.pseudonyms.name(tenant.name) if self.pseudonyms and tenant.name else tenant.name
            tenants.append(
                {
                    "tenant_id": tenant.tenant_id,
                    "name": name,
                    "client_id": tenant.client_id,
                    "auth_method": tenant.method,
                    "price_per_mailbox": tenant.price_per_mailbox,
                    "file": log.path.name if log is not None else None,
                    "exchanges": log.exchanges if log is not None else 0,
                }
            )
        manifest = {
            "format": CAPTURE_FORMAT,
            "version": CAPTURE_VERSION,
            "tool_version": self.tool_version,
            "started": self.started,
            "finished": finished,
            "redacted": self.redacted,
            "vendor": self.vendor,
            "currency": self.currency,
            "tenants": tenants,
            "never_contains": list(NEVER_CONTAINS),
        }
        path = self.directory / MANIFEST_NAME
        temp = path.with_suffix(".tmp")
        with os.fdopen(
            os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8"
        ) as out:
            out.write(redact_secrets(json.dumps(manifest, indent=2, ensure_ascii=False)) + "\n")
        temp.replace(path)
        return path


def _request_content(request: httpx.Request) -> bytes:
    try:
        return request.content
    except Exception:  # httpx.RequestNotRead: a streamed body (the auditor sends none)
        return b""


def _file_stem(tenant_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in tenant_id) or "tenant"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_capture(directory: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The manifest and each tenant's records (by tenant id, in request order) of a capture directory.

    Raises `CaptureError` with what is wrong when the directory is not a capture.
    """
    manifest_path = directory / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CaptureError(f"{directory} is not a capture: it has no {MANIFEST_NAME}") from exc
    except (OSError, ValueError) as exc:
        raise CaptureError(f"{manifest_path} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CAPTURE_FORMAT:
        raise CaptureError(f"{manifest_path} is not a uss-auditor capture manifest")
    if manifest.get("version") != CAPTURE_VERSION:
        raise CaptureError(
            f"{manifest_path} is capture version {manifest.get('version')}; this auditor reads version "
            f"{CAPTURE_VERSION}"
        )
    records: dict[str, list[dict[str, Any]]] = {}
    for tenant in manifest.get("tenants", []):
        name = tenant.get("file")
        if not name:
            continue
        path = directory / Path(str(name)).name
        lines: list[dict[str, Any]] = []
        try:
            with path.open(encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        lines.append(json.loads(line))
                    except ValueError as exc:
                        raise CaptureError(f"{path}, line {number}: not JSON ({exc})") from exc
        except OSError as exc:
            raise CaptureError(f"{path} cannot be read: {exc.strerror or exc}") from exc
        records[str(tenant["tenant_id"]).lower()] = sorted(lines, key=lambda r: int(r.get("seq", 0)))
    return manifest, records
