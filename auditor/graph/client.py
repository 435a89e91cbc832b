"""Credentials and Graph clients, one pair per tenant, closed when done.

This is the only place (with the rest of `auditor.graph`) that imports `azure.identity`, `msgraph` and
kiota. The SDK's own retry middleware is switched off: retries are ours, so that one tenant-wide pause
honours every Retry-After and a write is never repeated blindly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import certifi
import httpx
import yarl
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline.transport import AioHttpTransport
from azure.identity.aio import (
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import ParametersNameDecodingHandlerOption, RetryHandlerOption
from kiota_http.middleware.parameters_name_decoding_handler import ParametersNameDecodingHandler
from msgraph.generated.models.o_data_errors.inner_error import InnerError
from msgraph.generated.models.o_data_errors.main_error import MainError
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

from auditor.errors import ErrorCode, GraphError

log = logging.getLogger(__name__)

AuthMethod = Literal["secret", "certificate", "workload_identity", "managed_identity"]


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to reach one tenant's Graph as one app. Secret values never appear in repr."""

    tenant_id: str
    client_id: str
    method: AuthMethod
    authority: str  # e.g. https://login.microsoftonline.com
    graph_endpoint: str  # e.g. https://graph.microsoft.com (requests go to {graph_endpoint}/v1.0)
    scope: str  # e.g. https://graph.microsoft.com/.default
    client_secret: str | None = field(default=None, repr=False)
    certificate_path: Path | None = None
    certificate_password: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    ca_bundle: Path | None = None
    timeout_seconds: float = 60.0
    sdk_retries: int = 0  # our own retry layer is the one that honours Retry-After across a tenant


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Public roots, plus SSL_CERT_FILE (honoured by default) and the configured extra CA bundle.

    Loading the roots costs ~90 ms, so one context per bundle is shared by all tenants.
    """
    key = f"{os.environ.get('SSL_CERT_FILE')}|{ca_bundle}"
    if key not in _SSL_CONTEXTS:
        _SSL_CONTEXTS[key] = _new_ssl_context(ca_bundle)
    return _SSL_CONTEXTS[key]


def _new_ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    for extra in (os.environ.get("SSL_CERT_FILE"), str(ca_bundle) if ca_bundle else None):
        if extra:
            context.load_verify_locations(cafile=extra)
    return context


def make_credential(
    settings: ConnectionSettings, *, pipeline_options: dict[str, Any] | None = None
) -> AsyncTokenCredential:
    """The azure-identity async credential for a tenant's configured method.

    `pipeline_options` are extra azure-core pipeline keywords for the credential's token requests (e.g.
    `raw_request_hook`/`raw_response_hook`, which `auditor.graph.capture` uses to record sign-ins).
    """
    pipeline = _token_pipeline(settings)
    common: dict[str, Any] = {
        "authority": settings.authority,
        **pipeline,
        # The sign-in trusts what Graph trusts (public roots, SSL_CERT_FILE, ca_bundle). azure-core's own
        # `connection_verify=<bundle>` would trust the bundle *instead of* the public roots, so a ca_bundle
        # meant for an inspecting proxy in front of Graph would break a sign-in that goes out directly.
        "transport": SignInTransport(
            _ssl_context(settings.ca_bundle),
            connection_timeout=pipeline["connection_timeout"],
            read_timeout=pipeline["read_timeout"],
        ),
        **(pipeline_options or {}),
    }
    if settings.method == "secret":
        if not settings.client_secret:
            raise ValueError("a client secret is required for method 'secret'")
        return ClientSecretCredential(
            settings.tenant_id, settings.client_id, settings.client_secret, **common
        )
    if settings.method == "certificate":
        if settings.certificate_path is None:
            raise ValueError("a certificate path is required for method 'certificate'")
        password = settings.certificate_password.encode() if settings.certificate_password else None
        return CertificateCredential(
            settings.tenant_id,
            settings.client_id,
            certificate_path=str(settings.certificate_path),
            password=password,
            **common,
        )
    if settings.method == "workload_identity":
        if settings.token_file is None:
            raise ValueError("a token file is required for method 'workload_identity'")
        return WorkloadIdentityCredential(
            tenant_id=settings.tenant_id,
            client_id=settings.client_id,
            token_file_path=str(settings.token_file),
            **common,
        )
    kwargs: dict[str, Any] = dict(pipeline_options or {})
    if settings.client_id:
        kwargs["client_id"] = settings.client_id
    return ManagedIdentityCredential(**kwargs)


class SignInTransport(AioHttpTransport):  # type: ignore[misc]  # azure-core imports it lazily (Any)
    """azure-core's aiohttp transport for token requests, on a TLS context of the auditor's choosing.

    The session is made as azure-core makes its own (proxy from the environment, no cookies, bodies left
    compressed), only with a connector that verifies against `context`.
    """

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._context = context

    async def open(self) -> None:
        if not self._has_been_opened:  # never given a session: make it on the first open
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._context),
                trust_env=True,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        await super().open()


def _token_pipeline(settings: ConnectionSettings) -> dict[str, Any]:
    """azure-core pipeline settings for the credential's token requests.

    azure-identity sends token requests through azure-core's RetryPolicy, which by default retries a
    POST up to 10 times (3 on status 408/429/5xx, 3 on connection and 3 on read errors, honouring
    Retry-After, backing off 0.8 s x 2^n up to 120 s) with 300 s connection and read time-outs: one
    token could take most of an hour to fail. Here the credential gets the run's per-request time-out
    and two quick retries of its own; anything beyond that is the reader's RetryPolicy, inside the
    tenant's deadline, so a sign-in endpoint that is down costs bounded time like Graph does.
    """
    return {
        "connection_timeout": min(30.0, settings.timeout_seconds),
        "read_timeout": settings.timeout_seconds,
        "retry_total": 2,
        "retry_backoff_factor": 0.5,
        "retry_backoff_max": 8,
    }


class ThrottleGate:
    """A tenant-wide pause: after a 429, no request of this tenant leaves before Retry-After has passed.

    It sits in the HTTP client itself (an httpx request hook, the last thing before the wire), so a
    request that was prepared before the 429 arrived still waits; a 429 answer pauses it (response hook).
    """

    def __init__(self) -> None:
        self._until = 0.0

    async def wait(self) -> None:
        # A loop, not an Event: a later 429 may push the pause further out while we sleep.
        while (delay := self._until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(delay)

    def pause(self, seconds: float) -> None:
        self._until = max(self._until, time.monotonic() + seconds)

    async def on_request(self, request: httpx.Request) -> None:
        await self.wait()

    async def on_response(self, response: httpx.Response) -> None:
        self.note(response.status_code, response.headers)

    def note(self, status: int, headers: Any) -> None:
        """What an answer says about pacing: a 429 with Retry-After pauses the tenant."""
        # A 429 without Retry-After pauses nothing: the request that got it backs off exponentially with
        # jitter like any other failure (the reader's RetryPolicy), as Graph's throttling guidance asks.
        if status == 429:
            seconds = retry_after_seconds(headers)
            if seconds is not None:
                self.pause(seconds)


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None when absent/unreadable."""
    value = None
    getter = getattr(headers, "get", None) if headers is not None else None
    if getter is not None:
        value = getter("retry-after") or getter("Retry-After")
    if isinstance(value, (list, tuple, set, frozenset)):
        value = next(iter(value), None)
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


