"""What the lean sender (aiohttp, `client.LeanSender`) puts on the wire and how it fails, seen from a loopback
HTTPS server standing in for Graph: headers, cookies, redirects, time-outs, connection limits, proxies, trust.

Each server binds 127.0.0.1 port 0 with a throwaway CA (the simulator's `make_server_tls`); the sender is the
one `make_graph_client` makes, with an already issued token. Time-outs are fractions of a second.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import yarl
from aiohttp import web
from azure.core.credentials import AccessToken
from azure.core.exceptions import ServiceRequestError
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from multidict import CIMultiDict, CIMultiDictProxy

from auditor.errors import ErrorCode, GraphError
from auditor.graph.client import (
    ConnectionSettings,
    GraphSession,
    LeanSender,
    TenantGuard,
    ThrottleGate,
    as_httpx_error,
    env_proxy,
    lean_sender,
    make_credential,
    make_graph_client,
    send_for_bytes,
)
from auditor.graph.reader import GraphReader, RetryPolicy
from auditor.simulator.tls import ServerTLS, make_server_tls

TENANT = "11111111-1111-1111-1111-111111111111"
ORGANIZATION = {"value": [{"id": TENANT, "displayName": "Loopback"}]}
QUICK = RetryPolicy(base_delay=0.01, max_delay=0.05)


def token(tid: str = TENANT) -> str:
    def part(data: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part({'tid': tid})}.c2ln"


class StaticToken:
    """An already issued token, as a credential (the part of AsyncTokenCredential the SDK calls)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return AccessToken(token(), int(time.time()) + 3600)

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTLS:
    return make_server_tls(tmp_path_factory.mktemp("tls"))


@dataclass
class Seen:
    method: str
    raw_path: str  # as it arrived, percent-encoding and all
    headers: dict[str, str]  # lower-cased names
    body: bytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Graph:
    """A loopback HTTPS server answering every path with `handler`; it keeps what it was sent."""

    port: int
    seen: list[Seen] = field(default_factory=list)
    peers: set[Any] = field(default_factory=set)  # the client's connections (address, port)
    in_flight: int = 0
    most_in_flight: int = 0

    def url(self, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}"


@asynccontextmanager
async def graph(tls: ServerTLS, handler: Handler) -> AsyncIterator[Graph]:
    state = Graph(0)

    async def handle(request: web.Request) -> web.StreamResponse:
        state.seen.append(
            Seen(
                request.method,
                request.raw_path,
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
            )
        )
        state.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            return await handler(request)
        finally:
            state.in_flight -= 1

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context())
    await site.start()
    state.port = runner.addresses[0][1]
    try:
        yield state
    finally:
        await runner.cleanup()


async def organization(request: web.Request) -> web.StreamResponse:
    return web.json_response(ORGANIZATION)


