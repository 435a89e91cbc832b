"""Real local receivers for the notification tests: an SMTP server (aiosmtpd, STARTTLS + AUTH, with a
throwaway CA made by the simulator's TLS helper) and an HTTP webhook receiver (aiohttp), each on
127.0.0.1 in its own thread, so the code under test talks to them over real sockets.

A pytest plugin (``pytest_plugins`` in tests/conftest.py): its fixtures serve every test directory."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from auditor.simulator.tls import ServerTLS, make_server_tls

SMTP_USER = "uss-auditor@example.com"
SMTP_PASSWORD = "smtp-Pa55word-for-tests-7Qx"  # the value tests scan output for
SMTP_PASSWORD_ENV = "USS_TEST_SMTP_PASSWORD"
WEBHOOK_TOKEN = "webhook-t0ken-for-tests-Zr8"  # part of the webhook URL path: a secret
WEBHOOK_URL_ENV = "USS_TEST_WEBHOOK_URL"


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Mailbox:
    """What the SMTP server received."""

    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, accepted)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        out = []
        for envelope in self.envelopes:
            content = envelope.original_content or envelope.content
            assert isinstance(content, bytes)
            parsed = message_from_bytes(content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            out.append(parsed)
        return out


def body_of(message: EmailMessage, kind: str) -> str:
    """The text/plain or text/html body of a received message."""
    part = message.get_body((kind,))
    assert part is not None, f"no text/{kind} part"
    content: str = part.get_content()
    return content


@dataclass
class SmtpServer:
    host: str
    port: int
    tls: ServerTLS | None
    mailbox: Mailbox


@pytest.fixture(scope="session")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ServerTLS:
    """A throwaway CA and a certificate for 127.0.0.1 / localhost."""
    return make_server_tls(tmp_path_factory.mktemp("smtp-tls"))


def _start_smtp(mailbox: Mailbox, tls: ServerTLS | None, *, auth: bool = True) -> tuple[Controller, int]:
    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == SMTP_USER
            and data.password.decode() == SMTP_PASSWORD
        )
        mailbox.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "?", ok))
        return AuthResult(success=ok, handled=False)

    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs.update(tls_context=tls.server_context(), require_starttls=True)
    if auth:
        kwargs.update(authenticator=authenticator, auth_require_tls=True, auth_required=True)
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, port


@pytest.fixture
def smtp_server(server_tls: ServerTLS) -> Iterator[SmtpServer]:
    """SMTP on 127.0.0.1 requiring STARTTLS, then AUTH (user SMTP_USER, password SMTP_PASSWORD)."""
    mailbox = Mailbox()
    controller, port = _start_smtp(mailbox, server_tls)
    try:
        yield SmtpServer("127.0.0.1", port, server_tls, mailbox)
    finally:
        controller.stop()


@pytest.fixture
def plain_smtp_server() -> Iterator[SmtpServer]:
    """SMTP without TLS and without AUTH (a local relay)."""
    mailbox = Mailbox()
    controller, port = _start_smtp(mailbox, None, auth=False)
    try:
        yield SmtpServer("127.0.0.1", port, None, mailbox)
    finally:
        controller.stop()


@dataclass
class WebhookReceiver:
    """A local HTTP endpoint that records the JSON bodies POSTed to /hooks/<token>."""

    port: int
    bodies: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    reply: str = "ok"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{WEBHOOK_TOKEN}"


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(port=0)
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    runner_box: list[web.AppRunner] = []

    async def handle(request: web.Request) -> web.Response:
        if request.match_info["token"] != WEBHOOK_TOKEN:
            # Like some real receivers, the error echoes the URL, token and all: the sender must scrub it.
            return web.Response(status=404, text=f"unknown webhook {request.url}")
        raw = await request.read()
        receiver.headers.append(dict(request.headers))
        receiver.bodies.append(json.loads(raw))  # a body that is not JSON fails the test here
        return web.Response(status=receiver.status, text=receiver.reply)

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/hooks/{token}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        receiver.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        runner_box.append(runner)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner_box[0].cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="webhook-receiver", daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield receiver
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def notifications_toml(
    *,
    smtp_port: int,
    ca_file: Path | None,
    email_when: str = "always",
    webhook_when: str = "always",
    webhook_format: str = "slack",
) -> str:
    """A [notifications] table as an operator writes it: secrets by environment variable name only."""
    return f"""
[notifications]
report_url = "https://intranet.example/uss/latest/audit.html"

[[notifications.email]]
name = "billing e-mail"
when = "{email_when}"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "starttls"
username = "{SMTP_USER}"
password_env = "{SMTP_PASSWORD_ENV}"
from = "uss-auditor@example.com"
to = ["billing@example.com"]
timeout_seconds = 5
ca_bundle = "{ca_file}"

[[notifications.webhook]]
name = "billing channel"
format = "{webhook_format}"
url_env = "{WEBHOOK_URL_ENV}"
when = "{webhook_when}"
timeout_seconds = 5
"""