_SSL_CONTEXTS: dict[str, ssl.SSLContext] = {}


def graph_origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port defaulted by scheme: what "the same host" means for where the
    bearer token may go."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (``header.payload.signature``), base64url-decoded, without verification.

    Not verifying is deliberate: the token came over TLS from the authority, and the auditor is its client,
    not its audience; it only reads what Entra put into it (``tid``, ``roles``).
    Raises ``ValueError`` when ``token`` is not a JWT with a JSON object payload (an opaque token).
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        raise ValueError("the access token is not a JWT (expected three dot-separated parts)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise ValueError(f"the access token's payload is not base64url JSON ({type(exc).__name__})") from None
    if not isinstance(claims, dict):
        raise ValueError("the access token's payload is not a JSON object")
    return claims


def wrong_tenant_error(expected: str, found: str, source: str) -> GraphError:
    """WRONG_TENANT: ``source`` ("the access token", "GET /organization") names tenant ``found``."""
    return GraphError(
        f"{source} is for tenant {found}, not the configured tenant_id {expected}; nothing was judged, so "
        "no verdict for another tenant's directory is reported",
        code=ErrorCode.WRONG_TENANT,
        hint=f"The sign-in gave a token for tenant {found}, but the config says tenant_id = {expected}. Check "
        "this tenant's tenant_id, authority and auth method: a managed identity only ever gets tokens for its "
        "own home tenant, and a client id, secret or authority copied from another tenant's entry signs in "
        "there.",
    )


def tenant_mismatch(
    expected: str, organization_id: str | None, token_tenant_id: str | None
) -> GraphError | None:
    """WRONG_TENANT when the token's ``tid`` or the ``/organization`` id (either may be unknown: None) names
    another tenant than ``expected``; None when every known id matches."""
    expected = expected.lower()
    if token_tenant_id is not None and token_tenant_id.lower() != expected:
        return wrong_tenant_error(expected, token_tenant_id.lower(), "The access token")
    if organization_id is not None and organization_id.lower() != expected:
        return wrong_tenant_error(expected, organization_id.lower(), "GET /organization")
    return None


class TenantGuard:
    """Reads the tenant (``tid`` claim) of every bearer token the client is about to send, and refuses to send
    one issued for another tenant than the configured ``tenant_id`` (WRONG_TENANT).

    It sits in the HTTP client as a request hook: the token checked is the one actually attached by the SDK,
    and reading it costs no token request. A token that is not a JWT (opaque) cannot be read: then
    ``GET /organization`` alone decides (:meth:`GraphSession.confirm_tenant`).
    """

    def __init__(self, expected_tenant_id: str, graph_endpoint: str | None = None) -> None:
        self.expected = expected_tenant_id.lower()
        # The SDK's allowed hosts compare host names only; a token bound for the same host on another port
        # or scheme is stopped here.
        self.graph_origin = graph_origin(graph_endpoint) if graph_endpoint else None
        self.token_tenant_id: str | None = None  # the tid of the last token read
        self.opaque = False  # a token without a readable tid was sent
        self._checked: bytes | None = None  # digest of the last header that passed (not the token itself)

    def check_authorization(self, header: str | None) -> None:
        """Raise WRONG_TENANT when ``header`` (an Authorization value) carries a token for another tenant."""
        if not header or header[:7].lower() != "bearer ":
            return
        digest = hashlib.sha256(header.encode()).digest()
        if digest == self._checked:
            return
        try:
            tid = jwt_claims(header[7:].strip()).get("tid")
        except ValueError:
            tid = None
        if not isinstance(tid, str) or not tid:
            self.opaque = True
            return
        self.token_tenant_id = tid.lower()
        if self.token_tenant_id != self.expected:
            raise wrong_tenant_error(self.expected, self.token_tenant_id, "The access token")
        self._checked = digest

    async def on_request(self, request: httpx.Request) -> None:
        self.check_request(str(request.url), request.headers.get("authorization"))

    def check_request(self, url: str, header: str | None) -> None:
        """Refuse a request whose token is bound for another origin or was issued for another tenant."""
        if header and self.graph_origin is not None and graph_origin(url) != self.graph_origin:
            scheme, host, port = graph_origin(url)
            raise GraphError(
                f"A request carrying the Graph access token was about to go to {scheme}://{host}:{port}, "
                "which is not the configured Graph endpoint; it was not sent",
                code=ErrorCode.GRAPH_ERROR,
                hint="Check graph_endpoint in the config, and any proxy that rewrites Graph's answers.",
            )
        self.check_authorization(header)


def make_graph_client(
    credential: AsyncTokenCredential,
    settings: ConnectionSettings,
    gate: ThrottleGate,
    *,
    event_hooks: dict[str, list[Any]] | None = None,
    guard: TenantGuard | None = None,
) -> GraphServiceClient:
    """A GraphServiceClient on our own httpx client (trust, time-outs) with SDK retries under our control.

    `event_hooks` are extra httpx event hooks (request/response) run after the throttle gate and the tenant
    guard, for observing what is actually sent, in tests and tools. The SDK attaches the token only to the
    configured Graph host (its allowed hosts): never to a request for any other host.
    """
    guards = [guard.on_request] if guard is not None else []
    hooks = {
        "request": [gate.on_request, *guards, *(event_hooks or {}).get("request", [])],
        "response": [gate.on_response, *(event_hooks or {}).get("response", [])],
    }
    http = httpx.AsyncClient(
        event_hooks=hooks,
        verify=_ssl_context(settings.ca_bundle),
        http2=True,
        timeout=httpx.Timeout(settings.timeout_seconds, connect=min(30.0, settings.timeout_seconds)),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
    )
    options = {
        RetryHandlerOption.get_key(): RetryHandlerOption(
            max_retries=settings.sdk_retries, should_retry=settings.sdk_retries > 0
        )
    }
    client = GraphClientFactory.create_with_default_middleware(client=http, options=options)
    # An empty list would attach the token to any host, e.g. a foreign @odata.nextLink (issue 12 item 2).
    graph_host = urlsplit(settings.graph_endpoint).hostname or ""
    provider = AzureIdentityAuthenticationProvider(
        credential, scopes=[settings.scope], allowed_hosts=[graph_host.lower()]
    )
    adapter = GraphRequestAdapter(provider, client=client)
    adapter.base_url = settings.graph_endpoint.rstrip("/") + "/v1.0"
    service = GraphServiceClient(request_adapter=adapter)
    _LEAN[id(service)] = LeanSender(
        settings,
        provider,
        gate,
        guard,
        request_hooks=list((event_hooks or {}).get("request", [])),
        response_hooks=list((event_hooks or {}).get("response", [])),
    )
    return service


@dataclass
class LeanSender:
    """How the reader's requests go out (reads and `$batch` POSTs; writes keep the SDK's adapter).

    The SDK's request builders make a read (URL template, query parameters, headers) and the SDK's
    authentication provider attaches the token (its allowed hosts, the credential's cache); our throttle
    gate and tenant guard run before every request and see every answer; the request goes out through
    aiohttp (already here for azure-identity's token requests), whose C HTTP parser costs about a third of
    the CPU of httpx + httpcore + h11 per request (`benchmarks/bench_scale.py`). Kiota's per-request
    middleware chain is skipped: redirects (Graph does not redirect these), retries (off: ours are in the
    reader), URL replacement, user agent, header inspection and telemetry do nothing a read needs, and its
    query parameter name decoding is done here the same way (`tests/integration/test_lean_batch.py`
    compares the wire both ways).

    Extra httpx event hooks (capture, tests' observers) see each request and answer as httpx objects, so they
    observe this path exactly like the SDK's. Failures are raised as the httpx exceptions the SDK's path
    raises for the same failure (and answers of 300 and up as ``ODataError``), so the reader's retry policy
    treats both paths alike.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        provider: AzureIdentityAuthenticationProvider,
        gate: ThrottleGate,
        guard: TenantGuard | None,
        *,
        request_hooks: list[Any] | None = None,
        response_hooks: list[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.gate = gate
        self.guard = guard
        self.request_hooks = request_hooks or []
        self.response_hooks = response_hooks or []
        self.proxy = env_proxy(settings.graph_endpoint)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running event loop (aiohttp binds a session to its loop).
        if self._session is None:
            seconds = self.settings.timeout_seconds
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_ssl_context(self.settings.ca_bundle), limit=20),
                # Like the SDK's client: `timeout_seconds` for any one read, connecting within 30 s.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(30.0, seconds), sock_read=seconds),
                # Proxies come from the environment once (`env_proxy`), as httpx reads them; trust_env
                # would also look up ~/.netrc in a thread for every request.
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
            )
            # aiohttp re-sends an idempotent request at once, without telling, when a reused connection is
            # reset; retries are the reader's (back-off, counted, reported), as on the SDK's path. There is
            # no public switch: tests/integration/test_failure_paths.py shows a reset reaching the reader.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
        return self._session

    async def post_json(self, url: str, payload: bytes) -> bytes:
        """POST ``payload`` (JSON) to ``url``; the body on 2xx, else ``ODataError`` like the adapter raises
        (status, headers, Graph's error code, message and request-id)."""
        info = RequestInformation()
        info.http_method = Method.POST
        info.url = url
        await self.provider.authenticate_request(info)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        for value in info.headers.get("Authorization"):  # none when the host is not allowed
            headers["Authorization"] = value
        return await self._exchange("POST", url, headers, payload)

    async def send(self, info: RequestInformation) -> bytes:
        """Send a read an SDK request builder made (its URL, query parameters and headers) as the SDK's
        adapter would: the token attached by the SDK's provider, and the query parameter names decoded as
        kiota's ParametersNameDecodingHandler does (``%24select`` -> ``$select``). The URL is the one the
        reader expanded, the base URL filled in, and kept in ``info`` (`reader._pin_url`)."""
        await self.provider.authenticate_request(info)
        url = info.url
        split = urlsplit(url)
        if "%" in split.query:
            query = _NAME_DECODER.decode_uri_encoded_string(split.query, _NAME_DECODING.characters_to_decode)
            url = split._replace(query=query).geturl()
        method = info.http_method.value if info.http_method is not None else "GET"
        return await self._exchange(method, url, dict(info.request_headers or {}), info.content)

    async def _exchange(self, method: str, url: str, headers: dict[str, str], content: bytes | None) -> bytes:
        """One request through our gate, guard and hooks; the body on 2xx, else ``ODataError``."""
        await self.gate.wait()
        if self.guard is not None:  # kiota keeps header names in lower case
            token = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
            self.guard.check_request(url, token)
        observed: httpx.Request | None = None
        if self.request_hooks or self.response_hooks:
            observed = httpx.Request(method, url, headers=headers, content=content)
            for hook in self.request_hooks:
                await hook(observed)
        try:
            # encoded=True: the URL goes out as the SDK built it (already percent-encoded), not re-quoted.
            async with self._client().request(
                method,
                yarl.URL(url, encoded=True),
                data=content,
                headers=headers,
                proxy=self.proxy,
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
                status, answer_headers = answer.status, answer.headers
        except aiohttp.ClientError as exc:
            failure = as_httpx_error(exc)
            trace = observed.extensions.get("trace") if observed is not None else None
            if trace is not None:  # what httpcore tells a "trace" observer when a step fails
                await trace("http11.receive_response_headers.failed", {"exception": failure})
            raise failure from None
        self.gate.note(status, answer_headers)
        if observed is not None and self.response_hooks:
            # aiohttp has already decoded a gzip/deflate body: httpx must not decode it once more.
            shown = [(k, v) for k, v in answer_headers.items() if k.lower() != "content-encoding"]
            seen = httpx.Response(status, headers=shown, content=body, request=observed)
            for hook in self.response_hooks:
                await hook(seen)
        # Graph does not redirect these reads (nor $batch); a redirect is not an answer to read as one.
        if status >= 300:
            raise odata_error(status, answer_headers, body)
        return body

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def env_proxy(url: str) -> str | None:
    """The proxy for ``url`` from HTTPS_PROXY / ALL_PROXY / NO_PROXY, as httpx reads them for the SDK."""
    proxies = urllib.request.getproxies_environment()
    host = urlsplit(url).hostname or ""
    if not proxies or (host and urllib.request.proxy_bypass(host)):
        return None
    return proxies.get("https") or proxies.get("all") or None


def as_httpx_error(exc: aiohttp.ClientError) -> httpx.TransportError:
    """The httpx exception the SDK's path raises for the same failure (the reader's retry policy and
    messages know those): could not connect, no answer in time, or the connection dropped."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(text)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(text)
    if isinstance(
        exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)
    ):
        return httpx.RemoteProtocolError(text)
    return httpx.ReadError(text)


_NAME_DECODER = ParametersNameDecodingHandler()
_NAME_DECODING = ParametersNameDecodingHandlerOption()

# GraphServiceClient -> its LeanSender (keyed by id: the SDK's client is not ours to add attributes to).
_LEAN: dict[int, LeanSender] = {}


def lean_sender(client: GraphServiceClient) -> LeanSender | None:
    """The lean `$batch` sender of a client made by `make_graph_client` (None for any other client)."""
    return _LEAN.get(id(client))


def odata_error(status: int, headers: Any, content: bytes) -> ODataError:
    """An ``ODataError`` for an error answer, as the SDK's adapter would raise it."""
    error = MainError()
    try:
        body = json.loads(content) if content else {}
    except ValueError:
        body = {}
    raw = body.get("error") if isinstance(body, dict) else None
    if isinstance(raw, dict):
        error.code = str(raw.get("code") or "") or None
        error.message = str(raw.get("message") or "") or None
        inner = raw.get("innerError") or raw.get("innererror")
        if isinstance(inner, dict) and inner.get("request-id"):
            error.inner_error = InnerError()
            error.inner_error.request_id = str(inner["request-id"])
    exc = ODataError(error=error)
    exc.response_status_code = status
    exc.response_headers = headers
    return exc


@dataclass
class GraphSession:
    """A tenant's credential and client; use through `open_session`."""

    settings: ConnectionSettings
    credential: AsyncTokenCredential
    client: GraphServiceClient
    gate: ThrottleGate
    guard: TenantGuard | None = None

    @property
    def base_url(self) -> str:
        return str(self.client.request_adapter.base_url)

    def confirm_tenant(self, organization: Mapping[str, Any] | None) -> None:
        """Before any verdict: the token's ``tid`` (read by the guard as requests went out) and the id from
        ``GET /organization`` (when it could be read) must name the configured tenant.

        Raises GraphError WRONG_TENANT naming both ids. When neither could be read (an opaque token and no
        Organization.Read.All) the tenant cannot be confirmed: that is logged, and the audit goes on.
        """
        expected = self.settings.tenant_id.lower()
        org_id = str((organization or {}).get("id") or "").lower() or None
        token_tid = self.guard.token_tenant_id if self.guard is not None else None
        error = tenant_mismatch(expected, org_id, token_tid)
        if error is not None:
            raise error
        if org_id is None and token_tid is None:
            log.warning(
                "tenant %s: neither the access token (not a JWT) nor GET /organization (not readable) "
                "names the tenant; it could not be confirmed that the credential signed in to it",
                expected,
                extra={"tenant_id": expected, "event": "tenant_unconfirmed"},
            )


@asynccontextmanager
async def open_session(
    settings: ConnectionSettings,
    *,
    event_hooks: dict[str, list[Any]] | None = None,
    pipeline_options: dict[str, Any] | None = None,
) -> AsyncIterator[GraphSession]:
    """Open a credential and a Graph client for one tenant; both are closed on exit.

    `event_hooks` observe the Graph traffic (httpx), `pipeline_options` the token requests (azure-core).
    """
    credential = make_credential(settings, pipeline_options=pipeline_options)
    try:
        gate = ThrottleGate()
        guard = TenantGuard(settings.tenant_id, settings.graph_endpoint)
        client = make_graph_client(credential, settings, gate, event_hooks=event_hooks, guard=guard)
        try:
            yield GraphSession(settings, credential, client, gate, guard)
        finally:
            lean = _LEAN.pop(id(client), None)
            if lean is not None:
                await lean.aclose()
            http = getattr(client.request_adapter, "_http_client", None)
            if http is not None:
                await http.aclose()
    finally:
        await credential.close()


# azure-identity logs every failed sign-in at WARNING with the whole Entra answer; the auditor reports
# the failure itself (as AUTH_FAILED with a hint), so only its errors are worth letting through.
logging.getLogger("azure.identity").setLevel(logging.ERROR)
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


async def send_for_bytes(client: GraphServiceClient, info: RequestInformation) -> bytes | None:
    """Send a request the SDK built through its adapter (auth, middleware, the throttle gate) and return the
    body unparsed: the engine reads lists as plain JSON, far cheaper than the SDK's models. Any 4xx/5xx is
    raised as ``ODataError`` (``"XXX"`` is the adapter's key for every error status)."""
    adapter: Any = client.request_adapter  # its stubs claim send_primitive_async returns None
    raw: bytes | None = await adapter.send_primitive_async(info, "bytes", {"XXX": ODataError})
    return raw
