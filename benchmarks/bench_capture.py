"""Benchmark: what `audit --capture` costs, and how fast a capture replays.

Audits a synthetic fleet (real SDK + azure-identity over HTTPS to the simulator) three times: plain, with
a capture, with a redacted capture; then audits the capture again against `ReplayServer`. Prints the
seconds of each (after a warm-up audit), the capture's size (bytes per user) and whether the replay gave
the same verdicts. The simulator and the replay run in the same process (their own threads), so the
figures include them; on a shared machine, run it twice.

    .venv/bin/python benchmarks/bench_capture.py --tenants 10 --users 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.collect import TenantAuditor
from auditor.config import AuditConfig, load_config
from auditor.graph.capture import Capture, CapturedTenant
from auditor.simulator import GraphSimulator
from auditor.simulator.fleet import FleetSpec, generate_fleet
from auditor.simulator.replay import REPLAY_SECRET_ENV, ReplayServer


def fleet_config(sim: GraphSimulator, directory: Path) -> AuditConfig:
    app = next(iter(sim.world.apps.values()))
    lines = ["[auth]", f'client_id = "{app.client_id}"', f'client_secret_env = "{app.env_prefix}_SECRET"',
             f'authority = "{sim.authority}"', f'graph_endpoint = "{sim.graph_url}"',
             f'ca_bundle = "{sim.ca_file}"', ""]  # fmt: skip
    for tenant in sim.world.tenants.values():
        lines += ["[[tenants]]", f'name = "{tenant.display_name}"', f'tenant_id = "{tenant.tenant_id}"', ""]
    path = directory / "fleet.toml"
    path.write_text("\n".join(lines))
    return load_config(path)


def run(
    config: AuditConfig, session_factory: Callable[..., Any] | None = None
) -> tuple[float, float, dict[str, str]]:
    """Wall and CPU seconds (this process: auditor and simulator) of one audit, and its verdicts."""
    auditor = (
        TenantAuditor(config, session_factory=session_factory) if session_factory else TenantAuditor(config)
    )
    slots = asyncio.Semaphore(8)

    async def one(tenant):  # type: ignore[no-untyped-def]
        async with slots:
            return await auditor(tenant)

    async def all_tenants():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(one(t) for t in config.tenants))

    started, cpu = time.perf_counter(), time.process_time()
    results = asyncio.run(all_tenants())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return seconds, cpu, {r.tenant_id: f"{r.status.value} {r.mailboxes}" for r in results}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--users", type=int, default=2000)
    args = parser.parse_args()
    world = generate_fleet(FleetSpec(tenants=args.tenants, users=args.users))
    users = args.tenants * args.users
    with GraphSimulator(world, log_limit=1000) as sim, tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        os.environ.update(sim.credentials)
        config = fleet_config(sim, root)
        tenants = [CapturedTenant(t.tenant_id, t.name) for t in config.tenants]
        run(config)  # warm-up: imports, TLS contexts, the simulator's caches
        plain, plain_cpu, verdicts = run(config)
        print(
            f"fleet: {args.tenants} tenants x {args.users} users (wall seconds; CPU seconds of the process)"
        )
        print(f"audit without capture        {plain:7.2f} s, CPU {plain_cpu:7.2f} s")
        for label, redact in (("with capture", False), ("with redacted capture", True)):
            capture = Capture(root / label.replace(" ", "-"), redact=redact, tenants=tenants)
            seconds, cpu, _ = run(config, capture.session_factory)
            capture.close()
            size = sum(p.stat().st_size for p in capture.directory.iterdir())
            print(
                f"audit {label:<23}{seconds:7.2f} s, CPU {cpu:7.2f} s (+{100 * (cpu / plain_cpu - 1):.0f} %), "
                f"{size / 2**20:.1f} MiB, {size / users:.0f} bytes per user"
            )
        with ReplayServer(root / "with-capture") as server:
            os.environ[REPLAY_SECRET_ENV] = "replay"
            replay_config = root / "replay.toml"
            replay_config.write_text(server.config_text())
            seconds, cpu, replayed = run(load_config(replay_config))
        same = replayed == verdicts and not server.misses
        print(
            f"audit of the replay          {seconds:7.2f} s, CPU {cpu:7.2f} s "
            f"(same verdicts and counts: {same}, misses: {len(server.misses)})"
        )


if __name__ == "__main__":
    main()
