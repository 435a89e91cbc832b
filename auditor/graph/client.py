"""Credentials and Graph clients, one pair per tenant, closed when done.

This is the only place (with the rest of `auditor.graph`) that imports `azure.identity`, `msgraph` and
kiota. The SDK's own retry middleware is switched off: retries are ours, so that one tenant-wide pause
honours every Retry-After and a write is never repeated blindly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import certifi
import httpx
from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import (
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory

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


def make_credential(settings: ConnectionSettings) -> AsyncTokenCredential:
    """The azure-identity async credential for a tenant's configured method."""
    common: dict[str, Any] = {"authority": settings.authority, **_token_pipeline(settings)}
    if settings.ca_bundle is not None:
        common["connection_verify"] = str(settings.ca_bundle)
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
    kwargs: dict[str, Any] = {}
    if settings.client_id:
        kwargs["client_id"] = settings.client_id
    return ManagedIdentityCredential(**kwargs)


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
        # A 429 without Retry-After pauses nothing: the request that got it backs off exponentially with
        # jitter like any other failure (the reader's RetryPolicy), as Graph's throttling guidance asks.
        if response.status_code == 429:
            seconds = retry_after_seconds(response.headers)
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


def make_graph_client(
    credential: AsyncTokenCredential,
    settings: ConnectionSettings,
    gate: ThrottleGate,
    *,
    event_hooks: dict[str, list[Any]] | None = None,
) -> GraphServiceClient:
    """A GraphServiceClient on our own httpx client (trust, time-outs) with SDK retries under our control.

    `event_hooks` are extra httpx event hooks (request/response) run after the throttle gate, for
    observing what is actually sent, in tests and tools.
    """
    hooks = {
        "request": [gate.on_request, *(event_hooks or {}).get("request", [])],
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
    provider = AzureIdentityAuthenticationProvider(credential, scopes=[settings.scope])
    adapter = GraphRequestAdapter(provider, client=client)
    adapter.base_url = settings.graph_endpoint.rstrip("/") + "/v1.0"
    return GraphServiceClient(request_adapter=adapter)


@dataclass
class GraphSession:
    """A tenant's credential and client; use through `open_session`."""

    settings: ConnectionSettings
    credential: AsyncTokenCredential
    client: GraphServiceClient
    gate: ThrottleGate

    @property
    def base_url(self) -> str:
        return str(self.client.request_adapter.base_url)


@asynccontextmanager
async def open_session(
    settings: ConnectionSettings, *, event_hooks: dict[str, list[Any]] | None = None
) -> AsyncIterator[GraphSession]:
    """Open a credential and a Graph client for one tenant; both are closed on exit."""
    credential = make_credential(settings)
    try:
        gate = ThrottleGate()
        client = make_graph_client(credential, settings, gate, event_hooks=event_hooks)
        try:
            yield GraphSession(settings, credential, client, gate)
        finally:
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
