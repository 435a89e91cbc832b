"""Sharded audits end to end (real SDK against the simulator): three shards merged give the same tenant
results as one unsharded run; and the deploy/ files (container image, Kubernetes CronJob, cron, systemd)
are well-formed and their scripts do what deploy/README.md says."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml  # pyyaml: a dev extra, installed by `make test`
from typer.testing import CliRunner

from auditor.app import AuditOptions, audit
from auditor.cli.main import app as cli_app
from auditor.config import load_config
from auditor.constants import ExitCode
from auditor.model import RunResult, TenantResult
from auditor.reporting.json_report import read_run
from auditor.runner import Progress
from auditor.shard import (
    PART_MANIFEST_FILENAME,
    MergeOptions,
    Shard,
    merge_reports,
    read_part,
)
from auditor.simulator import GraphSimulator
from tests.conftest import DEMO_TENANTS, ROOT
from tests.integration.conftest import write_demo_config

DEPLOY = ROOT / "deploy"
SH = shutil.which("sh") or "/bin/sh"
SHARDS = 3


class _Quiet(Progress):
    def start(self, total: int) -> None:
        pass

    def tenant_done(self, result: TenantResult, seconds: float) -> None:
        pass

    def finish(self) -> None:
        pass


_VOLATILE = (
    re.compile(r"\s*\(request-id [^)]*\)"),
    re.compile(r"Trace ID: \S+ Correlation ID: \S+ Timestamp: \S+( \S+)?"),
)


def stable(result: TenantResult) -> dict[str, Any]:
    """A tenant result without what differs between two audits of the same facts (Graph request ids,
    sign-in trace ids and timestamps, remediation times)."""
    data = result.to_dict()
    if data["error"] is not None:
        message = data["error"]["message"]
        for pattern in _VOLATILE:
            message = pattern.sub("", message)
        data["error"] = {**data["error"], "message": message}
    data["remediation"] = {**data["remediation"], "at": None, "request_id": None}
    return data


def audit_part(config_path: Path, shard: Shard, out: Path) -> RunResult:
    """What `auditor audit --config CONFIG --shard K/N --out OUT --format json` does."""
    options = AuditOptions(config=config_path, out_dir=out, formats=("json",), shard=str(shard))
    return audit(options, progress=_Quiet(), stdout=io.StringIO()).run


def test_three_shards_merged_equal_one_unsharded_run(sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim_env, tmp_path)
    whole = audit(
        AuditOptions(config=config.path, out_dir=tmp_path / "whole", formats=("json",)),
        progress=_Quiet(),
        stdout=io.StringIO(),
    )
    parts_dir = tmp_path / "parts"
    runs = [audit_part(config.path, Shard(k, SHARDS), parts_dir / f"shard-{k - 1}") for k in (1, 2, 3)]
    assert all(run.tenants for run in runs)
    assert sorted(t.tenant_id for run in runs for t in run.tenants) == sorted(
        t.tenant_id for t in config.tenants
    )

    stdout = io.StringIO()
    merged = merge_reports(
        MergeOptions(tuple(sorted(parts_dir.iterdir())), tmp_path / "merged", ("json",)), stdout=stdout
    )

    # The same tenants, in the same (config) order, with the same verdicts, findings, census and billing.
    assert [stable(t) for t in merged.run.tenants] == [stable(t) for t in whole.run.tenants]
    assert merged.run.summary() == whole.run.summary()
    assert merged.exit_code == whole.exit_code == ExitCode.TENANT_ERROR  # the demo fleet has error tenants
    saved = read_run(tmp_path / "merged" / "audit.json")
    assert [stable(t) for t in saved.tenants] == [stable(t) for t in whole.run.tenants]
    assert saved.started_at == min(r.started_at for r in runs)
    assert saved.finished_at == max(r.finished_at for r in runs)
    assert f"Merged 3 shard parts into one run of {len(DEMO_TENANTS)} tenant(s)." in stdout.getvalue()
    for k in (1, 2, 3):
        part = read_part(parts_dir / f"shard-{k - 1}")
        assert part.shard == Shard(k, SHARDS) and part.manifest.run_id == part.run.run_id


def test_cli_shard_and_merge(sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim_env, tmp_path)
    runner = CliRunner()
    whole = runner.invoke(
        cli_app, ["audit", "-c", str(config.path), "-o", str(tmp_path / "whole"), "-f", "json"]
    )
    assert whole.exit_code == ExitCode.TENANT_ERROR, whole.output
    parts = []
    for k in (1, 2, 3):
        out = tmp_path / "parts" / f"shard-{k - 1}"
        result = runner.invoke(
            cli_app, ["audit", "-c", str(config.path), "--shard", f"{k}/3", "-o", str(out), "-f", "json"]
        )
        assert result.exit_code in (0, 1, 3), result.output
        assert f"Shard {k}/3:" in result.stdout and (out / PART_MANIFEST_FILENAME).is_file()
        parts.append(str(out))
    merged = runner.invoke(cli_app, ["merge", *parts, "--out", str(tmp_path / "merged"), "-f", "json"])
    assert merged.exit_code == ExitCode.TENANT_ERROR, merged.output
    expected = read_run(tmp_path / "whole" / "audit.json").tenants
    assert [stable(t) for t in read_run(tmp_path / "merged" / "audit.json").tenants] == [
        stable(t) for t in expected
    ]
    bad = runner.invoke(
        cli_app, ["audit", "-c", str(config.path), "--shard", "0/3", "-o", str(tmp_path / "x")]
    )
    assert bad.exit_code == ExitCode.USAGE and "shards are counted from 1" in bad.stderr
    assert not (tmp_path / "x").exists()  # refused before anything was audited or written


# --- the Kubernetes CronJob ---------------------------------------------------------------------------------


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one of deploy/'s scripts (or sh -n on it), bounded in time."""
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603


