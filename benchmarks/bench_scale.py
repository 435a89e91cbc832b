"""Issue 13's acceptance figures: `auditor audit` at fleet scale, measured from outside.

The simulator runs in its own process (`sim_process.py`) with 50 ms latency per request ($batch 100 ms);
the auditor runs as the real CLI (`auditor audit --config ... --out ...`) in another, and this script
measures only the auditor's processes (the CLI and its `--workers` children):

* Graph requests (the simulator's counters, sign-ins and `$batch` items not counted) vs the README's floor
  8 + ⌈U/999⌉ + ⌈M/20⌉ per tenant;
* wall time vs the concurrency-bound floor: one tenant's critical path (the engine auditing one tenant
  alone, latency plus that tenant's own CPU) x tenants / run.concurrency;
* CPU (user + system of the auditor and its children, `wait4`) per Graph request;
* peak RSS: the largest sum of VmRSS over the auditor's process tree, sampled every 0.1 s;
* report sizes (audit.html, audit.json, audit.xlsx);
* a second night's requests as a share of the first (incremental census, when `--full-census` exists; else
  "n/a");
* the naive script (`naive_audit.py`: sequential, one GET per mailbox) on a 10 x 1,000 fleet, for the
  speed-up. By default it audits 1 of the 10 tenants and the figure is scaled by 10 (every tenant costs
  the same); `--large` runs all 10.

    .venv/bin/python benchmarks/bench_scale.py            # 100 x 2,000 (a few minutes on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --large    # also 1,000 x 2,000, and the full naive run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AUDITOR = str(BIN / "auditor") if (BIN / "auditor").exists() else "auditor"
HERE = Path(__file__).resolve().parent


class Simulator:
    """`sim_process.py` as a context manager: its config, environment, counters and request floor."""

    def __init__(
        self, tenants: int, users: int, directory: Path, latency: float, batch_latency: float
    ) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
            [sys.executable, str(HERE / "sim_process.py"), "--tenants", str(tenants), "--users", str(users),
             "--latency-ms", str(latency), "--batch-latency-ms", str(batch_latency), str(directory)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("the simulator process did not start")
        info = json.loads(line)
        self.config = Path(info["config"])
        self.env = {**os.environ, **info["env"]}
        self.stats_url = info["stats"]
        self.floor = int(info["floor"])
        self.ca_file = info["ca_file"]

    def requests(self) -> int:
        """Top-level Graph requests so far (no sign-ins, no `$batch` items)."""
        import ssl

        context = ssl.create_default_context(cafile=self.ca_file)
        with urllib.request.urlopen(self.stats_url, context=context) as answer:  # noqa: S310 - https
            stats = json.loads(answer.read())
        return sum(
            c["count"]
            for c in stats["counters"]
            if not c["route"].startswith("identity") and not c["route"].startswith("mailboxSettings")
        )

    def cpu(self) -> float:
        """CPU seconds (user + system) the simulator process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _tree_memory(pid: int) -> tuple[int, int, int, int]:
    """Over ``pid`` and its descendants: (processes, sum of VmRSS, sum of Pss, largest VmRSS), in bytes.

    Forked workers share the pages they inherited: RSS counts a shared page in every process, Pss
    (/proc/PID/smaps_rollup) divides it among them, so the Pss sum is what the tree really occupies."""
    processes = rss_sum = pss_sum = largest = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    rss_sum += rss
                    largest = max(largest, rss)
                    processes += 1
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss_sum += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return processes, rss_sum, pss_sum, largest


