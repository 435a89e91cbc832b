"""Acceptance ("Nightly operations", last item): no secret (client secrets, private keys, access tokens,
the SMTP password, the webhook URL's token) appears in any log line, report, database row, journal,
e-mail or webhook message.

A night is run the way a scheduler runs it: the installed `auditor` console script in a child process,
with its secrets in the environment, against the Graph simulator, a real SMTP server and a webhook
receiver: an audit with JSON debug logs, a remediation with a separate certificate identity and text
debug logs, `history`, `doctor`, `report`. Then every byte the night produced is scanned: stdout and
stderr of each command, every file under the working directory (each member of the .xlsx zip, every
row of the history database as well as its raw file), every e-mail part decoded, every webhook body.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from auditor.config import load_config
from auditor.simulator import GraphSimulator
from tests.integration.conftest import demo_config_text
from tests.receivers import (
    SMTP_PASSWORD,
    SMTP_PASSWORD_ENV,
    SMTP_USER,
    WEBHOOK_TOKEN,
    WEBHOOK_URL_ENV,
    SmtpServer,
    WebhookReceiver,
    notifications_toml,
)

AUDITOR = Path(sys.executable).parent / "auditor"
STALE_TOKEN = "st4le-webhook-t0ken-Qw9"
STALE_URL_ENV = "USS_TEST_STALE_WEBHOOK_URL"
WRONG_PASSWORD = "wr0ng-smtp-Pa55word-Lk2"
WRONG_PASSWORD_ENV = "USS_TEST_WRONG_SMTP_PASSWORD"


def secrets_of(sim: GraphSimulator) -> dict[str, str]:
    """Every secret value of the night, by a name saying what it is."""
    found: dict[str, str] = {
        "SMTP password": SMTP_PASSWORD,
        "webhook URL token": WEBHOOK_TOKEN,
        "stale webhook URL token": STALE_TOKEN,
        "wrong SMTP password": WRONG_PASSWORD,
    }
    for name, value in sim.credentials.items():
        if name == "IDENTITY_ENDPOINT":  # where the managed identity asks: an address, not a secret
            continue
        if name.endswith("_CERTIFICATE"):
            pem = Path(value).read_text(encoding="ascii")
            key = pem[pem.index("-----BEGIN PRIVATE KEY-----") : pem.index("-----END PRIVATE KEY-----")]
            body = key.splitlines()[1:]
            assert len(body) > 10
            for i, line in enumerate(body):
                if len(line) >= 24:  # every full base64 line of the key; one found would be a leak
                    found[f"{name} private key line {i}"] = line
        else:
            found[name] = value
    tokens = sim.issued_tokens()
    assert tokens, "no access token was issued: the night did not sign in"
    for i, token in enumerate(tokens):
        found[f"access token {i}"] = token
        found[f"access token {i} signature"] = token.rsplit(".", 1)[1]
    return found


def leaks(haystacks: Iterable[tuple[str, bytes]], secrets: dict[str, str]) -> list[str]:
    """``where: which secret`` for every secret found in any haystack."""
    needles = [(what, value.encode()) for what, value in secrets.items()]
    return [f"{where}: {what}" for where, data in haystacks for what, needle in needles if needle in data]


def with_members(where: str, data: bytes) -> Iterator[tuple[str, bytes]]:
    """``data``, and each member when it is a zip (an .xlsx compresses its text)."""
    yield where, data
    if data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as book:
            for member in book.namelist():
                yield f"{where}!{member}", book.read(member)


def files_under(root: Path) -> Iterator[tuple[str, bytes]]:
    """Every file below ``root``; an .xlsx member by member, an SQLite database row by row too."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield from with_members(str(path), data)
        if data.startswith(b"SQLite format 3\x00"):
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                tables = [
                    t for (t,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
                ]
                for table in tables:
                    for row in connection.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 (names from the db)
                        yield f"{path} table {table}", repr(row).encode()
            finally:
                connection.close()


def mail_and_webhooks(smtp: SmtpServer, receiver: WebhookReceiver) -> Iterator[tuple[str, bytes]]:
    for i, envelope in enumerate(smtp.mailbox.envelopes):
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        yield f"e-mail {i} (raw)", content
    for i, message in enumerate(smtp.mailbox.messages()):
        for part in message.walk():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                yield from with_members(
                    f"e-mail {i} part {part.get_content_type()} {part.get_filename()}", payload
                )
    for i, (body, headers) in enumerate(zip(receiver.bodies, receiver.headers, strict=True)):
        yield f"webhook {i}", json.dumps(body).encode() + json.dumps(headers).encode()


def test_the_scan_finds_a_planted_secret(tmp_path: Path) -> None:
    """The scanner itself can fail: a secret in a database row, in an xlsx member, in a log is found."""
    secrets = {"planted": "pl4nted-s3cret-VALUE"}
    database = tmp_path / "h.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.execute("INSERT INTO t VALUES (?)", ("zzpl4nted-s3cret-VALUEzz",))
    with zipfile.ZipFile(tmp_path / "a.xlsx", "w", compression=zipfile.ZIP_DEFLATED) as book:
        book.writestr("xl/sharedStrings.xml", "<si>pl4nted-s3cret-VALUE</si>" * 50)
    found = leaks([*files_under(tmp_path), ("stderr", b'{"message": "pl4nted-s3cret-VALUE"}')], secrets)
    assert f"{database} table t: planted" in found
    assert f"{tmp_path / 'a.xlsx'}!xl/sharedStrings.xml: planted" in found
    assert "stderr: planted" in found


@pytest.mark.slow  # a whole night in child processes: two audits, history, doctor, report
def test_no_secret_anywhere_after_a_night(
    fresh_sim: GraphSimulator,
    tmp_path: Path,
    smtp_server: SmtpServer,
    webhook_receiver: WebhookReceiver,
) -> None:
    sim = fresh_sim
    assert smtp_server.tls is not None
    cert = sim.credentials["USS_DEMO_AUDITOR_CERTIFICATE"]
    text = demo_config_text(sim, extra_tenant_keys={"northwind": {"certificate_path": cert}})
    text = text.replace(
        "[[tenants]]",
        f'[remediation_auth]\ncertificate_path = "{cert}"\n\n'
        + notifications_toml(
            smtp_port=smtp_server.port, ca_file=smtp_server.tls.ca_file, webhook_format="teams"
        )
        + "\n[[tenants]]",
        1,
    )
    # Two channels that fail: a webhook whose receiver answers 404 echoing the URL with its token, and an
    # e-mail whose password is wrong.
    text = text.replace(
        "[[tenants]]",
        f'[[notifications.webhook]]\nname = "stale hook"\nformat = "slack"\nurl_env = "{STALE_URL_ENV}"\n\n'
        f'[[notifications.email]]\nname = "wrong password"\nsmtp_host = "127.0.0.1"\n'
        f'smtp_port = {smtp_server.port}\nusername = "{SMTP_USER}"\npassword_env = "{WRONG_PASSWORD_ENV}"\n'
        f'from = "a@example.com"\nto = ["b@example.com"]\nca_bundle = "{smtp_server.tls.ca_file}"\n\n'
        "[[tenants]]",
        1,
    )
    config = tmp_path / "audit.toml"
    config.write_text(text, encoding="utf-8")
    loaded = load_config(config)
    methods = {t.name: (t.auth.method.value, t.remediation_auth.method.value) for t in loaded.tenants}
    assert methods["Northwind Traders"] == ("certificate", "certificate")
    assert methods["Contoso Healthcare"] == ("secret", "certificate")
    env = {
        **os.environ,
        **sim.credentials,
        SMTP_PASSWORD_ENV: SMTP_PASSWORD,
        WEBHOOK_URL_ENV: webhook_receiver.url,
        STALE_URL_ENV: webhook_receiver.url.replace(WEBHOOK_TOKEN, STALE_TOKEN),
        WRONG_PASSWORD_ENV: WRONG_PASSWORD,
        "COLUMNS": "200",
    }
    env.pop("AUDITOR_LOG_FORMAT", None)
    commands = {
        "audit": ["audit", "-c", config, "-o", tmp_path / "night", "--verbose", "--log-format", "json"],
        "remediate": ["audit", "-c", config, "-o", tmp_path / "fix", "--remediate", "--yes", "--verbose"],
        "history": ["history", "-c", config, "--verbose"],
        "timeline": ["history", "-c", config, "--tenant", "Fabrikam Retail"],
        "doctor": ["doctor", "-c", config, "--verbose", "--log-format", "json"],
        "report": ["report", tmp_path / "fix" / "audit.json", "--out", tmp_path / "rerendered"],
    }
    outputs: list[tuple[str, bytes]] = []
    codes: dict[str, int] = {}
    for name, args in commands.items():
        done = subprocess.run(  # noqa: S603 (our own console script, fixed arguments)
            [str(AUDITOR), *(str(a) for a in args)], env=env, capture_output=True, timeout=180, check=False
        )
        codes[name] = done.returncode
        outputs += [(f"{name} stdout", done.stdout), (f"{name} stderr", done.stderr)]

    # The night really happened: sign-ins by secret and by certificate, a remediation, both notifications.
    assert codes["audit"] == codes["remediate"] == 3, codes  # the demo fleet has tenants that cannot be read
    assert codes["history"] == codes["timeline"] == codes["report"] == 0, codes
    night = json.loads((tmp_path / "night" / "audit.json").read_text(encoding="utf-8"))
    status = {t["name"]: t["status"] for t in night["tenants"]}
    assert status["Contoso Healthcare"] == "compliant" and status["Northwind Traders"] == "non_compliant"
    journal = (tmp_path / "fix" / "remediation.jsonl").read_text(encoding="utf-8").splitlines()
    assert "created" in {json.loads(line)["outcome"] for line in journal}
    tokens = [r for r in sim.requests() if r.route == "identity.token" and r.status == 200]
    assert len({r.tenant_id for r in tokens}) >= 10
    assert len(smtp_server.mailbox.envelopes) == 2 and len(webhook_receiver.bodies) == 2
    assert smtp_server.mailbox.logins.count((SMTP_USER, False)) >= 2  # the wrong password, both nights
    for night_output in (dict(outputs)["audit stdout"], dict(outputs)["remediate stdout"]):
        assert b"stale hook (webhook): failed: " in night_output and b"HTTP 404" in night_output
        assert b"wrong password (email): failed: " in night_output
    assert (
        b"DEBUG" in dict(outputs)["remediate stderr"] and b'"level":"debug"' in dict(outputs)["audit stderr"]
    )
    assert (tmp_path / "history.sqlite").is_file()

    secrets = secrets_of(sim)
    haystacks = [*outputs, *files_under(tmp_path), *mail_and_webhooks(smtp_server, webhook_receiver)]
    assert len(haystacks) > 40
    size = sum(len(data) for _, data in haystacks)
    print(f"scanned {len(haystacks)} outputs ({size / 2**20:.1f} MiB) for {len(secrets)} secret values")
    assert leaks(haystacks, secrets) == []
