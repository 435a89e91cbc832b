"""The simulator's HTTPS server: identity and Graph on one loopback port, run in a background thread.

with GraphSimulator(world) as sim:
    sim.authority        # https://127.0.0.1:PORT           (azure-identity `authority`)
    sim.graph_url        # https://127.0.0.1:PORT           (Graph endpoint; requests go to /v1.0)
    sim.ca_file          # the CA bundle clients must trust
    sim.credentials      # {"USS_SIM_AUDITOR_SECRET": "...", ...}: what the apps sign in with (and, when
                         # the world has a managed identity, IDENTITY_ENDPOINT + IDENTITY_HEADER)
    sim.identity_endpoint  # http://127.0.0.1:PORT2/msi/token: the App Service managed identity endpoint
    sim.requests()       # the request log; sim.count(route=..., tenant=..., status=...)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .faults import FaultProfile, FaultRule, Observer, RequestRecord
from .graph import GraphService, HtmlPage, Reply, error_body
from .identity import IdentityService, TokenError
from .tls import make_client_certificate, make_server_tls
from .world import World, thumbprint

_GRAPH_HEADERS = {
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
    "x-ms-ags-diagnostic": '{"ServerInfo":{"DataCenter":"Simulated","Slice":"E","Ring":"0","ScaleUnit":"000"}}',
    "x-ms-resource-unit": "1",
}


def provision_credentials(world: World, directory: Path) -> dict[str, str]:
    """Make each app's secrets and certificates; return them as environment variables for clients.

    They are new at every start and never written into the repository; `serve` writes them to a file
    readable by its owner only.
    """
    published: dict[str, str] = {}
    for app in world.apps.values():
        prefix = app.env_prefix
        if "secret" in app.credential_kinds:
            value = secrets.token_urlsafe(30)
            app.secrets.append(value)
            published[f"{prefix}_SECRET"] = value
        if "previous_secret" in app.credential_kinds:
            # Handed out, but never accepted: what a client holds after the app's secret was rotated.
            published[f"{prefix}_PREVIOUS_SECRET"] = secrets.token_urlsafe(30)
        if "certificate" in app.credential_kinds:
            path = directory / f"{prefix.lower()}.pem"
            cert = make_client_certificate(
                path, f"{app.name} (simulator)", valid_days=app.certificate_valid_days
            )
            pem = x509.load_der_x509_certificate(cert.certificate_der).public_bytes(
                serialization.Encoding.PEM
            )
            # Clients name the certificate by its SHA-256 thumbprint (x5t#S256) or, older ones, SHA-1 (x5t).
            sha1 = base64.urlsafe_b64encode(hashlib.sha1(cert.certificate_der).digest()).decode().rstrip("=")  # noqa: S324
            app.certificates[thumbprint(cert.certificate_der)] = pem
            app.certificates[sha1] = pem
            published[f"{prefix}_CERTIFICATE"] = str(path)
    return published


class GraphSimulator:
    """Runs the simulator on its own event loop in a daemon thread (so sync and async callers alike can
    use it, and its work never blocks the client's loop)."""

    def __init__(
        self,
        world: World,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: Path | None = None,
        seed: int = 0,
        log_limit: int = 200_000,
    ) -> None:
        self.world = world
        self.host = host
        self.port = port
        self._own_dir = state_dir is None
        self.state_dir = Path(tempfile.mkdtemp(prefix="uss-sim-")) if state_dir is None else state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.observer = Observer(log_limit=log_limit)
        self.credentials: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._identity_runner: web.AppRunner | None = None
        # Test hook: when set, every @odata.nextLink points at this origin instead (a hostile host).
        self.next_link_origin: str | None = None
        self.identity_port = 0
        # The secret App Service puts in IDENTITY_HEADER; the token endpoint refuses requests without it.
        self._identity_header = secrets.token_urlsafe(24)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.identity: IdentityService
        self.graph: GraphService

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> GraphSimulator:
        tls = make_server_tls(self.state_dir)
        self.ca_file = tls.ca_file
        self.credentials = provision_credentials(self.world, self.state_dir)
        has_managed_identity = any(a.home_tenant_id for a in self.world.apps.values())
        self._ssl = tls.server_context()
        self._thread = threading.Thread(target=self._run, name="graph-simulator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the Graph simulator could not start: {self._error}") from self._error
        if has_managed_identity:
            # What App Service sets in the app's environment (azure-identity's ManagedIdentityCredential
            # picks the App Service flow when both are present).
            self.credentials["IDENTITY_ENDPOINT"] = self.identity_endpoint
            self.credentials["IDENTITY_HEADER"] = self._identity_header
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._openid)
        app.router.add_get("/_simulator/stats", self._stats)
        app.router.add_route("*", "/v1.0/{tail:.*}", self._graph)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        # App Service's managed identity endpoint is a plain-http listener on the host, apart from Entra:
        # its own runner, so that Graph and the token endpoint are never served over http.
        identity_app = web.Application()
        identity_app.router.add_get("/msi/token", self._managed_identity)
        self._identity_runner = web.AppRunner(identity_app, access_log=None)
        await self._identity_runner.setup()
        identity_site = web.TCPSite(self._identity_runner, self.host, 0)
        await identity_site.start()
        identity_server = identity_site._server
        assert identity_server is not None
        self.identity_port = identity_server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.identity = IdentityService(self.world, self.authority)
        self.identity.audiences.add(self.graph_url)
        self.graph = GraphService(self.world, self.identity, self.observer, seed=self.seed)

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._identity_runner is not None:
            await self._identity_runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> GraphSimulator:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()

    # --- addresses ---------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    @property
    def authority(self) -> str:
        """What azure-identity takes as `authority` (tokens at {authority}/{tenant}/oauth2/v2.0/token)."""
        return self.origin

    @property
    def graph_url(self) -> str:
        """The Graph endpoint (without the version), as a config's `graph_endpoint`."""
        return self.origin

    @property
    def scope(self) -> str:
        return f"{self.graph_url}/.default"

    @property
    def identity_endpoint(self) -> str:
        """The managed identity token endpoint, as App Service's IDENTITY_ENDPOINT."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.identity_port}/msi/token"

    # --- control and observation (thread-safe) -----------------------------------------------------

    def call(self, func: Any, *args: Any) -> Any:
        """Run `func(*args)` on the simulator's loop and return its result (to touch state safely)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(_as_coroutine(func, *args), self._loop).result(30)

    def add_fault_rule(self, rule: FaultRule) -> FaultRule:
        self.call(self.graph.rules.append, rule)
        return rule

    def clear_fault_rules(self) -> None:
        self.call(self.graph.rules.clear)

    def set_faults(self, profile: FaultProfile | None, tenant_id: str | None = None) -> None:
        """Set the fault profile of one tenant, or the default of all tenants."""

        def apply() -> None:
            if tenant_id is None:
                self.world.default_faults = profile
            else:
                tenant = self.world.tenant(tenant_id)
                assert tenant is not None, tenant_id
                tenant.faults = profile

        self.call(apply)

    def requests(self) -> list[RequestRecord]:
        return self.observer.snapshot()[0]

    def counters(self) -> Counter[tuple[str | None, str, int]]:
        return self.observer.snapshot()[1]

    def count(
        self,
        *,
        route: str | None = None,
        tenant: str | None = None,
        status: int | None = None,
        method: str | None = None,
        in_batch: bool | None = None,
    ) -> int:
        """How many requests (batch items included) match; each argument narrows the count."""
        total = 0
        for record in self.requests():
            if route is not None and record.route != route:
                continue
            if tenant is not None and (record.tenant_id or "").lower() != tenant.lower():
                continue
            if status is not None and record.status != status:
                continue
            if method is not None and record.method != method:
                continue
            if in_batch is not None and (record.batch_parent is not None) != in_batch:
                continue
            total += 1
        return total

    @property
    def early_retries(self) -> int:
        return self.observer.snapshot()[2]

    def issued_tokens(self) -> list[str]:
        """The access tokens handed out so far (bounded to the most recent 10,000), for leak checks."""
        return list(self.identity.issued)

    def reset_observations(self) -> None:
        self.observer.reset()

    # --- HTTP handlers -------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        token_url = f"{self.origin}/{tenant}/oauth2/v2.0/token"
        seq = self.observer.next_seq()
        rule = next(
            (
                r
                for r in self.graph.rules
                if r.route == "identity.token"
                and not r.after
                and r.matches("identity.token", "POST", tenant, False)
            ),
            None,
        )
        if rule is not None:  # a test's targeted fault on the sign-in endpoint (503, reset, slow answer)
            rule.hits += 1
            self.observer.record(
                RequestRecord(
                    seq, _now(), tenant, form.get("client_id"), "POST", f"/{tenant}/oauth2/v2.0/token",
                    "identity.token", 0 if rule.reset else rule.status, fault="rule",
                )
            )  # fmt: skip
            if rule.delay_seconds:
                await asyncio.sleep(rule.delay_seconds)
            if rule.reset:
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError("simulated connection reset")
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
            error = {"error": "temporarily_unavailable", "error_description": f"AADSTS50000: {rule.message}"}
            return web.json_response(error, status=rule.status, headers=headers)
        try:
            body = self.identity.token(tenant, form, token_url)
            status = 200
        except TokenError as exc:
            body, status = exc.body(), exc.status
        self.observer.record(
            RequestRecord(
                seq,
                _now(),
                tenant,
                form.get("client_id"),
                "POST",
                f"/{tenant}/oauth2/v2.0/token",
                "identity.token",
                status,
            )
        )
        return web.json_response(body, status=status, headers={"Cache-Control": "no-store, no-cache"})

    async def _managed_identity(self, request: web.Request) -> web.StreamResponse:
        """App Service's ``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=...`` with the
        ``X-IDENTITY-HEADER`` secret (learn.microsoft.com/azure/app-service/overview-managed-identity)."""
        query = request.rel_url.query
        client_id = query.get("client_id")
        seq = self.observer.next_seq()
        status = 200
        body: dict[str, Any]
        if not secrets.compare_digest(request.headers.get("X-IDENTITY-HEADER", ""), self._identity_header):
            # The page says requests without the header are rejected; the exact answer is not documented.
            status, body = 401, {"statusCode": 401, "message": "Unauthorized: X-IDENTITY-HEADER is missing."}
        elif query.get("api-version") != "2019-08-01":
            status, body = 400, {"statusCode": 400, "message": "Unsupported api-version."}
        else:
            try:
                body = self.identity.managed_identity_token(client_id, query.get("resource", ""))
            except TokenError as exc:
                status, body = exc.status, {"statusCode": exc.status, "message": exc.description}
        tenant = _token_tenant(str(body.get("access_token") or ""))
        self.observer.record(
            RequestRecord(
                seq,
                _now(),
                tenant or None,
                client_id,
                "GET",
                "/msi/token",
                "identity.managed_identity",
                status,
            )
        )
        return web.json_response(body, status=status)

    async def _openid(self, request: web.Request) -> web.StreamResponse:
        try:
            return web.json_response(
                self.identity.openid_configuration(request.match_info["tenant"], self.origin)
            )
        except TokenError as exc:
            return web.json_response(exc.body(), status=exc.status)

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        log, counters, early = self.observer.snapshot()
        return web.json_response(
            {
                "requests": len(log),
                "early_retries": early,
                "counters": [
                    {"tenant": t, "route": r, "status": s, "count": n} for (t, r, s), n in counters.items()
                ],
            }
        )

    async def _unknown(self, request: web.Request) -> web.StreamResponse:
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id", request_id)
        body = error_body("BadRequest", "Invalid version.", request_id, client_request_id)
        headers = {**_GRAPH_HEADERS, "request-id": request_id, "client-request-id": client_request_id}
        return web.json_response(body, status=400, headers=headers)

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await request.read()
        reply: Reply = await self.graph.handle(
            request.method, path, list(request.rel_url.query.items()), headers, body, f"{self.origin}/v1.0"
        )
        if reply.reset:
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("simulated connection reset")
        out_headers = {**_GRAPH_HEADERS, **reply.headers}
        if reply.body is None:
            return web.Response(status=reply.status, headers=out_headers)
        answer = reply.body
        if isinstance(answer, HtmlPage):
            return web.Response(
                text=answer, status=reply.status, headers=out_headers, content_type="text/html"
            )
        if self.next_link_origin and isinstance(answer, dict) and "@odata.nextLink" in answer:
            # Not something Graph does (its links point back at Graph): an answer rewritten on the way, for
            # tests that prove the client keeps its token away from another host.
            link = str(answer["@odata.nextLink"])
            answer = {**answer, "@odata.nextLink": link.replace(self.origin, self.next_link_origin, 1)}
        return web.json_response(
            answer, status=reply.status, headers=out_headers, content_type="application/json"
        )


def _now() -> float:
    return time.time()


def _token_tenant(token: str) -> str:
    """The tid claim of a token the simulator issued (for the request log)."""
    try:
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        return str(claims.get("tid") or "")
    except (IndexError, ValueError):
        return ""


async def _as_coroutine(func: Any, *args: Any) -> Any:
    return func(*args)


@contextmanager
def running(world: World, **kwargs: Any) -> Iterator[GraphSimulator]:
    """`with running(world) as sim:` — start a simulator and stop it afterwards."""
    sim = GraphSimulator(world, **kwargs).start()
    try:
        yield sim
    finally:
        with suppress(Exception):
            sim.stop()
