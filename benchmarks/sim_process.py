"""The Graph simulator in its own process, for benchmarks that measure the auditor alone.

    python benchmarks/sim_process.py --tenants 100 --users 2000 --latency-ms 50 --batch-latency-ms 100 DIR

Generates the fleet, serves it on 127.0.0.1 (a free port), writes DIR/fleet.toml (a config for every
tenant) and DIR/credentials.env, then prints one JSON line (config path, environment, the stats URL and
the README's request floor) and serves until stdin closes or SIGTERM arrives.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.simulator import FaultProfile, GraphSimulator
from auditor.simulator.fleet import FleetSpec, generate_fleet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--batch-latency-ms", type=float, default=100.0)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()

    world = generate_fleet(FleetSpec(tenants=args.tenants, users=args.users))
    base = world.default_faults if isinstance(world.default_faults, FaultProfile) else FaultProfile()
    world.default_faults = FaultProfile(
        latency_ms=args.latency_ms,
        batch_latency_ms=args.batch_latency_ms,
        mailbox_concurrency=base.mailbox_concurrency,
    )
    floor = 0
    batches = []
    for tenant in world.tenants.values():
        users = len(tenant.users)
        mail = sum(1 for user in tenant.users if user.mail)
        floor += 8 + math.ceil(users / 999) + math.ceil(mail / 20)
        batches.append(math.ceil(mail / 20))
    args.directory.mkdir(parents=True, exist_ok=True)
    sim = GraphSimulator(world, port=0, state_dir=args.directory / "sim", log_limit=1000).start()
    app = next(iter(world.apps.values()))
    lines = ["[auth]", f'client_id = "{app.client_id}"', f'client_secret_env = "{app.env_prefix}_SECRET"',
             f'authority = "{sim.authority}"', f'graph_endpoint = "{sim.graph_url}"',
             f'ca_bundle = "{sim.ca_file}"', "allow_custom_endpoints = true", "",
             "[history]", f'path = "{args.directory / "history.sqlite"}"', ""]  # fmt: skip
    for tenant in world.tenants.values():
        lines += ["[[tenants]]", f'name = "{tenant.display_name}"', f'tenant_id = "{tenant.tenant_id}"', ""]
    config = args.directory / "fleet.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    print(
        json.dumps(
            {
                "config": str(config),
                "env": sim.credentials,
                "stats": f"{sim.origin}/_simulator/stats",
                "ca_file": str(sim.ca_file),
                "floor": floor,
                "max_batches": max(batches or [0]),
                "graph_url": sim.graph_url,
            }
        ),
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