@asynccontextmanager
async def raw_server(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    context: ssl.SSLContext | None,
) -> AsyncIterator[int]:
    """A loopback server speaking whatever `script` writes (TLS when `context` is given); yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def settings(endpoint: str, tls: ServerTLS | None, **overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "tenant_id": TENANT,
        "client_id": "app",
        "method": "secret",
        "authority": "https://login.example",
        "graph_endpoint": endpoint,
        "scope": endpoint + "/.default",
        "ca_bundle": tls.ca_file if tls is not None else None,
        "timeout_seconds": 5.0,
    }
    values.update(overrides)
    return ConnectionSettings(**values)


@asynccontextmanager
async def session_for(
    endpoint: str, tls: ServerTLS | None, *, hooks: dict[str, list[Any]] | None = None, **overrides: Any
) -> AsyncIterator[GraphSession]:
    """A Graph session for `endpoint` as `open_session` makes it, but with an already issued token."""
    config = settings(endpoint, tls, **overrides)
    gate = ThrottleGate()
    guard = TenantGuard(config.tenant_id, endpoint)
    client = make_graph_client(StaticToken(), config, gate, event_hooks=hooks, guard=guard)  # type: ignore[arg-type]
    session = GraphSession(config, StaticToken(), client, gate, guard)  # type: ignore[arg-type]
    try:
        yield session
    finally:
        await lean(session).aclose()
        await client.request_adapter._http_client.aclose()  # type: ignore[attr-defined]


def lean(session: GraphSession) -> LeanSender:
    sender = lean_sender(session.client)
    assert sender is not None
    return sender


def read(session: GraphSession, path: str) -> RequestInformation:
    info = RequestInformation()
    info.http_method = Method.GET
    info.url = session.base_url + path
    info.headers.try_add("Accept", "application/json")
    return info


# --- what goes out ---------------------------------------------------------------------------------------


async def test_a_read_goes_out_with_the_token_and_no_client_software_header(tls: ServerTLS) -> None:
    async with graph(tls, organization) as server, session_for(server.url(), tls) as session:
        body = await lean(session).send(read(session, "/organization"))
        await lean(session).post_json(session.base_url + "/$batch", b'{"requests": []}')
    assert json.loads(body) == ORGANIZATION
    get, post = server.seen
    assert (get.method, get.raw_path) == ("GET", "/v1.0/organization")
    assert (post.method, post.raw_path, post.body) == ("POST", "/v1.0/$batch", b'{"requests": []}')
    for seen in (get, post):
        assert seen.headers["authorization"] == f"Bearer {token()}"
        # aiohttp's own "Python/3.x aiohttp/3.y" is not sent (kiota's user agent is not sent either)
        assert "user-agent" not in seen.headers
    assert post.headers["content-type"] == "application/json"


async def test_a_query_goes_out_byte_for_byte_as_the_sdk_encoded_it(tls: ServerTLS) -> None:
    query = "?%24filter=appId%20eq%20%27a%2Fb%27&%24select=id%2CappId"
    async with graph(tls, organization) as server, session_for(server.url(), tls) as session:
        await lean(session).send(read(session, "/servicePrincipals" + query))
    # the parameter names decoded as kiota does, and nothing else re-quoted
    assert (
        server.seen[0].raw_path
        == "/v1.0/servicePrincipals?$filter=appId%20eq%20%27a%2Fb%27&$select=id%2CappId"
    )


async def test_a_request_goes_out_with_its_own_method_and_body(tls: ServerTLS) -> None:
    async with graph(tls, organization) as server, session_for(server.url(), tls) as session:
        query = read(session, "/directoryObjects/getByIds")
        query.http_method = Method.POST
        query.headers.try_add("Content-Type", "application/json")
        query.content = b'{"ids": ["1"]}'
        await lean(session).send(query)
        bare = read(session, "/organization")
        bare.http_method = None  # a request builder always sets one; without, it is a read
        await lean(session).send(bare)
    assert [(seen.method, seen.raw_path, seen.body) for seen in server.seen] == [
        ("POST", "/v1.0/directoryObjects/getByIds", b'{"ids": ["1"]}'),
        ("GET", "/v1.0/organization", b""),
    ]
    assert server.seen[0].headers["content-type"] == "application/json"


async def test_cookies_set_by_the_server_are_not_sent_back(tls: ServerTLS) -> None:
    async def with_cookie(request: web.Request) -> web.StreamResponse:
        answer = web.json_response(ORGANIZATION)
        answer.set_cookie("affinity", "node-7", path="/")
        return answer

    async with graph(tls, with_cookie) as server, session_for(server.url("localhost"), tls) as session:
        for _ in range(2):
            await lean(session).send(read(session, "/organization"))
        await lean(session).post_json(session.base_url + "/$batch", b"{}")
    assert [seen.headers.get("cookie") for seen in server.seen] == [None, None, None]


@pytest.mark.parametrize("status", [300, 302, 307])
async def test_a_redirect_is_not_followed_but_raised_with_its_status(tls: ServerTLS, status: int) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/elsewhere"):
            return web.json_response(ORGANIZATION)
        return web.Response(
            status=status, headers={"Location": "/v1.0/elsewhere", "request-id": f"r-{status}"}
        )

    async with graph(tls, moved) as server, session_for(server.url(), tls) as session:
        with pytest.raises(ODataError) as info:
            await lean(session).send(read(session, "/organization"))
        with pytest.raises(ODataError) as batch:
            await lean(session).post_json(session.base_url + "/$batch", b"{}")
    assert info.value.response_status_code == status and batch.value.response_status_code == status
    assert info.value.response_headers is not None
    assert info.value.response_headers["request-id"] == f"r-{status}"
    assert [seen.raw_path for seen in server.seen] == ["/v1.0/organization", "/v1.0/$batch"]


async def test_the_hooks_see_each_request_and_answer_as_httpx_objects(tls: ServerTLS) -> None:
    requests: list[httpx.Request] = []
    answers: list[httpx.Response] = []

    async def on_request(request: httpx.Request) -> None:
        requests.append(request)

    async def on_response(response: httpx.Response) -> None:
        answers.append(response)

    async def throttled(request: web.Request) -> web.StreamResponse:
        if len(answers) == 0:
            return web.json_response({"error": {"code": "TooManyRequests"}}, status=429)
        return web.json_response(ORGANIZATION, headers={"request-id": "r-200"})

    hooks: dict[str, list[Any]] = {"request": [on_request], "response": [on_response]}
    async with graph(tls, throttled) as server, session_for(server.url(), tls, hooks=hooks) as session:
        with pytest.raises(ODataError):
            await lean(session).send(read(session, "/organization"))
        await lean(session).post_json(session.base_url + "/$batch", b'{"requests": []}')
    assert [(r.method, str(r.url), r.content) for r in requests] == [
        ("GET", server.url() + "/v1.0/organization", b""),
        ("POST", server.url() + "/v1.0/$batch", b'{"requests": []}'),
    ]
    assert [(a.status_code, a.request) for a in answers] == [(429, requests[0]), (200, requests[1])]
    assert answers[0].json() == {"error": {"code": "TooManyRequests"}}
    assert answers[1].json() == ORGANIZATION and answers[1].headers["request-id"] == "r-200"
    assert requests[1].headers["authorization"] == f"Bearer {token()}"


@pytest.mark.parametrize("coding", [web.ContentCoding.gzip, web.ContentCoding.deflate])
async def test_a_compressed_answer_is_read_and_shown_to_the_hooks_decoded(
    tls: ServerTLS, coding: web.ContentCoding
) -> None:
    # Graph compresses its answers when asked to (aiohttp asks: Accept-Encoding: gzip, deflate).
    shown: list[Any] = []

    async def on_response(response: httpx.Response) -> None:
        shown.append((response.json(), response.headers.get("content-encoding")))

    async def compressed(request: web.Request) -> web.StreamResponse:
        answer = web.json_response(ORGANIZATION)
        answer.enable_compression(coding)
        return answer

    async with (
        graph(tls, compressed) as server,
        session_for(server.url(), tls, hooks={"response": [on_response]}) as session,
    ):
        body = await lean(session).send(read(session, "/organization"))
    assert server.seen[0].headers["accept-encoding"] == "gzip, deflate"
    assert json.loads(body) == ORGANIZATION and shown == [(ORGANIZATION, None)]


async def test_only_a_response_hook_still_sees_every_answer(tls: ServerTLS) -> None:
    statuses: list[int] = []

    async def on_response(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    async with (
        graph(tls, organization) as server,
        session_for(server.url(), tls, hooks={"response": [on_response]}) as session,
    ):
        await lean(session).send(read(session, "/organization"))
    assert statuses == [200]


async def test_a_429_with_retry_after_pauses_the_tenant_before_the_next_request(tls: ServerTLS) -> None:
    async def throttled_once(request: web.Request) -> web.StreamResponse:
        if len(server.seen) == 1:
            return web.json_response(
                {"error": {"code": "TooManyRequests"}}, status=429, headers={"Retry-After": "1"}
            )
        return web.json_response(ORGANIZATION)

    async with graph(tls, throttled_once) as server, session_for(server.url(), tls) as session:
        with pytest.raises(ODataError):
            await lean(session).post_json(session.base_url + "/$batch", b"{}")
        began = time.monotonic()
        await lean(session).send(read(session, "/organization"))
    assert time.monotonic() - began >= 0.9


# --- the token and where it may go ---------------------------------------------------------------------


async def test_a_token_for_another_tenant_never_leaves(tls: ServerTLS) -> None:
    async with (
        graph(tls, organization) as server,
        session_for(server.url(), tls, tenant_id="22222222-2222-2222-2222-222222222222") as session,
    ):
        with pytest.raises(GraphError) as info:
            await lean(session).send(read(session, "/organization"))
    assert info.value.code is ErrorCode.WRONG_TENANT and server.seen == []


async def test_a_token_is_not_sent_to_another_origin(tls: ServerTLS) -> None:
    async with graph(tls, organization) as server, session_for(server.url(), tls) as session:
        lean(session).guard = TenantGuard(TENANT, "https://127.0.0.1:1")  # Graph is elsewhere
        with pytest.raises(GraphError) as info:
            await lean(session).post_json(session.base_url + "/$batch", b"{}")
    assert info.value.message.startswith("A request carrying the Graph access token was about to go to")
    assert server.seen == []


# --- failures: raised as the SDK's path raises them, so the reader retries them -----------------------------


async def test_a_hanging_read_times_out_and_the_reader_tries_it_again(tls: ServerTLS) -> None:
    async def hang_twice(request: web.Request) -> web.StreamResponse:
        if len(server.seen) <= 2:  # the first try of each
            await asyncio.sleep(3)
        return web.json_response(ORGANIZATION)

    async with (
        graph(tls, hang_twice) as server,
        session_for(server.url(), tls, timeout_seconds=0.3) as session,
    ):
        began = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await lean(session).send(read(session, "/organization"))
        assert time.monotonic() - began < 1.5
        assert await GraphReader(session, "Loopback", policy=QUICK).organization() == ORGANIZATION["value"][0]
    assert len(server.seen) == 3


async def test_a_read_slower_than_the_timeout_in_total_but_never_silent_that_long_is_read(
    tls: ServerTLS,
) -> None:
    # The time-out is per read of the socket, like the SDK's httpx client: a long answer that keeps coming
    # is not cut off.
    async def trickle(request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        await answer.prepare(request)
        for chunk in (b'{"value": ', b"[]", b"}"):
            await asyncio.sleep(0.25)
            await answer.write(chunk)
        await answer.write_eof()
        return answer

    async with graph(tls, trickle) as server, session_for(server.url(), tls, timeout_seconds=0.5) as session:
        assert await lean(session).send(read(session, "/users")) == b'{"value": []}'


async def test_a_server_that_never_completes_the_handshake_is_abandoned(tls: ServerTLS) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with raw_server(silent, None) as port:
        endpoint = f"https://127.0.0.1:{port}"
        async with session_for(endpoint, tls, timeout_seconds=0.3) as session:
            began = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout):
                await lean(session).send(read(session, "/organization"))
    assert time.monotonic() - began < 1.5


async def test_connecting_may_take_at_most_30_seconds_on_either_path(tls: ServerTLS) -> None:
    # Seeing a 30 s connect time-out happen would take 30 s: the clients' settings say it. The read time-out
    # is the configured one, and nothing limits a whole answer (a long page keeps coming).
    async with session_for("https://127.0.0.1:1", tls, timeout_seconds=45.0) as session:
        lean_timeout = lean(session)._client().timeout
        sdk_timeout = session.client.request_adapter._http_client.timeout  # type: ignore[attr-defined]
    assert (lean_timeout.total, lean_timeout.sock_connect, lean_timeout.sock_read) == (None, 30.0, 45.0)
    assert (sdk_timeout.connect, sdk_timeout.read, sdk_timeout.write, sdk_timeout.pool) == (
        30.0,
        45.0,
        45.0,
        45.0,
    )


async def test_nothing_listening_is_a_connect_error(tls: ServerTLS) -> None:
    async with raw_server(lambda r, w: asyncio.sleep(0), None) as port:
        pass  # the port is free again
    async with session_for(f"https://127.0.0.1:{port}", tls) as session:
        with pytest.raises(httpx.ConnectError, match=f"Cannot connect to host 127.0.0.1:{port}"):
            await lean(session).send(read(session, "/organization"))


async def test_an_untrusted_certificate_is_refused_and_not_retried(
    tls: ServerTLS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with graph(tls, organization) as server, session_for(server.url(), None) as session:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await lean(session).send(read(session, "/organization"))
        with pytest.raises(GraphError) as info:
            await GraphReader(session, "Loopback", policy=QUICK).organization()
    assert info.value.code is ErrorCode.NETWORK_ERROR
    assert "set ca_bundle in the config (or SSL_CERT_FILE)" in info.value.hint
    assert server.seen == []


async def http_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return head + await reader.readexactly(length)


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (b"", httpx.RemoteProtocolError),  # the connection closed without an answer
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"value"', httpx.RemoteProtocolError),  # cut short
        (b"THIS IS NOT HTTP\r\n\r\n", httpx.RemoteProtocolError),  # no HTTP answer at all
    ],
)
async def test_a_broken_answer_is_a_protocol_error_the_reader_retries(
    tls: ServerTLS, answer: bytes, kind: type[Exception]
) -> None:
    tries = 0

    async def broken_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal tries
        await http_request(reader)
        tries += 1
        body = json.dumps(ORGANIZATION).encode()
        good = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        writer.write(answer if tries == 1 else good + body)
        await writer.drain()

    async with (
        raw_server(broken_once, tls.server_context()) as port,
        session_for(f"https://127.0.0.1:{port}", tls) as session,
    ):
        with pytest.raises(kind):
            await lean(session).send(read(session, "/organization"))
        assert await GraphReader(session, "Loopback", policy=QUICK).organization() == ORGANIZATION["value"][0]
    assert tries == 2


async def test_a_reused_connection_reset_is_not_silently_resent(tls: ServerTLS) -> None:
    # aiohttp would send an idempotent request again at once on a new connection; the reader's retries
    # (back-off, counted, reported) are the only ones.
    requests = 0

    async def answer_once_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        body = json.dumps(ORGANIZATION).encode()
        await http_request(reader)
        requests += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await http_request(reader)  # the second request on the kept-alive connection: dropped
        requests += 1

    async with (
        raw_server(answer_once_then_drop, tls.server_context()) as port,
        session_for(f"https://127.0.0.1:{port}", tls) as session,
    ):
        await lean(session).send(read(session, "/organization"))
        with pytest.raises(httpx.RemoteProtocolError):
            await lean(session).send(read(session, "/organization"))
    assert requests == 2


async def test_a_failure_is_told_to_a_trace_observer_like_httpcore_does(tls: ServerTLS) -> None:
    events: list[tuple[str, Any]] = []

    async def on_request(request: httpx.Request) -> None:
        async def trace(event: str, info: dict[str, Any]) -> None:
            events.append((event, info.get("exception")))

        request.extensions["trace"] = trace

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3)
        return web.json_response(ORGANIZATION)

    hooks = {"request": [on_request]}
    async with (
        graph(tls, hang) as server,
        session_for(server.url(), tls, hooks=hooks, timeout_seconds=0.3) as session,
    ):
        with pytest.raises(httpx.ReadTimeout) as info:
            await lean(session).send(read(session, "/organization"))
    assert events == [("http11.receive_response_headers.failed", info.value)]


# --- how many connections, through which proxy ---------------------------------------------------------------


async def test_at_most_20_connections_to_graph_at_once(tls: ServerTLS) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.json_response(ORGANIZATION)

    async with graph(tls, slow) as server, session_for(server.url(), tls) as session:
        sender = lean(session)
        await asyncio.gather(*(sender.post_json(session.base_url + "/$batch", b"{}") for _ in range(24)))
    assert len(server.seen) == 24
    assert server.most_in_flight == 20 and len(server.peers) == 20


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback HTTP proxy that tunnels CONNECT requests; yields its port and the request lines it got."""
    lines: list[bytes] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n")[0]
        lines.append(line)
        host, _, port = line.split()[1].decode().rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async with raw_server(tunnel, None) as port:
        yield port, lines


