"""Credentials and Graph clients, one pair per tenant, closed when done.

This is the only place (with the rest of `auditor.graph`) that imports `azure.identity`, `msgraph` and
kiota. The SDK's own retry middleware is switched off: retries are ours, so that one tenant-wide pause
honours every Retry-After and a write is never repeated blindly.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.middleware.options import RetryHandlerOption
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
    """Public roots, plus SSL_CERT_FILE (honoured by default) and the configured extra CA bundle."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    for extra in (os.environ.get("SSL_CERT_FILE"), str(ca_bundle) if ca_bundle else None):
        if extra:
            context.load_verify_locations(cafile=extra)
    return context


def make_credential(settings: ConnectionSettings) -> AsyncTokenCredential:
    """The azure-identity async credential for a tenant's configured method."""
    common: dict[str, Any] = {"authority": settings.authority}
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


def make_graph_client(credential: AsyncTokenCredential, settings: ConnectionSettings) -> GraphServiceClient:
    """A GraphServiceClient on our own httpx client (trust, time-outs) with SDK retries under our control."""
    http = httpx.AsyncClient(
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

    @property
    def base_url(self) -> str:
        return str(self.client.request_adapter.base_url)


@asynccontextmanager
async def open_session(settings: ConnectionSettings) -> AsyncIterator[GraphSession]:
    """Open a credential and a Graph client for one tenant; both are closed on exit."""
    credential = make_credential(settings)
    try:
        client = make_graph_client(credential, settings)
        try:
            yield GraphSession(settings, credential, client)
        finally:
            http = getattr(client.request_adapter, "_http_client", None)
            if http is not None:
                await http.aclose()
    finally:
        await credential.close()