def run_cli(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run the auditor CLI; its wall, CPU (self + reaped children) and peak RSS of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 - the auditor CLI, fixed arguments
        [AUDITOR, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    peak = {"processes": 0, "rss": 0, "pss": 0, "largest": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for key, value in zip(peak, _tree_memory(process.pid), strict=True):
                peak[key] = max(peak[key], value)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.stdout.read() if process.stdout else b""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        sys.stdout.write(output.decode(errors="replace")[-2000:])
        raise SystemExit(f"auditor {' '.join(args[:1])} exited {process.returncode}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, **peak, "code": process.returncode}


def has_full_census() -> bool:
    argv = [AUDITOR, "audit", "--help"]
    env = {**os.environ, "COLUMNS": "200"}
    help_text = subprocess.run(argv, capture_output=True, text=True, env=env).stdout  # noqa: S603
    return "--full-census" in help_text


def critical_path(sim: Simulator) -> float:
    """One tenant's critical path: the wall of auditing the first tenant alone, in this process (the
    engine only: no CLI start-up, no reports), the second of two runs (the first warms up)."""
    import asyncio
    import logging

    sys.path.insert(0, str(ROOT))
    from auditor.collect import TenantAuditor
    from auditor.config import load_config

    logging.disable(logging.WARNING)  # the simulator's endpoints are not Microsoft's: said once is enough
    os.environ.update(sim.env)
    config = load_config(sim.config)
    auditor = TenantAuditor(config)
    seconds = 0.0
    for _ in range(2):
        started = time.perf_counter()
        asyncio.run(auditor(config.tenants[0]))
        seconds = time.perf_counter() - started
    return seconds


def fleet(tenants: int, users: int, args: argparse.Namespace, work: Path) -> None:
    print(f"\n== {tenants} tenants x {users} users, {args.latency:g} ms per request ($batch "
          f"{args.batch_latency:g} ms), concurrency {args.concurrency}, --workers {args.workers or 'default'}")  # fmt: skip
    sim = Simulator(tenants, users, work / f"sim-{tenants}", args.latency, args.batch_latency)
    try:
        common = ["--config", str(sim.config), "--concurrency", str(args.concurrency)]
        workers = ["--workers", str(args.workers)] if args.workers else []
        incremental = has_full_census()
        critical = critical_path(sim)
        floor_wall = critical * tenants / args.concurrency

        before, sim_cpu = sim.requests(), sim.cpu()
        night1_args = ["audit", *common, *workers, "--out", str(work / f"out-{tenants}")]
        if incremental:
            night1_args.append("--full-census")
        night1 = run_cli(night1_args, sim.env)
        requests = sim.requests() - before
        sim_cpu = sim.cpu() - sim_cpu
        out = work / f"out-{tenants}"
        sizes = {name: (out / name).stat().st_size for name in ("audit.html", "audit.json", "audit.xlsx")
                 if (out / name).exists()}  # fmt: skip
        print(f"  Graph requests    {requests:,} (floor {sim.floor:,}: {requests / sim.floor:.2f}x)")
        print(f"  wall              {night1['wall']:.1f} s (concurrency-bound floor {floor_wall:.1f} s = "
              f"{critical:.2f} s critical path x {tenants} / {args.concurrency}: {night1['wall'] / floor_wall:.2f}x)")  # fmt: skip
        print(
            f"  CPU               {night1['cpu']:.1f} s = {1000 * night1['cpu'] / requests:.2f} ms per Graph request"
        )
        print(
            f"  simulator CPU     {sim_cpu:.1f} s (the same {os.cpu_count()} cores: the floor assumes it is free)"
        )
        print(f"  peak memory       {night1['pss'] / 2**20:.0f} MiB Pss over the auditor's "
              f"{night1['processes']:.0f} processes (RSS: largest process {night1['largest'] / 2**20:.0f} MiB, "
              f"sum {night1['rss'] / 2**20:.0f} MiB, counting pages the forked workers share once per process)")  # fmt: skip
        print("  reports           " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sizes.items()))
        if incremental:
            before = sim.requests()
            night2 = run_cli(["audit", *common, *workers, "--out", str(work / f"night2-{tenants}")], sim.env)
            second = sim.requests() - before
            print(f"  second night      {second:,} requests = {100 * second / requests:.1f} % of the first "
                  f"(incremental census; wall {night2['wall']:.1f} s, CPU {night2['cpu']:.1f} s)")  # fmt: skip
        else:
            print(
                "  second night      n/a (no incremental census: `auditor audit --full-census` not present)"
            )
    finally:
        sim.close()


def naive(args: argparse.Namespace, work: Path) -> None:
    tenants = 10
    measured = 10 if args.large else 1
    print(f"\n== naive script vs auditor on a {tenants} x 1,000 fleet ({args.latency:g} ms per request)")
    sim = Simulator(tenants, 1000, work / "sim-naive", args.latency, args.batch_latency)
    try:
        config = sim.config
        if measured < tenants:
            import tomllib

            data = tomllib.loads(config.read_text(encoding="utf-8"))
            text = config.read_text(encoding="utf-8").split("[[tenants]]")[0]
            tenant = data["tenants"][0]
            text += f'[[tenants]]\nname = "{tenant["name"]}"\ntenant_id = "{tenant["tenant_id"]}"\n'
            config = work / "naive-one.toml"
            config.write_text(text, encoding="utf-8")
        started = time.perf_counter()
        naive_argv = [sys.executable, str(HERE / "naive_audit.py"), str(config)]
        subprocess.run(naive_argv, env=sim.env, check=True)  # noqa: S603 - our own script
        naive_wall = (time.perf_counter() - started) * tenants / measured
        ours = run_cli(["audit", "--config", str(sim.config), "--out", str(work / "out-naive")], sim.env)
        scaled = (
            ""
            if measured == tenants
            else f" (1 of {tenants} tenants measured, x {tenants}; --large runs all)"
        )
        print(f"  naive script      {naive_wall:.0f} s{scaled}")
        print(
            f"  auditor           {ours['wall']:.1f} s (CLI start-up included): {naive_wall / ours['wall']:.0f}x faster"
        )
    finally:
        sim.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--large", action="store_true", help="also 1,000 x 2,000, and the full naive run")
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=50.0, help="ms per request")
    parser.add_argument("--batch-latency", type=float, default=100.0, help="ms per $batch POST")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="--workers for the auditor (0: its default)")
    parser.add_argument("--no-naive", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
        work = Path(directory)
        fleet(args.tenants, args.users, args, work)
        if args.large:
            fleet(1000, args.users, args, work)
        if not args.no_naive:
            naive(args, work)


if __name__ == "__main__":
    main()
