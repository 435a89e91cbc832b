"""`auditor simulator serve --replay DIR`: serve a capture (`auditor audit --capture DIR`) back over HTTPS.

A replay answers each request with what the real service answered to the same request in the capture,
so the same audit against the replay gives the same verdicts, counts and error codes: a problem seen in
a real tenant becomes a regression test here. A server rather than a converter to a simulator fixture:
the fixture describes a directory and the simulator computes answers from it, but a capture is evidence
of answers (an error, a throttle, a shape nobody documented) that the fixture model cannot express.

How a request finds its answer:
- The tenant: a token request names it in its path (``/{tenant}/oauth2/v2.0/token``); every Graph request
  carries a token this server issued, which it maps back to that tenant.
- The request: its method, path and query (names and values decoded, in any order), independent of the
  host (the replay's differs) and of ``$skiptoken``/``$deltatoken`` values (opaque, different per run).
  Paging links in answers are pointed at this server.
- Several answers to the same request (a 429, then a 200; page 1, page 2) are served in captured order;
  after the last, the last one is repeated.
- ``$batch`` items are answered by their own request, never by position: items arrive in any order and
  may be grouped differently from the capture. A batch that failed as a whole in the capture (a 429 or
  5xx on the POST itself) fails as a whole again for the first batch that carries one of its items.
- Tokens are issued here (the capture holds none): a captured sign-in failure is answered with the
  captured error, a success with a fresh token carrying the captured claims (``tid``, ``roles``, ...).
- A request that got no answer in the capture gets none here either: a reset closes the connection, a
  time-out (or a request still waiting when the tenant was cut short) is left waiting.
- A request the capture has no answer for gets 400 ``ReplayNoCapturedAnswer`` and is counted
  (``/_replay/stats``): the auditor asked something it did not ask when the capture was made.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from aiohttp import web

from auditor.graph.capture import CaptureError, read_capture

from .tls import make_server_tls

PAGING_TOKENS: Final = frozenset({"$skiptoken", "$deltatoken", "skiptoken", "deltatoken"})
# Headers describing the captured connection, not the answer: the replay's own server sets them.
_HOP_HEADERS: Final = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "date", "server", "keep-alive"}
)
TIMEOUT_STALL_SECONDS: Final = 600.0  # a captured time-out: answer nothing until the client gives up
REPLAY_SECRET_ENV: Final = "USS_REPLAY_SECRET"  # noqa: S105 (the name of a variable, any value)


def request_key(method: str, url: str, base_path: str = "/v1.0") -> str:
    """What identifies a request across runs: method, path and sorted decoded query, without host or
    paging token values. A relative ``url`` (a ``$batch`` item's) is taken under ``base_path``."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not parts.scheme and not path.lower().startswith(("/v1.0/", "/beta/")):
        path = base_path.rstrip("/") + "/" + path.lstrip("/")
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        lowered = name.lower()
        query.append((lowered, "*" if lowered in PAGING_TOKENS else value))
    text = f"{method.upper()} {path.rstrip('/')}"
    return f"{text}?{urlencode(sorted(query))}" if query else text


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: Any
    # "reset", "timeout" or "cancelled": the capture got no answer; "omitted": a $batch answer left it out
    no_answer: str | None = None
    batch_seq: int | None = None  # set when the whole $batch POST failed: it fails as a whole again


@dataclass
class _TenantReplay:
    tenant_id: str
    tokens: deque[dict[str, Any]] = field(default_factory=deque)
    answers: dict[str, deque[_Answer]] = field(default_factory=dict)

    def add(self, key: str, answer: _Answer) -> None:
        self.answers.setdefault(key, deque()).append(answer)

    def peek(self, key: str) -> _Answer | None:
        queue = self.answers.get(key)
        return queue[0] if queue else None

    def take(self, key: str) -> _Answer | None:
        """The next captured answer; the last one is repeated once the others are used up."""
        queue = self.answers.get(key)
        if not queue:
            return None
        return queue.popleft() if len(queue) > 1 else queue[0]


def index_capture(records: list[dict[str, Any]], tenant_id: str) -> _TenantReplay:
    """One tenant's records, as queues of answers per request key (batch items by their own request)."""
    replay = _TenantReplay(tenant_id)
    for record in records:
        if record.get("kind") == "token":
            replay.tokens.append(record)
            continue
        request = record.get("request") or {}
        response = record.get("response")
        method = str(request.get("method", "GET"))
        url = str(request.get("url", ""))
        key = request_key(method, url)
        no_answer = record.get("no_answer")
        answer = (
            _Answer(0, {}, None, no_answer=str(no_answer))
            if response is None
            else _Answer(int(response["status"]), dict(response.get("headers") or {}), response.get("body"))
        )
        body = request.get("body")
        if key.split("?")[0].endswith("/$batch") and method.upper() == "POST" and isinstance(body, dict):
            base = _version_path(url)
            items = {str(i.get("id")): i for i in body.get("requests", []) if isinstance(i, dict)}
            if answer.status == 200 and isinstance(answer.body, dict):
                answered = {str(item.get("id")): item for item in answer.body.get("responses", [])}
                for item_id, sent in items.items():
                    item = answered.get(item_id)
                    replay.add(
                        request_key(str(sent.get("method", "GET")), str(sent.get("url", "")), base),
                        _Answer(int(item.get("status", 0)), dict(item.get("headers") or {}), item.get("body"))
                        if item is not None
                        else _Answer(0, {}, None, no_answer="omitted"),  # missing from the batch's answer
                    )
            else:  # failed (or unanswered) as a whole: each item's next answer is that failure
                answer.batch_seq = int(record.get("seq", 0))
                for sent in items.values():
                    replay.add(
                        request_key(str(sent.get("method", "GET")), str(sent.get("url", "")), base), answer
                    )
            continue
        replay.add(key, answer)
    return replay


def _version_path(url: str) -> str:
    path = urlsplit(url).path
    return "/" + path.strip("/").split("/")[0] if path.strip("/") else "/v1.0"


class ReplayServer:
    """Serves a capture over HTTPS on loopback in a background thread (like `GraphSimulator`)."""

    def __init__(
        self, capture_dir: Path, *, host: str = "127.0.0.1", port: int = 0, state_dir: Path | None = None
    ) -> None:
        self.capture_dir = capture_dir
        self.manifest, records = read_capture(capture_dir)
        self.tenants = {key: index_capture(lines, key) for key, lines in records.items()}
        self.host = host
        self.port = port
        self._own_dir = state_dir is None
        self.state_dir = Path(tempfile.mkdtemp(prefix="uss-replay-")) if state_dir is None else state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._issued: dict[str, str] = {}  # access token -> tenant key
        self.served: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()  # answered statuses, $batch items included
        self.misses: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> ReplayServer:
        tls = make_server_tls(self.state_dir)
        self.ca_file = tls.ca_file
        self._ssl = tls.server_context()
        self._thread = threading.Thread(target=self._run, name="graph-replay", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the replay server could not start: {self._error}") from self._error
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
        if self._runner is not None:
            loop.run_until_complete(self._runner.cleanup())
        loop.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._openid)
        app.router.add_get("/_replay/stats", self._stats)
        app.router.add_route("*", "/{tail:.*}", self._graph)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        return self.origin

    @property
    def graph_url(self) -> str:
        return self.origin

    # --- a config to audit the replay with -----------------------------------------------------

    def config_text(self, *, secret_env: str = REPLAY_SECRET_ENV) -> str:
        """TOML for `auditor audit` against this replay: the captured tenants and vendor settings, every
        tenant signing in with a client secret from ``secret_env`` (any value: the replay checks none)."""
        vendor = self.manifest.get("vendor") or {}
        lines = ["# Audits the capture served by `auditor simulator serve --replay`.", "[vendor]"]
        lines += [f"{key} = {_toml_string(str(value))}" for key, value in vendor.items() if value is not None]
        if self.manifest.get("currency"):
            lines += ["", "[billing]", f"currency = {_toml_string(str(self.manifest['currency']))}"]
        lines += [
            "",
            "[auth]",
            "allow_custom_endpoints = true",  # the replay server stands in for Microsoft's hosts
            'method = "secret"',
            f"client_secret_env = {_toml_string(secret_env)}",
            f"authority = {_toml_string(self.authority)}",
            f"graph_endpoint = {_toml_string(self.graph_url)}",
            f"ca_bundle = {_toml_string(str(self.ca_file.resolve()))}",
            "",
        ]
        for tenant in self.manifest.get("tenants", []):
            lines += [
                "[[tenants]]",
                f"name = {_toml_string(str(tenant.get('name') or tenant['tenant_id']))}",
                f"tenant_id = {_toml_string(str(tenant['tenant_id']))}",
                f"client_id = {_toml_string(str(tenant.get('client_id') or '00000000-0000-0000-0000-000000000000'))}",
            ]
            if tenant.get("price_per_mailbox") is not None:
                lines.append(f"price_per_mailbox = {float(tenant['price_per_mailbox'])!r}")
            lines.append("")
        return "\n".join(lines)

    # --- handlers --------------------------------------------------------------------------------

    def _tenant_of_token(self, request: web.Request) -> _TenantReplay | None:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        key = self._issued.get(token)
        return self.tenants.get(key) if key is not None else None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        tenant = self.tenants.get(request.match_info["tenant"].lower())
        if tenant is None or not tenant.tokens:
            self.misses.append(f"token {request.match_info['tenant']}")
            return web.json_response(
                {
                    "error": "invalid_tenant",
                    "error_description": f"AADSTS90002: Tenant '{request.match_info['tenant']}' is not in "
                    "this capture.",
                    "error_codes": [90002],
                },
                status=400,
            )
        record = tenant.tokens.popleft() if len(tenant.tokens) > 1 else tenant.tokens[0]
        response = record.get("response") or {}
        status = int(response.get("status", 200))
        body = response.get("body")
        self.served["token"] += 1
        if status != 200 or not isinstance(body, dict):
            return web.json_response(body, status=status, headers={"Cache-Control": "no-store, no-cache"})
        answer = {k: v for k, v in body.items() if k != "token_claims"}
        lifetime = int(answer.get("expires_in") or 3599)
        now = int(time.time())
        claims = {**(body.get("token_claims") or {}), "iat": now, "nbf": now, "exp": now + lifetime}
        token = ".".join(
            _b64url(part)
            for part in (json.dumps({"typ": "JWT", "alg": "none"}).encode(), json.dumps(claims).encode())
        )
        token += "." + _b64url(secrets.token_bytes(32))
        self._issued[token] = tenant.tenant_id
        answer.update({"access_token": token, "expires_in": lifetime})
        answer.pop("expires_on", None)
        return web.json_response(answer, headers={"Cache-Control": "no-store, no-cache"})

    async def _openid(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        return web.json_response(
            {
                "token_endpoint": f"{self.origin}/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"{self.origin}/{tenant}/oauth2/v2.0/authorize",
                "issuer": f"{self.origin}/{tenant}/v2.0",
            }
        )

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"served": dict(self.served), "statuses": dict(self.statuses), "misses": list(self.misses)}
        )

    async def _graph(self, request: web.Request) -> web.StreamResponse:
        tenant = self._tenant_of_token(request)
        if tenant is None:
            return self._graph_error(
                401, "InvalidAuthenticationToken", "Access token is empty or was not issued by this replay."
            )
        url = str(request.rel_url)
        key = request_key(request.method, url)
        if key.split("?")[0].endswith("/$batch") and request.method == "POST":
            return await self._batch(request, tenant, _version_path(url))
        answer = tenant.take(key)
        if answer is None:
            return self._miss(tenant, key)
        return await self._respond(request, answer, key)

    async def _batch(self, request: web.Request, tenant: _TenantReplay, base: str) -> web.StreamResponse:
        try:
            payload = json.loads(await request.read())
            items = [i for i in payload.get("requests", []) if isinstance(i, dict)]
        except (ValueError, AttributeError):
            return self._graph_error(400, "BadRequest", "Invalid batch payload.")
        keys = [request_key(str(i.get("method", "GET")), str(i.get("url", "")), base) for i in items]
        # A batch that failed as a whole in the capture fails as a whole again, once per captured failure.
        for key in keys:
            head = tenant.peek(key)
            if head is not None and head.batch_seq is not None:
                seq = head.batch_seq
                for other in keys:
                    first = tenant.peek(other)
                    if first is not None and first.batch_seq == seq:
                        tenant.take(other)
                return await self._respond(request, head, f"POST {base}/$batch")
        responses = []
        for item, key in zip(items, keys, strict=True):
            answer = tenant.take(key)
            if answer is None:
                self.misses.append(f"{tenant.tenant_id} {key}")
                answer = _Answer(400, {"content-type": "application/json"}, _miss_body(key))
            elif answer.no_answer is not None:  # the captured answer left this item out: so does the replay
                continue
            self.served["batch item"] += 1
            self.statuses[answer.status] += 1
            responses.append(
                {
                    "id": item.get("id"),
                    "status": answer.status,
                    "headers": answer.headers,
                    "body": self._relink(answer.body),
                }
            )
        self.served["graph"] += 1
        return web.json_response({"responses": responses}, headers={"request-id": str(uuid.uuid4())})

    async def _respond(self, request: web.Request, answer: _Answer, key: str) -> web.StreamResponse:
        self.served["graph"] += 1
        if answer.no_answer in ("timeout", "cancelled"):
            await asyncio.sleep(TIMEOUT_STALL_SECONDS)
        if answer.no_answer is not None:
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError(f"replayed: no answer to {key} in the capture")
        self.statuses[answer.status] += 1
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
        if answer.body is None:
            headers.pop("content-type", None)
            return web.Response(status=answer.status, headers=headers)
        if isinstance(answer.body, str) and not str(headers.get("content-type", "")).startswith(
            "application/json"
        ):
            return web.Response(status=answer.status, headers=headers, text=answer.body)
        headers["content-type"] = "application/json; charset=utf-8"
        return web.Response(
            status=answer.status, headers=headers, body=json.dumps(self._relink(answer.body)).encode()
        )

    def _relink(self, body: Any) -> Any:
        """Paging links (and other absolute Graph URLs in ``@odata.*`` keys) pointed at this server."""
        if isinstance(body, list):
            return [self._relink(v) for v in body]
        if not isinstance(body, dict):
            return body
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key.startswith("@odata.") and key.endswith("Link") and isinstance(value, str):
                parts = urlsplit(value)
                value = urlunsplit(
                    ("https", f"{self.host}:{self.port}", parts.path, parts.query, parts.fragment)
                )
            out[key] = self._relink(value)
        return out

    def _miss(self, tenant: _TenantReplay, key: str) -> web.StreamResponse:
        self.misses.append(f"{tenant.tenant_id} {key}")
        return web.json_response(_miss_body(key), status=400)

    def _graph_error(self, status: int, code: str, message: str) -> web.StreamResponse:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _miss_body(key: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "ReplayNoCapturedAnswer",
            "message": f"The capture holds no answer for {key}.",
        }
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


__all__ = ["REPLAY_SECRET_ENV", "CaptureError", "ReplayServer", "index_capture", "request_key"]
