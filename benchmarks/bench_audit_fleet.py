"""Benchmark: audit a synthetic fleet end to end (real SDK + azure-identity over HTTPS to the simulator).

Prints tenants/s, users/s, Graph requests per tenant and peak RSS. The simulator runs in the same
process (its own thread), so the figure is a lower bound for the auditor alone: both share one core's
worth of Python.

    .venv/bin/python benchmarks/bench_audit_fleet.py --tenants 100 --users 500 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.collect import TenantAuditor
from auditor.config import load_config
from auditor.simulator import GraphSimulator
from auditor.simulator.fleet import FleetSpec, generate_fleet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    world = generate_fleet(FleetSpec(tenants=args.tenants, users=args.users))
    with GraphSimulator(world, log_limit=1000) as sim:
        os.environ.update(sim.credentials)
        app = next(iter(world.apps.values()))
        lines = ["[auth]", f'client_id = "{app.client_id}"', f'client_secret_env = "{app.env_prefix}_SECRET"',
                 f'authority = "{sim.authority}"', f'graph_endpoint = "{sim.graph_url}"',
                 f'ca_bundle = "{sim.ca_file}"', "allow_custom_endpoints = true", ""]  # fmt: skip
        for tenant in world.tenants.values():
            lines += [
                "[[tenants]]",
                f'name = "{tenant.display_name}"',
                f'tenant_id = "{tenant.tenant_id}"',
                "",
            ]
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "fleet.toml"
            path.write_text("\n".join(lines))
            config = load_config(path)
        auditor = TenantAuditor(config)
        slots = asyncio.Semaphore(args.concurrency)

        async def one(tenant):  # type: ignore[no-untyped-def]
            async with slots:
                return await auditor(tenant)

        async def run():  # type: ignore[no-untyped-def]
            return await asyncio.gather(*(one(t) for t in config.tenants))

        started = time.perf_counter()
        results = asyncio.run(run())
        seconds = time.perf_counter() - started
        counters = sim.counters()
    requests = sum(n for (_, route, _), n in counters.items() if route not in ("identity.token",))
    items = sum(n for (_, route, _), n in counters.items() if route == "mailboxSettings.get")
    statuses = Counter(r.status.value for r in results)
    print(f"audit {args.tenants} tenants x {args.users} users, concurrency {args.concurrency}")
    print(f"  wall time        {seconds:8.2f} s   {args.tenants / seconds:6.1f} tenants/s   "
          f"{args.tenants * args.users / seconds:,.0f} users/s")  # fmt: skip
    print(f"  Graph requests   {requests - items:,} top-level (+{items:,} $batch items), "
          f"{(requests - items) / args.tenants:.1f} per tenant")  # fmt: skip
    print(f"  verdicts         {dict(statuses)}")
    print(f"  peak RSS         {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:7.1f} MiB")


if __name__ == "__main__":
    main()