@pytest.mark.parametrize(
    ("environment", "proxied"),
    [
        ({"HTTPS_PROXY": "{proxy}"}, True),
        ({"https_proxy": "{proxy}", "NO_PROXY": "graph.example,127.0.0.2"}, True),
        ({"HTTPS_PROXY": "{proxy}", "NO_PROXY": "127.0.0.1"}, False),
        ({"HTTP_PROXY": "{proxy}"}, False),  # for plain-HTTP URLs only
    ],
)
async def test_reads_go_through_the_proxy_the_environment_names(
    tls: ServerTLS, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], proxied: bool
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with connect_proxy() as (port, lines), graph(tls, organization) as server:
        for name, value in environment.items():
            monkeypatch.setenv(name, value.format(proxy=f"http://127.0.0.1:{port}"))
        async with session_for(server.url(), tls) as session:
            assert json.loads(await lean(session).send(read(session, "/organization"))) == ORGANIZATION
    assert lines == ([f"CONNECT 127.0.0.1:{server.port} HTTP/1.1".encode()] if proxied else [])
    assert len(server.seen) == 1


async def test_credentials_in_netrc_are_not_sent_to_graph(
    tls: ServerTLS, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A request the token is not attached to (a host other than the configured one) goes out bare.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine localhost login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    async with graph(tls, organization) as server, session_for(server.url(), tls) as session:
        await lean(session).post_json(server.url("localhost") + "/v1.0/$batch", b"{}")
    assert "authorization" not in server.seen[0].headers


# --- the pure parts: the proxy for a URL, the httpx error for an aiohttp one ----------------------------------


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.mark.parametrize(
    ("environment", "url", "proxy"),
    [
        ({}, "https://graph.microsoft.com", None),
        ({"HTTPS_PROXY": "http://p:3128"}, "https://graph.microsoft.com", "http://p:3128"),
        ({"https_proxy": "http://p:3128"}, "https://graph.microsoft.com", "http://p:3128"),
        ({"ALL_PROXY": "http://a:1"}, "https://graph.microsoft.com", "http://a:1"),
        (
            {"HTTPS_PROXY": "http://p:3128", "ALL_PROXY": "http://a:1"},
            "https://graph.microsoft.com",
            "http://p:3128",
        ),
        ({"HTTP_PROXY": "http://h:80"}, "https://graph.microsoft.com", None),
        (
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "graph.microsoft.com"},
            "https://graph.microsoft.com",
            None,
        ),
        ({"HTTPS_PROXY": "http://p:3128", "no_proxy": ".microsoft.com"}, "https://graph.microsoft.com", None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, "https://graph.microsoft.com", None),
        (
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "login.microsoftonline.com"},
            "https://graph.microsoft.com",
            "http://p:3128",
        ),
        (
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "graph.microsoft.com"},
            "https://graph.microsoft.us",
            "http://p:3128",
        ),
        (
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"},
            "https:///v1.0",
            "http://p:3128",
        ),  # no host to match
    ],
)
def test_the_proxy_for_graph_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert env_proxy(url) == proxy


