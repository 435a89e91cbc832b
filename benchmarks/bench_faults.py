"""Benchmark: the cost of resilience. The demo fleet clean, then under the simulator's fault mode.

For each fault rate (default 0, 10% and 30%, each at a fixed seed) it prints how many tenants got the
same result as the clean run (verdict, findings, census, error code and hint), the wall time of the
fleet, the requests the simulator saw (top-level, $batch items, token requests), the faults it
injected, and whether any request came before a Retry-After had passed (judged client-side, from
httpx hooks). Real msgraph-sdk and azure-identity over HTTPS to the simulator in the same process.

    .venv/bin/python benchmarks/bench_faults.py --rates 0 0.1 0.3 --seed 11
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from auditor.collect import TenantAuditor
from auditor.config import AuditConfig, load_config
from auditor.demo import demo_config_text, demo_fixture_path
from auditor.graph.client import ConnectionSettings, open_session
from auditor.model import RunMode, TenantResult
from auditor.remediation import Journal, apply_plan, plan_remediation
from auditor.runner import run_fleet
from auditor.simulator import FaultProfile, GraphSimulator, load_fixture


class EarlyCheck:
    """Client-side: was any request sent before a top-level Retry-After had passed (per tenant)?"""

    def __init__(self) -> None:
        self.sends: dict[str, list[float]] = defaultdict(list)
        self.pauses: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def session_factory(self, settings: ConnectionSettings) -> Any:
        tenant = settings.tenant_id

        async def on_request(request: httpx.Request) -> None:
            self.sends[tenant].append(time.monotonic())

        async def on_response(response: httpx.Response) -> None:
            if response.status_code == 429 and "Retry-After" in response.headers:
                now = time.monotonic()
                self.pauses[tenant].append((now, now + float(response.headers["Retry-After"])))

        return open_session(settings, event_hooks={"request": [on_request], "response": [on_response]})

    def early(self) -> int:
        return sum(
            1
            for tenant, pauses in self.pauses.items()
            for start, end in pauses
            for sent in self.sends[tenant]
            if start < sent < end
        )


def comparable(result: TenantResult) -> dict[str, Any]:
    data = result.to_dict()
    if data.get("error"):
        data["error"] = {"code": data["error"]["code"], "hint": data["error"]["hint"]}
    return data


async def audit(config: AuditConfig, factory: Any = None) -> dict[str, TenantResult]:
    options = {"session_factory": factory} if factory is not None else {}
    run = await run_fleet(
        config.tenants,
        TenantAuditor(config, **options),
        concurrency=config.run.concurrency,
        tenant_timeout=config.run.tenant_timeout_seconds,
        mode=RunMode.AUDIT,
        currency="GBP",
    )
    return {r.tenant_id: r for r in run.tenants}


def duplicate_writes(
    sim: GraphSimulator, config: AuditConfig, results: dict[str, TenantResult], verify_timeout: float
) -> tuple[int, int, dict[str, int]]:
    """Remediate what the (faulty) audit planned, under the same faults: tenants written, POSTs sent
    after one had been applied (must be 0), and the outcomes."""
    sim.reset_observations()
    plan = plan_remediation([results[t.tenant_id] for t in config.tenants], config.tenants)
    with tempfile.TemporaryDirectory() as directory:
        outcomes = asyncio.run(
            apply_plan(
                plan,
                Journal(Path(directory) / "remediation.jsonl"),
                verify_timeout=verify_timeout,
                request_timeout=config.run.request_timeout_seconds,
            )
        )
    duplicates = written = 0
    for tenant_id in outcomes:
        sent = [r for r in sim.requests() if r.route == "roleAssignments.create" and r.tenant_id == tenant_id]
        applied = [i for i, r in enumerate(sent) if r.status == 201 or r.fault == "lost-answer"]
        written += bool(applied)
        duplicates += len(sent) - 1 - applied[0] if applied else 0
    return written, duplicates, dict(Counter(o.action.value for o in outcomes.values()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--request-timeout", type=float, default=2.0, help="run.request_timeout_seconds")
    parser.add_argument("--tenant-timeout", type=float, default=300.0, help="run.tenant_timeout_seconds")
    parser.add_argument("--show-differences", action="store_true", help="print what differs from clean")
    parser.add_argument(
        "--remediate", action="store_true", help="also write the fixable tenants, under faults"
    )
    parser.add_argument(
        "--verify-timeout", type=float, default=5.0, help="remediation.verify_timeout_seconds"
    )
    args = parser.parse_args()
    # The simulator's dropped connections are deliberate; aiohttp would log each with a traceback.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)

    fixture_path = demo_fixture_path()
    fixture = tomllib.loads(fixture_path.read_text())
    print(
        f"demo fleet ({len(fixture['tenants'])} tenants), request time-out {args.request_timeout:g} s, "
        f"tenant time-out {args.tenant_timeout:g} s, slow answers {3 * args.request_timeout:g} s, seed {args.seed}"
    )
    print(f"{'faults':>7} {'same as clean':>14} {'wall s':>7} {'top-level':>9} {'items':>6} {'tokens':>6} "
          f"{'faults injected':>15} {'early':>5}  slowest tenant")  # fmt: skip
    clean: dict[str, TenantResult] | None = None
    for rate in [0.0, *[r for r in args.rates if r > 0]]:
        world = load_fixture(fixture_path)
        with GraphSimulator(world, seed=args.seed, log_limit=500_000) as sim:
            os.environ.update(sim.credentials)
            text = demo_config_text(sim, fixture).replace(
                "concurrency = 8\ntenant_timeout_seconds = 120\n",
                f"concurrency = 15\ntenant_timeout_seconds = {args.tenant_timeout}\n"
                f"request_timeout_seconds = {args.request_timeout}\n",
            )
            with tempfile.TemporaryDirectory() as directory:
                path = Path(directory) / "audit.toml"
                path.write_text(text)
                config = load_config(path)
            base = world.default_faults if isinstance(world.default_faults, FaultProfile) else FaultProfile()
            if rate > 0:
                # The clean answers from this very simulator (its URLs and relative dates are its own).
                clean = asyncio.run(audit(config))
                sim.reset_observations()
                sim.set_faults(base.mixed(rate, slow_seconds=3 * args.request_timeout))
            check = EarlyCheck()
            durations: dict[str, float] = {}
            began = time.monotonic()
            results = asyncio.run(audit(config, check.session_factory))
            wall = time.monotonic() - began
            records = sim.requests()
            writes = duplicate_writes(sim, config, results, args.verify_timeout) if args.remediate else None
            for tenant_id in results:
                times = [r.time for r in records if r.tenant_id == tenant_id]
                durations[tenant_id] = (max(times) - min(times)) if times else 0.0
        if clean is None:
            clean = results
        assert clean is not None
        same = sum(
            1 for tenant_id, result in results.items() if comparable(result) == comparable(clean[tenant_id])
        )
        top = sum(1 for r in records if r.batch_parent is None and r.route != "identity.token")
        items = sum(1 for r in records if r.batch_parent is not None)
        tokens = sum(1 for r in records if r.route == "identity.token")
        injected = Counter(r.fault for r in records if r.fault)
        slowest = max(durations, key=lambda t: durations[t])
        name = results[slowest].name
        print(
            f"{rate:>7.0%} {same:>8}/{len(results):<5} {wall:>7.1f} {top:>9} {items:>6} {tokens:>6} "
            f"{sum(injected.values()):>15} {check.early():>5}  {name} {durations[slowest]:.1f} s"
        )
        if rate > 0:
            print("         injected: " + ", ".join(f"{k} {n}" for k, n in injected.most_common()))
        if writes is not None:
            print(
                f"         remediation: {writes[0]} tenant(s) written, outcomes {writes[2]}; "
                f"duplicate writes (a POST after one was applied): {writes[1]}"
            )
        for tenant_id, result in results.items():
            if comparable(result) != comparable(clean[tenant_id]):
                error = f" {result.error.code.value}: {result.error.message[:160]}" if result.error else ""
                print(f"         differs: {result.name}: {result.status.value}{error}")
                if args.show_differences:
                    mine, theirs = comparable(result), comparable(clean[tenant_id])
                    for key in sorted(set(mine) | set(theirs)):
                        if mine.get(key) != theirs.get(key):
                            print(f"           {key}: {str(mine.get(key))[:1200]}")
                            print(f"           clean: {str(theirs.get(key))[:1200]}")


if __name__ == "__main__":
    main()