def kubernetes_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "cronjob.yaml").read_text()) if d]


def cronjob() -> dict[str, Any]:
    return next(d for d in kubernetes_documents() if d["kind"] == "CronJob")


def pod_script() -> str:
    container = cronjob()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-2:] == ["/bin/sh", "-c"]
    script: str = container["args"][0]
    return script


def test_the_cronjob_runs_an_indexed_job_of_n_shards_then_the_merge() -> None:
    docs = {d["kind"]: d for d in kubernetes_documents()}
    assert set(docs) == {"ConfigMap", "PersistentVolumeClaim", "CronJob"}  # no Secret with values in git
    job = docs["CronJob"]["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == int(env["SHARDS"]["value"]) == SHARDS
    assert pod["restartPolicy"] == "Never"  # required by podFailurePolicy
    assert docs["CronJob"]["spec"]["concurrencyPolicy"] == "Forbid"
    assert (
        env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['batch.kubernetes.io/job-name']"
    )
    failing = job["podFailurePolicy"]["rules"][0]
    assert failing["action"] == "FailJob" and failing["onExitCodes"]["values"] == [2, 3]

    script = pod_script()
    assert '--shard "$((I + 1))/$SHARDS"' in script and 'I="$JOB_COMPLETION_INDEX"' in script
    assert "--config /etc/uss-auditor/config.toml" in script
    assert 'auditor merge "$RUN"/shard-* --config /etc/uss-auditor/config.toml --out "$REPORTS"' in script
    assert run([SH, "-n", "-c", script]).returncode == 0

    # non-root, nothing writable but the data volume and /tmp, secrets only from Secrets
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert (
        volumes[mounts["/etc/uss-auditor/config.toml"]["name"]]["configMap"]["name"]
        == (docs["ConfigMap"]["metadata"]["name"])
    )
    assert (
        volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]["claimName"]
        == (docs["PersistentVolumeClaim"]["metadata"]["name"])
    )
    assert "ReadWriteMany" in docs["PersistentVolumeClaim"]["spec"]["accessModes"]
    secret_volume = volumes[mounts["/etc/uss-auditor/secrets"]["name"]]["secret"]
    assert secret_volume["defaultMode"] == 0o440
    assert [s["secretRef"]["name"] for s in container["envFrom"]] == ["uss-auditor-env"]
    assert not any("value" in e and re.search("SECRET|PASSWORD|TOKEN", e["name"]) for e in container["env"])


