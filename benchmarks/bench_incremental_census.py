"""Benchmark: incremental nights (issue 13, goal 5). Audits a synthetic fleet with `auditor audit`'s own
code path (history on, real SDK + azure-identity over HTTPS to the simulator) for several nights, the
census clock advanced a day each night, and prints each night's Graph requests as a share of the first
(full) night's, and its wall time.

    .venv/bin/python benchmarks/bench_incremental_census.py --tenants 20 --users 2000 --nights 9
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.app import AuditOptions, audit
from auditor.simulator import GraphSimulator
from auditor.simulator.fleet import FleetSpec, generate_fleet


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--nights", type=int, default=9)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-age-days", type=int, default=7)
    args = parser.parse_args()

    world = generate_fleet(FleetSpec(tenants=args.tenants, users=args.users))
    now = [datetime(2026, 3, 2, 1, 30, tzinfo=UTC)]
    with GraphSimulator(world, log_limit=2_000_000) as sim, tempfile.TemporaryDirectory() as directory:
        os.environ.update(sim.credentials)
        app = next(iter(world.apps.values()))
        lines = ["[auth]", f'client_id = "{app.client_id}"', f'client_secret_env = "{app.env_prefix}_SECRET"',
                 f'authority = "{sim.authority}"', f'graph_endpoint = "{sim.graph_url}"',
                 f'ca_bundle = "{sim.ca_file}"', "allow_custom_endpoints = true", "",
                 "[run]", f"concurrency = {args.concurrency}", "",
                 "[census]", f"max_age_days = {args.max_age_days}", ""]  # fmt: skip
        for tenant in world.tenants.values():
            lines += [
                "[[tenants]]",
                f'name = "{tenant.display_name}"',
                f'tenant_id = "{tenant.tenant_id}"',
                "",
            ]
        path = Path(directory) / "fleet.toml"
        path.write_text("\n".join(lines))
        print(
            f"incremental nights: {args.tenants} tenants x {args.users} users, max_age_days {args.max_age_days}"
        )
        first = 0
        for night in range(1, args.nights + 1):
            sim.reset_observations()
            started = time.perf_counter()
            audit(
                AuditOptions(
                    config=path,
                    out_dir=Path(directory) / "out",
                    formats=("json",),
                    census_clock=lambda: now[0],
                ),
                stdout=io.StringIO(),
            )
            seconds = time.perf_counter() - started
            records = [r for r in sim.requests() if r.route != "identity.token"]
            top = sum(1 for r in records if r.batch_parent is None)
            items = sum(1 for r in records if r.route == "mailboxSettings.userPurpose")
            first = first or top
            print(
                f"  night {night}: {top:6,} Graph requests ({top / first:6.1%} of night 1), "
                f"{items:7,} mailboxes read, {seconds:6.2f} s"
            )
            now[0] += timedelta(days=1)


if __name__ == "__main__":
    main()
