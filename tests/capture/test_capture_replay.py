"""Issue 10 case 9: `audit --capture DIR` records what Graph and the sign-in endpoint said, never a
secret; `--capture-redact` hides the users' names and addresses; `simulator serve --replay DIR` serves
the capture so that the same audit gives the same verdicts, findings, counts and error codes.

The capture runs are real audits (msgraph-sdk and azure-identity over HTTPS) of the demo fleet, with
tenants signing in by client secret, certificate (a client assertion) and workload identity (a federated
token), and with faults on the wire: a throttled `$batch` item, a throttled request, a `$batch` that
fails as a whole, a connection reset.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auditor.app import AuditOptions, audit
from auditor.graph.capture import MANIFEST_NAME, read_capture
from auditor.graph.client import open_session
from auditor.simulator import FaultRule, GraphSimulator, load_fixture
from auditor.simulator.replay import REPLAY_SECRET_ENV, ReplayServer
from tests.conftest import DEMO_FLEET, DEMO_TENANTS, settings_for
from tests.integration.conftest import demo_config_text
from tests.integration.test_no_secrets import files_under, leaks, secrets_of

AUDITOR = Path(sys.executable).parent / "auditor"
CONTOSO = DEMO_TENANTS["contoso"]
FABRIKAM = DEMO_TENANTS["fabrikam"]
TAILSPIN = DEMO_TENANTS["tailspin"]
WOODGROVE = DEMO_TENANTS["woodgrove"]
NORTHWIND = DEMO_TENANTS["northwind"]
ADATUM = DEMO_TENANTS["adatum"]
RELECLOUD = DEMO_TENANTS["relecloud"]
FOURTHCOFFEE = DEMO_TENANTS["fourthcoffee"]
FEDERATED_SUBJECT = "system:serviceaccount:uss-auditor:auditor"


@dataclass
class Captured:
    sim: GraphSimulator
    directory: Path
    report: dict[str, Any]  # audit.json of the captured run
    federated_token: str


def _faults(sim: GraphSimulator) -> None:
    """What a real tenant does on a bad night: each is retried, so the verdicts do not change."""
    sim.clear_fault_rules()
    sim.add_fault_rule(
        FaultRule(  # any $batch item: they are all mailbox reads
            tenant_id=CONTOSO,
            status=429,
            code="ApplicationThrottled",
            message="Application is over its MailboxConcurrency limit.",
            retry_after=1,
            in_batch=True,
            times=3,
        )
    )
    sim.add_fault_rule(
        FaultRule(
            route="users.list",
            tenant_id=FABRIKAM,
            status=429,
            code="TooManyRequests",
            message="Too many requests.",
            retry_after=1,
            in_batch=False,
        )
    )
    sim.add_fault_rule(FaultRule(route="batch", tenant_id=TAILSPIN, status=503, in_batch=False))
    sim.add_fault_rule(
        FaultRule(route="servicePrincipals.list", tenant_id=WOODGROVE, reset=True, in_batch=False)
    )


def _run_audit(config: Path, out: Path, **options: Any) -> dict[str, Any]:
    audit(AuditOptions(config=config, out_dir=out, formats=("json",), **options), stdout=io.StringIO())
    report: dict[str, Any] = json.loads((out / "audit.json").read_text())
    return report


def _capture(sim: GraphSimulator, root: Path, *, redact: bool) -> Captured:
    token_file = root / "federated-token"
    token = sim.identity.federated_token(FEDERATED_SUBJECT)
    token_file.write_text(token)
    config = root / "audit.toml"
    config.write_text(
        demo_config_text(
            sim,
            extra_tenant_keys={
                "northwind": {
                    "method": "certificate",
                    "certificate_path": sim.credentials["USS_DEMO_AUDITOR_CERTIFICATE"],
                },
                "adatum": {"method": "workload_identity", "token_file_path": str(token_file)},
            },
        )
    )
    _faults(sim)
    report = _run_audit(config, root / "reports", capture=root / "capture", capture_redact=redact)
    sim.clear_fault_rules()
    return Captured(sim, root / "capture", report, token)


@pytest.fixture(scope="module")
def simulator() -> Iterator[GraphSimulator]:
    with GraphSimulator(load_fixture(DEMO_FLEET), seed=5) as sim, pytest.MonkeyPatch.context() as patch:
        for name, value in sim.credentials.items():
            patch.setenv(name, value)
        yield sim


@pytest.fixture(scope="module")
def captured(simulator: GraphSimulator, tmp_path_factory: pytest.TempPathFactory) -> Captured:
    return _capture(simulator, tmp_path_factory.mktemp("plain"), redact=False)


@pytest.fixture(scope="module")
def captured_redacted(simulator: GraphSimulator, tmp_path_factory: pytest.TempPathFactory) -> Captured:
    return _capture(simulator, tmp_path_factory.mktemp("redacted"), redact=True)


def _cli(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603 (our own script)


def _records(directory: Path) -> dict[str, list[dict[str, Any]]]:
    return read_capture(directory)[1]


def _replay(captured: Captured, root: Path) -> tuple[dict[str, Any], ReplayServer]:
    with ReplayServer(captured.directory) as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv(REPLAY_SECRET_ENV, "any value: the replay checks no credential")
        config = root / "replay.toml"
        config.write_text(server.config_text())
        report = _run_audit(config, root / "replayed")
    return report, server


def _comparable(report: dict[str, Any], *, origins: tuple[str, ...], messages: bool) -> dict[str, Any]:
    """Per tenant id: what a replay must reproduce (hosts differ between runs, so they are blanked)."""

    def text(value: str) -> str:
        for origin in origins:
            value = value.replace(origin, "https://HOST")
        return re.sub(r"https://127\.0\.0\.1:\d+", "https://HOST", value)

    out = {}
    for tenant in report["tenants"]:
        mailboxes = tenant.get("mailboxes")
        shared = tenant.get("shared_mailboxes") or []
        error = tenant.get("error") or {}
        out[tenant["tenant_id"]] = {
            "status": tenant["status"],
            "findings": [
                (f["code"], f["severity"], text(f["message"]) if messages else None)
                for f in tenant["findings"]
            ],
            "mailboxes": mailboxes,
            "shared": sorted(
                (m["id"], m["account_enabled"], m["licensed"], m["display_name"] if messages else None)
                for m in shared
            ),
            "billing": tenant.get("billing"),
            "error": error.get("code"),
            "service_principal": (tenant.get("service_principal") or {}).get("id"),
        }
    return out


# --- what the capture holds -------------------------------------------------------------------------


def test_capture_has_a_file_per_tenant_and_a_manifest(captured: Captured) -> None:
    manifest = json.loads((captured.directory / MANIFEST_NAME).read_text())
    assert manifest["format"] == "uss-auditor-capture"
    assert manifest["redacted"] is False
    assert manifest["finished"]
    by_id = {t["tenant_id"]: t for t in manifest["tenants"]}
    assert set(by_id) == set(DEMO_TENANTS.values())
    for tenant_id, entry in by_id.items():
        lines = (captured.directory / entry["file"]).read_text().splitlines()
        assert len(lines) == entry["exchanges"] > 0, tenant_id
    # Tenant data: owner-only, like the directory.
    assert {p.stat().st_mode & 0o777 for p in captured.directory.iterdir()} == {0o600}
    assert captured.directory.stat().st_mode & 0o777 == 0o700
    records = _records(captured.directory)
    methods = {
        tenant_id: {
            r["request"]["form"].get("client_assertion_type", "secret") for r in rs if r["kind"] == "token"
        }
        for tenant_id, rs in records.items()
    }
    assert methods[NORTHWIND] == methods[ADATUM] == {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    assert methods[CONTOSO] == {"secret"}
    # An error tenant: the sign-in failure is there, with Entra's answer.
    relecloud = [r for r in records[RELECLOUD] if r["kind"] == "token"]
    assert relecloud and relecloud[0]["response"]["status"] == 401
    assert relecloud[0]["response"]["body"]["error"] == "invalid_client"


def test_capture_holds_the_throttled_failed_and_unanswered_exchanges(captured: Captured) -> None:
    records = _records(captured.directory)
    item_statuses = [
        item["status"]
        for r in records[CONTOSO]
        if r["request"]["url"].endswith("/$batch") and r["response"]
        for item in r["response"]["body"]["responses"]
    ]
    assert item_statuses.count(429) == 3
    throttled = [r for r in records[FABRIKAM] if r["response"] and r["response"]["status"] == 429]
    assert len(throttled) == 1 and throttled[0]["response"]["headers"]["retry-after"] == "1"
    failed_batches = [
        r
        for r in records[TAILSPIN]
        if r["request"]["url"].endswith("/$batch") and r["response"]["status"] == 503
    ]
    assert len(failed_batches) == 1
    assert len(failed_batches[0]["request"]["body"]["requests"]) > 1
    resets = [r for r in records[WOODGROVE] if r.get("no_answer")]
    assert [r["no_answer"] for r in resets] == ["reset"] and resets[0]["response"] is None


def test_no_secret_token_or_assertion_in_any_captured_byte(captured: Captured) -> None:
    secrets = secrets_of(captured.sim)
    secrets["federated token"] = captured.federated_token
    secrets["federated token signature"] = captured.federated_token.rsplit(".", 1)[1]
    found = list(files_under(captured.directory))
    assert len(found) == len(DEMO_TENANTS) + 1
    assert leaks(found, secrets) == []
    everything = b"".join(data for _, data in found)
    # Client assertions (certificate and federated) and access tokens are JWTs: none is written at all.
    assert re.search(rb"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.", everything) is None
    assert b"Bearer " not in everything and b'"authorization"' not in everything.lower()
    for tenant_records in _records(captured.directory).values():
        for record in tenant_records:
            if record["kind"] == "token":
                form = record["request"]["form"]
                assert form.get("client_secret", "[redacted]") == "[redacted]"
                assert form.get("client_assertion", "[redacted]") == "[redacted]"
                assert "access_token" not in (record["response"]["body"] or {})


def test_token_answers_keep_only_the_claims_a_replay_needs(captured: Captured) -> None:
    token = next(r for r in _records(captured.directory)[CONTOSO] if r["kind"] == "token")
    claims = token["response"]["body"]["token_claims"]
    assert claims["tid"] == CONTOSO
    assert "MailboxSettings.Read" in claims["roles"]
    assert not {"oid", "iat", "exp", "nbf"} & claims.keys()


def test_redacted_capture_names_no_user_and_keeps_ids(captured_redacted: Captured) -> None:
    sim = captured_redacted.sim
    personal: set[str] = set()
    for tenant in sim.world.tenants.values():
        personal.add(tenant.display_name)
        personal.update(str(group["displayName"]) for group in tenant.groups if group.get("displayName"))
        for user in tenant.users:
            personal.update(v for v in (user.display_name, user.user_principal_name, user.mail) if v)
    found = list(files_under(captured_redacted.directory))
    everything = b"\n".join(data for _, data in found).decode()
    shown = sorted(value for value in personal if value in everything)
    assert shown == []
    manifest = json.loads((captured_redacted.directory / MANIFEST_NAME).read_text())
    assert manifest["redacted"] is True
    # Ids stay; the vendor app keeps its name (the audit finds it by name); pseudonyms are stable.
    records = _records(captured_redacted.directory)
    users = [
        u
        for r in records[CONTOSO]
        if "/v1.0/users?" in r["request"]["url"] and r["response"]
        for u in r["response"]["body"]["value"]
    ]
    assert len(users) == 180
    assert all(re.fullmatch(r"[0-9a-f-]{36}", u["id"]) for u in users)
    assert all(re.fullmatch(r"u-[0-9a-f]{10}@d-[0-9a-f]{10}\.invalid", u["userPrincipalName"]) for u in users)
    assert all(u["mail"] in (None, u["userPrincipalName"]) for u in users)  # same address, same pseudonym
    assert len({u["userPrincipalName"].split("@")[1] for u in users}) == 1  # one domain, one pseudonym
    assert "USS AzureAD" in everything
    assert leaks(found, secrets_of(sim)) == []


# --- replay --------------------------------------------------------------------------------------------


def test_replay_gives_the_same_verdicts_findings_counts_and_errors(
    captured: Captured, tmp_path: Path
) -> None:
    replayed, server = _replay(captured, tmp_path)
    assert server.misses == []
    origins = (captured.sim.origin,)
    expected = _comparable(captured.report, origins=origins, messages=True)
    got = _comparable(replayed, origins=(server.origin,), messages=True)
    for tenant_id, want in expected.items():
        assert got[tenant_id] == want, tenant_id
    statuses = {t["status"] for t in captured.report["tenants"]}
    assert {"compliant", "non_compliant", "ambiguous", "not_connected", "error"} <= statuses
    assert expected[RELECLOUD]["error"] == "AUTH_FAILED"
    assert expected[FOURTHCOFFEE]["status"] == "error"
    # The throttles, the failed $batch and the reset were served again, and waited out again.
    assert server.statuses[429] >= 4
    assert server.statuses[503] >= 1
    summary_keys = (
        "tenants",
        "by_status",
        "shared_mailboxes",
        "billed_shared_mailboxes",
        "estimated_monthly_cost",
    )
    assert {k: replayed["summary"][k] for k in summary_keys} == {
        k: captured.report["summary"][k] for k in summary_keys
    }


def test_replay_of_a_redacted_capture_gives_the_same_verdicts(
    captured_redacted: Captured, tmp_path: Path
) -> None:
    replayed, server = _replay(captured_redacted, tmp_path)
    assert server.misses == []
    expected = _comparable(captured_redacted.report, origins=(captured_redacted.sim.origin,), messages=False)
    assert _comparable(replayed, origins=(server.origin,), messages=False) == expected
    names = {m["display_name"] for t in replayed["tenants"] for m in t.get("shared_mailboxes") or []}
    assert len(names) > 50 and all(name.startswith("name-") for name in names)


def test_capture_refuses_a_directory_with_files(simulator: GraphSimulator, tmp_path: Path) -> None:
    (tmp_path / "capture").mkdir()
    (tmp_path / "capture" / "old.txt").write_text("x")
    config = tmp_path / "audit.toml"
    config.write_text(demo_config_text(simulator))
    result = _cli(
        [
            str(AUDITOR),
            "audit",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "out"),
            "--capture",
            str(tmp_path / "capture"),
        ]
    )
    assert result.returncode == 2, result.stderr
    assert "--capture" in result.stderr and "not empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "audit.json").exists()


def test_capture_redact_needs_capture(simulator: GraphSimulator, tmp_path: Path) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(demo_config_text(simulator))
    result = _cli(
        [str(AUDITOR), "audit", "--config", str(config), "--out", str(tmp_path / "out"), "--capture-redact"]
    )
    assert result.returncode == 2
    assert "--capture-redact only makes sense with --capture" in result.stderr


def test_serve_replay_refuses_a_directory_that_is_not_a_capture(tmp_path: Path) -> None:
    result = _cli(
        [
            str(AUDITOR),
            "simulator",
            "serve",
            "--replay",
            str(tmp_path),
            "--port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
        ]
    )
    assert result.returncode == 2
    assert "is not a capture: it has no manifest.json" in result.stderr


def test_remediation_is_captured_and_replays_to_the_same_outcome(
    fresh_sim_env: GraphSimulator, tmp_path: Path
) -> None:
    config = tmp_path / "audit.toml"
    config.write_text(demo_config_text(fresh_sim_env))
    options: dict[str, Any] = {"tenants": (FABRIKAM,), "remediate": True, "yes": True}
    before = _run_audit(config, tmp_path / "reports", capture=tmp_path / "capture", **options)
    (tenant,) = before["tenants"]
    assert tenant["status"] == "remediated" and tenant["remediation"]["action"] == "created"
    records = _records(tmp_path / "capture")[FABRIKAM]
    posts = [
        r for r in records if r["request"]["method"] == "POST" and "roleAssignments" in r["request"]["url"]
    ]
    assert [p["response"]["status"] for p in posts] == [201]
    assert posts[0]["request"]["body"]["roleDefinitionId"] == "5d6b6bb7-de71-4623-b4af-96380a352509"

    with ReplayServer(tmp_path / "capture") as server, pytest.MonkeyPatch.context() as patch:
        patch.setenv(REPLAY_SECRET_ENV, "replay")
        (tmp_path / "replay.toml").write_text(server.config_text())
        after = _run_audit(tmp_path / "replay.toml", tmp_path / "replayed", **options)
    assert server.misses == []
    (replayed,) = after["tenants"]
    assert (replayed["status"], replayed["remediation"]["action"]) == ("remediated", "created")
    assert _comparable(after, origins=(server.origin,), messages=True) == _comparable(
        before, origins=(fresh_sim_env.origin,), messages=True
    )


async def test_a_time_out_is_captured_and_replayed_as_a_time_out(
    fresh_sim: GraphSimulator, tmp_path: Path
) -> None:
    from auditor.errors import ErrorCode, GraphError
    from auditor.graph.capture import Capture
    from auditor.graph.reader import GraphReader, RetryPolicy

    # Graph never answers in time; the reader keeps trying for its patience, then says TIMEOUT.
    fresh_sim.add_fault_rule(
        FaultRule(route="organization.list", tenant_id=CONTOSO, delay_seconds=3, times=1000)
    )
    patient = RetryPolicy(patience_seconds=1.5, base_delay=0.05, max_delay=0.1)
    capture = Capture(tmp_path / "capture")
    async with capture.session_factory(settings_for(fresh_sim, "contoso", timeout_seconds=0.5)) as session:
        with pytest.raises(GraphError) as captured_error:
            await GraphReader(session, "Contoso", policy=patient).organization()
    capture.close()
    assert captured_error.value.code is ErrorCode.TIMEOUT
    graph = [r for r in _records(tmp_path / "capture")[CONTOSO] if r["kind"] == "graph"]
    assert len(graph) >= 2
    assert {(r["no_answer"], r["response"]) for r in graph} == {("timeout", None)}

    with ReplayServer(tmp_path / "capture") as server:
        settings = settings_for(
            fresh_sim,
            "contoso",
            timeout_seconds=0.5,
            client_secret="anything",
            authority=server.authority,
            graph_endpoint=server.graph_url,
            scope=f"{server.graph_url}/.default",
            ca_bundle=server.ca_file,
        )
        async with open_session(settings) as session:
            with pytest.raises(GraphError) as replayed_error:
                await GraphReader(session, "Contoso", policy=patient).organization()
    assert replayed_error.value.code is ErrorCode.TIMEOUT
    assert server.misses == []


def test_the_documented_workflow_with_the_console_script(captured: Captured, tmp_path: Path) -> None:
    """README: `simulator serve --replay DIR` prints where things are; its replay.toml audits the capture."""
    state = tmp_path / "state"
    argv = [str(AUDITOR), "simulator", "serve", "--replay", str(captured.directory), "--port", "0"]
    server = subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [*argv, "--state-dir", str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        printed = []
        for line in server.stdout:
            printed.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        text = "".join(printed)
        assert f"{len(DEMO_TENANTS)} tenants" in text and "audit config" in text, text
        origin = re.search(r"authority\s+(https://\S+)", text)
        assert origin is not None
        env = dict(os.environ)
        for name, value in re.findall(r"export (\w+)='([^']*)'", (state / "credentials.env").read_text()):
            env[name] = value
        assert REPLAY_SECRET_ENV in env
        result = subprocess.run(  # noqa: S603 (our own console script, fixed arguments)
            [str(AUDITOR), "audit", "--config", str(state / "replay.toml"), "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
    finally:
        server.terminate()
        server.wait(30)
    assert result.returncode == 3, result.stderr  # two tenants could not be audited, as when captured
    replayed = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert _comparable(replayed, origins=(origin[1],), messages=True) == _comparable(
        captured.report, origins=(captured.sim.origin,), messages=True
    )
    assert (tmp_path / "out" / "audit.html").is_file() and (tmp_path / "out" / "audit.xlsx").is_file()