def test_the_configmap_holds_a_valid_config(tmp_path: Path) -> None:
    config_map = next(d for d in kubernetes_documents() if d["kind"] == "ConfigMap")
    path = tmp_path / "config.toml"
    path.write_text(config_map["data"]["config.toml"])
    config = load_config(path)  # raises ConfigError if the example is not a valid config
    assert config.tenants and config.tenants[0].auth.certificate_path == (
        tmp_path / "secrets" / "auditor.pem"
    )


def _fake_auditor(bin_dir: Path, log: Path) -> None:
    """An `auditor` that records its arguments; `audit` writes a part's files unless told to fail."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "auditor"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {shlex.quote(str(log))}\n'
        "cmd=$1; shift\n"
        'if [ "$cmd" = audit ]; then\n'
        '  out=""; prev=""\n'
        '  for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done\n'
        '  if [ -z "${FAKE_NO_PART:-}" ]; then mkdir -p "$out"; echo "{}" > "$out/audit.json"; '
        'echo "{}" > "$out/shard.json"; fi\n'
        '  exit "${FAKE_AUDIT_RC:-0}"\n'
        "fi\n"
        'exit "${FAKE_MERGE_RC:-0}"\n'
    )
    script.chmod(0o755)


def _run_pod(script: str, index: int, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    local = script.replace("/data/", f"{tmp_path}/data/")
    environ = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "JOB_COMPLETION_INDEX": str(index),
        "JOB_NAME": "uss-auditor-29000000",
        "SHARDS": str(SHARDS),
        **env,
    }
    return run([SH, "-c", local], env=environ)


@pytest.mark.parametrize(
    ("audit_rc", "merge_rc", "pod0_rc"),
    [(0, 0, 0), (1, 1, 0), (3, 3, 3), (1, 2, 2)],
)
def test_the_pod_script_shards_then_merges_in_pod_0(
    tmp_path: Path, audit_rc: int, merge_rc: int, pod0_rc: int
) -> None:
    log = tmp_path / "calls.log"
    _fake_auditor(tmp_path / "bin", log)
    script = pod_script()
    rcs = {"FAKE_AUDIT_RC": str(audit_rc), "FAKE_MERGE_RC": str(merge_rc)}
    stale = tmp_path / "data" / "parts" / "uss-auditor-29000000" / "shard-2" / "leftover.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    for index in (2, 1):  # the other shards finish first: pod 0 need not wait
        assert _run_pod(script, index, tmp_path, **rcs).returncode == 0  # a written part is a success
    assert not stale.exists()  # a retried shard starts from an empty directory
    pod0 = _run_pod(script, 0, tmp_path, **rcs)
    assert pod0.returncode == pod0_rc, pod0.stderr
    calls = log.read_text().splitlines()
    run = f"{tmp_path}/data/parts/uss-auditor-29000000"
    assert [c.split(" --shard ")[1].split()[0] for c in calls if c.startswith("audit")] == [
        "3/3",
        "2/3",
        "1/3",
    ]
    assert all(f"--out {run}/shard-" in c and "--format json" in c for c in calls if c.startswith("audit"))
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert calls[-1] == (
        f"merge {run}/shard-0 {run}/shard-1 {run}/shard-2 --config /etc/uss-auditor/config.toml "
        f"--out {tmp_path}/data/reports/{day}"
    )


def test_the_pod_script_with_the_real_auditor(sim_env: GraphSimulator, tmp_path: Path) -> None:
    config = write_demo_config(sim_env, tmp_path)
    whole = audit(
        AuditOptions(config=config.path, out_dir=tmp_path / "whole", formats=("json",)),
        progress=_Quiet(),
        stdout=io.StringIO(),
    )
    shim = tmp_path / "bin" / "auditor"
    shim.parent.mkdir()
    shim.write_text(
        f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
        '\'import sys; from auditor.cli.main import app; sys.argv[0] = "auditor"; app()\' "$@"\n'
    )
    shim.chmod(0o755)
    script = pod_script().replace("/etc/uss-auditor/config.toml", str(config.path))
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    for index in (2, 1):
        result = _run_pod(script, index, tmp_path, PYTHONPATH=pythonpath)
        assert result.returncode == 0, result.stderr
    pod0 = _run_pod(script, 0, tmp_path, PYTHONPATH=pythonpath)
    assert pod0.returncode == ExitCode.TENANT_ERROR, pod0.stderr  # the demo fleet has error tenants
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    merged = read_run(tmp_path / "data" / "reports" / day / "audit.json")
    assert [stable(t) for t in merged.tenants] == [stable(t) for t in whole.run.tenants]


def test_a_shard_that_writes_no_part_fails_its_pod(tmp_path: Path) -> None:
    _fake_auditor(tmp_path / "bin", tmp_path / "calls.log")
    for audit_rc, expected in ((2, 2), (3, 3), (0, 3)):
        result = _run_pod(pod_script(), 1, tmp_path, FAKE_NO_PART="1", FAKE_AUDIT_RC=str(audit_rc))
        assert result.returncode == expected and "shard 2/3 wrote no part" in result.stderr


# --- the container image -------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_dockerfile_builds_from_existing_files_and_runs_as_non_root() -> None:
    steps = dockerfile_instructions()
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in steps
    assert [arg for op, arg in steps if op == "FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    for op, arg in steps:
        if op in ("COPY", "ADD") and not arg.startswith("--from="):
            *sources, _ = arg.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{op} {source}: not in the build context"
    # what the build stage needs from the context is there
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["auditor"] == "auditor.cli.main:app"
    assert (ROOT / project["project"]["readme"]).is_file()
    users = [arg for op, arg in steps if op == "USER"]
    assert users == ["10001:10001"]  # numeric, so runAsNonRoot can check it
    assert [arg for op, arg in steps if op == "ENTRYPOINT"] == ['["/usr/bin/tini", "--", "auditor"]']
    # no secrets baked in: no ENV/ARG that looks like one, and the context filter keeps key files out
    for op, arg in steps:
        if op in ("ENV", "ARG"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|KEY", arg, re.IGNORECASE), arg
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "secrets", "**/*.pem", "**/*.env"} <= set(ignored)


# --- cron and systemd ----------------------------------------------------------------------------------------


def test_the_cron_file_runs_the_nightly_wrapper() -> None:
    entries = [
        line.split(None, 6)
        for line in (DEPLOY / "cron" / "uss-auditor.cron").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(entries) == 1
    minute, hour, dom, month, dow, user, command = entries[0]
    assert (minute, hour, dom, month, dow, user) == ("30", "1", "*", "*", "*", "uss-auditor")
    assert command.endswith("deploy/cron/uss-auditor-nightly")
    wrapper = DEPLOY / "cron" / "uss-auditor-nightly"
    assert wrapper.stat().st_mode & stat.S_IXUSR
    assert run([SH, "-n", str(wrapper)]).returncode == 0


def _run_wrapper(
    tmp_path: Path, *args: str, rc: int = 0, env_mode: int = 0o600
) -> subprocess.CompletedProcess[str]:
    _fake_auditor(tmp_path / "bin", tmp_path / "calls.log")
    env_file = tmp_path / "auditor.env"
    env_file.write_text("AUDITOR_CLIENT_SECRET='s3cr~t$x'\n")
    env_file.chmod(env_mode)
    environ = {
        **os.environ,
        "USS_AUDITOR_ENV_FILE": str(env_file),
        "USS_AUDITOR_CONFIG": str(tmp_path / "config.toml"),
        "USS_AUDITOR_DATA": str(tmp_path / "data"),
        "USS_AUDITOR_BIN": str(tmp_path / "bin" / "auditor"),
        "FAKE_AUDIT_RC": str(rc),
        "FAKE_MERGE_RC": str(rc),
    }
    return run([str(DEPLOY / "cron" / "uss-auditor-nightly"), *args], env=environ)


@pytest.mark.parametrize(
    ("rc", "line"),
    [
        (0, ""),
        (1, "gaps found"),
        (2, "usage or configuration error, nothing was audited"),
        (3, "at least one tenant could not be audited"),
    ],
)
def test_the_cron_wrapper_reports_what_the_exit_code_means(tmp_path: Path, rc: int, line: str) -> None:
    result = _run_wrapper(tmp_path, rc=rc)
    assert result.returncode == rc
    assert (line in result.stderr) if line else result.stderr == ""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    call = (tmp_path / "calls.log").read_text().strip()
    assert call == f"audit --config {tmp_path}/config.toml --out {tmp_path}/data/reports/{day}"


def test_the_cron_wrapper_runs_a_shard_and_the_merge(tmp_path: Path) -> None:
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    assert _run_wrapper(tmp_path, "--shard", "2/3", rc=1).stderr == ""  # a shard's gaps: the merge tells
    assert _run_wrapper(tmp_path, "--shard=1/3").returncode == 0
    merged = _run_wrapper(tmp_path, "merge", rc=1)
    assert merged.returncode == 1 and "gaps found" in merged.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    parts = f"{tmp_path}/data/parts/{day}"
    assert calls[0].endswith(f"--out {parts}/shard-2 --shard 2/3 --format json")
    assert calls[1].endswith(f"--out {parts}/shard-1 --shard=1/3 --format json")
    assert calls[2] == (
        f"merge {parts}/shard-1 {parts}/shard-2 --config {tmp_path}/config.toml --out {tmp_path}/data/reports/{day}"
    )


def test_the_cron_wrapper_refuses_a_secrets_file_others_can_read(tmp_path: Path) -> None:
    result = _run_wrapper(tmp_path, env_mode=0o644)
    assert result.returncode == 2 and "readable by others (chmod 600" in result.stderr
    assert not (tmp_path / "calls.log").exists()


def test_the_systemd_units_are_consistent() -> None:
    service = _unit(DEPLOY / "systemd" / "uss-auditor.service")
    timer = _unit(DEPLOY / "systemd" / "uss-auditor.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["EnvironmentFile"] == "/etc/uss-auditor/auditor.env"
    assert service["Service"]["SuccessExitStatus"] == "1"  # gaps: the unit succeeds; 2 and 3 fail it
    assert service["Service"]["User"] != "root"
    exec_start = service["Service"]["ExecStart"]
    assert "auditor audit --config /etc/uss-auditor/config.toml" in exec_start
    assert "$$(date -u +%%F)" in exec_start  # systemd's own $ and % expansion escaped
    assert timer["Timer"]["Unit"] == "uss-auditor.service" and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        result = run([analyze, "calendar", timer["Timer"]["OnCalendar"]])
        assert result.returncode == 0, result.stderr


def _unit(path: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        else:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


def test_the_example_env_file_holds_no_secret() -> None:
    text = (DEPLOY / "auditor.env.example").read_text()
    values = [line.split("=", 1)[1] for line in text.splitlines() if line and not line.startswith("#")]
    assert values == ["'replace-with-the-client-secret'"]