REQUEST = aiohttp.RequestInfo(
    yarl.URL("https://graph.example/v1.0/users"),
    "GET",
    CIMultiDictProxy(CIMultiDict()),
    yarl.URL("https://graph.example/v1.0/users"),
)


class Key:
    """The connection key aiohttp names in a connector error (host, port, ssl)."""

    host = "graph.example"
    port = 443
    ssl = True


@pytest.mark.parametrize(
    ("failure", "kind", "text"),
    [
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout, "ConnectionTimeoutError"),
        (
            aiohttp.ConnectionTimeoutError("Connection timeout to host x"),
            httpx.ConnectTimeout,
            "Connection timeout to host x",
        ),
        (
            aiohttp.SocketTimeoutError("Timeout on reading data from socket"),
            httpx.ReadTimeout,
            "Timeout on reading data from socket",
        ),
        (aiohttp.ServerTimeoutError(), httpx.ReadTimeout, "ServerTimeoutError"),
        (
            aiohttp.ClientConnectorError(Key(), OSError(111, "Connection refused")),  # type: ignore[arg-type]
            httpx.ConnectError,
            "Cannot connect to host graph.example:443 ssl:default [Connection refused]",
        ),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError, "Server disconnected"),
        (
            aiohttp.ClientPayloadError("Response payload is not completed"),
            httpx.RemoteProtocolError,
            "Response payload is not completed",
        ),
        (
            aiohttp.ClientResponseError(REQUEST, (), message="Invalid status line"),
            httpx.RemoteProtocolError,
            "0, message='Invalid status line', url='https://graph.example/v1.0/users'",
        ),
        (
            aiohttp.ClientOSError(104, "Connection reset by peer"),
            httpx.ReadError,
            "[Errno 104] Connection reset by peer",
        ),
        (aiohttp.ClientConnectionError(), httpx.ReadError, "ClientConnectionError"),
    ],
)
def test_each_aiohttp_failure_is_the_httpx_error_the_reader_knows(
    failure: aiohttp.ClientError, kind: type[httpx.TransportError], text: str
) -> None:
    error = as_httpx_error(failure)
    assert type(error) is kind
    assert str(error) == text


# --- the SDK's own client (writes, and reads of a client without a lean sender) -------------------------------


async def test_the_sdk_path_gives_up_on_a_handshake_that_never_completes(tls: ServerTLS) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with (
        raw_server(silent, None) as port,
        session_for(f"https://127.0.0.1:{port}", tls, timeout_seconds=0.3) as session,
    ):
        began = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout):
            await send_for_bytes(session.client, read(session, "/organization"))
    assert time.monotonic() - began < 1.5


async def test_the_sdk_path_offers_http2_to_graph(tls: ServerTLS) -> None:
    offered: list[str | None] = []
    context = tls.server_context()
    context.set_alpn_protocols(["h2", "http/1.1"])

    async def note_protocol(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        offered.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())

    async with (
        raw_server(note_protocol, context) as port,
        session_for(f"https://127.0.0.1:{port}", tls) as session,
    ):
        with pytest.raises(httpx.HTTPError):  # it hangs up: only the negotiation is of interest
            await send_for_bytes(session.client, read(session, "/organization"))
    assert offered == ["h2"]


async def test_the_sdk_path_keeps_at_most_20_connections_and_10_idle_ones(tls: ServerTLS) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.json_response(ORGANIZATION)

    def burst(session: GraphSession, size: int) -> Awaitable[Any]:
        return asyncio.gather(
            *(send_for_bytes(session.client, read(session, "/organization")) for _ in range(size))
        )

    async with graph(tls, slow) as server, session_for(server.url(), tls) as session:
        await burst(session, 20)
        first = set(server.peers)
        server.peers.clear()
        await burst(session, 20)
        # the second burst found 10 connections kept from the first and opened 10 more
        assert len(first) == 20 and len(server.peers) == 20 and len(server.peers & first) == 10
        await burst(session, 24)
    assert len(server.seen) == 64 and server.most_in_flight == 20


async def test_the_sdk_path_shows_its_requests_to_the_hooks(tls: ServerTLS) -> None:
    seen: list[tuple[str, str]] = []
    statuses: list[int] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append((request.method, str(request.url)))

    async def on_response(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    hooks: dict[str, list[Any]] = {"request": [on_request], "response": [on_response]}
    async with graph(tls, organization) as server, session_for(server.url(), tls, hooks=hooks) as session:
        await send_for_bytes(session.client, read(session, "/organization"))
    assert seen == [("GET", server.url() + "/v1.0/organization")] and statuses == [200]


# --- the sign-in's own connections ------------------------------------------------------------------------------


async def test_a_sign_in_endpoint_that_never_completes_the_handshake_costs_the_timeout_per_try(
    tls: ServerTLS,
) -> None:
    # azure-core would wait 300 s for each connection; the credential gets the run's time-out (at most 30 s)
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await asyncio.sleep(3)

    async with raw_server(silent, None) as port:
        config = settings(
            "https://graph.example",
            tls,
            authority=f"https://127.0.0.1:{port}",
            timeout_seconds=0.3,
            client_secret="s",
        )
        credential = make_credential(config)
        began = time.monotonic()
        try:
            with pytest.raises(ServiceRequestError):
                await credential.get_token(config.scope)
        finally:
            await credential.close()
    # three tries of 0.3 s, one back-off of 1 s
    assert connections == 3 and time.monotonic() - began < 4.0
