"""Benchmark: render every report of a large synthetic run through the streaming path.

No Graph and no simulator: the run is built straight from the model with the fleet generator's shares
(2,000 users a tenant: 5 % shared mailboxes, 10 % without a mailbox, a few rooms), a third of the tenants
non-compliant (so their shared mailboxes are billed), some errors and ambiguous tenants. Each tenant's
result is spooled to disk as it is "finished", as `auditor audit` does, then audit.json, audit.html and
audit.xlsx are written from the spool. Prints peak RSS, time and file sizes per fleet size; with
``--browser`` also how long headless Chromium takes to open audit.html (load event and first paint).

    .venv/bin/python benchmarks/bench_reports.py                 # 100 and 1,000 tenants x 2,000 users
    .venv/bin/python benchmarks/bench_reports.py --tenants 1000 --browser

Each fleet size runs in a fresh process, so peak RSS is that size's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from auditor.model import (
    Billing,
    Finding,
    FindingCode,
    IdentificationMethod,
    IdentifiedServicePrincipal,
    MailboxCensus,
    RunMode,
    RunResult,
    ServicePrincipalRecord,
    Severity,
    SharedMailbox,
    Status,
    TenantResult,
    money,
)

PRICE = 2.50
STARTED = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
_WORDS = ("Accounts", "Reception", "Sales", "Support", "Invoices", "HR", "Orders", "Returns", "Legal")


def _guid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def synthetic_tenant(n: int, users: int) -> TenantResult:
    """Tenant ``n`` of a synthetic fleet, with ``users`` users (deterministic)."""
    domain = f"tenant{n:04d}.example"
    shared = round(users * 0.05)
    room, equipment = round(users * 0.01), round(users * 0.002)
    no_mailbox = round(users * 0.1)
    boxes = tuple(
        SharedMailbox(
            id=_guid(domain, i),
            display_name=f"{_WORDS[i % len(_WORDS)]} {i // len(_WORDS) + 1}",
            user_principal_name=f"{_WORDS[i % len(_WORDS)].lower()}-{i}@{domain}",
            mail=f"{_WORDS[i % len(_WORDS)].lower()}-{i}@{domain}",
            account_enabled=i % 17 == 0,
            licensed=i % 23 == 0,
        )
        for i in range(shared)
    )
    census: MailboxCensus | None = MailboxCensus(
        boxes,
        user=users - shared - room - equipment - no_mailbox,
        room=room,
        equipment=equipment,
        no_mailbox=no_mailbox,
    )
    name = f"Tenant {n:04d} Holdings"
    tenant_id = _guid("tenant", n)
    sp: IdentifiedServicePrincipal | None = IdentifiedServicePrincipal(
        ServicePrincipalRecord(_guid("sp", n), "7e1b3f0c-2d54-4c8e-9a61-5f0c3b2a9d17", "USS AzureAD", True),
        IdentificationMethod.APP_ID,
    )
    kind = n % 12
    if kind in (0, 1, 2, 3):
        status = Status.NON_COMPLIANT
        billing = Billing(shared, PRICE, money(Decimal(str(PRICE)) * shared))
        findings: tuple[Finding, ...] = (
            Finding(
                FindingCode.ROLE_MISSING,
                Severity.HIGH,
                f"'USS AzureAD' in tenant {name} ({tenant_id}) has no active Security Reader assignment at "
                "scope '/', so USS cannot recognise shared mailboxes and bills them as users. Fix: assign "
                "Security Reader (or run `auditor audit --remediate`).",
            ),
        )
    elif kind == 4:
        status, billing, findings = Status.NOT_CONNECTED, Billing(0, PRICE, 0.0), ()
        sp = None
    elif kind == 5 and n % 24 == 5:
        status, billing, findings = Status.ERROR, Billing(None, PRICE, None), ()
        census = None
        sp = None
    else:
        status, billing, findings = Status.COMPLIANT, Billing(0, PRICE, 0.0), ()
    return TenantResult(
        name=name,
        tenant_id=tenant_id,
        status=status,
        billing=billing,
        tags=("eu" if n % 2 else "us", f"ring{n % 3}"),
        service_principal=sp,
        findings=findings,
        mailboxes=census,
    )


def synthetic_tenants(tenants: int, users: int) -> Iterator[TenantResult]:
    """The fleet's results one at a time, as tenants finish."""
    for n in range(1, tenants + 1):
        yield synthetic_tenant(n, users)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one_size(tenants: int, users: int, out: Path) -> dict[str, object]:
    """Spool the run's tenants, write every report; the figures of this size."""
    from auditor.reporting import write_reports
    from auditor.reporting.spool import TenantSpool

    began = time.perf_counter()
    with TenantSpool.create(out) as spool:
        results = tuple(spool.add(result) for result in synthetic_tenants(tenants, users))
        spooled = time.perf_counter()
        run = RunResult(
            run_id=_guid("run", tenants),
            started_at=STARTED,
            finished_at=STARTED + timedelta(minutes=4),
            tool_version="bench",
            mode=RunMode.AUDIT,
            tenants=results,
            currency="GBP",
        )
        timings: dict[str, float] = {}
        for fmt in ("json", "html", "xlsx"):
            start = time.perf_counter()
            write_reports(run, out, [fmt])
            timings[fmt] = time.perf_counter() - start
    return {
        "tenants": tenants,
        "users": users,
        "spool_s": round(spooled - began, 2),
        **{f"{fmt}_s": round(seconds, 2) for fmt, seconds in timings.items()},
        "total_s": round(time.perf_counter() - began, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        **{
            f"{name}_mb": round((out / name).stat().st_size / 1e6, 2)
            for name in ("audit.json", "audit.html", "audit.xlsx")
        },
    }


def rerender(audit_json: Path) -> dict[str, object]:
    """``auditor report``: read the saved audit.json back (tenant by tenant when large), render HTML and
    Excel into a fresh folder; its time and peak RSS."""
    from auditor.reporting.render import RenderOptions, render_saved_run

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-rerender-") as out:
        render_saved_run(RenderOptions(run_json=audit_json, out_dir=Path(out)))
    return {"report_s": round(time.perf_counter() - began, 2), "report_peak_rss_mb": round(_peak_rss_mb(), 1)}


def browser_open(html: Path) -> dict[str, float]:
    """Open ``html`` in headless Chromium (tests/reporting/cdp.py); seconds to the load event and to the
    first contentful paint, and the page's own count of the tenants table's rows."""
    from tests.reporting.cdp import Browser, chromium_path

    if not Path(chromium_path()).exists():
        return {}
    with Browser(timeout=120) as browser:
        page = browser.new_page(width=1400, height=900)
        start = time.perf_counter()
        page.goto(html.resolve().as_uri())
        loaded = time.perf_counter() - start
        paint = page.evaluate(
            "(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: -1}).startTime"
        )
        rows = page.evaluate("document.querySelectorAll('#tenants-table tbody tr[data-tenant-id]').length")
        width = page.evaluate("[document.querySelector('#tenants .table-wrap').scrollWidth, "
                              "document.querySelector('#tenants .table-wrap').clientWidth]")  # fmt: skip
    return {"open_s": round(loaded, 2), "first_paint_s": round(float(paint) / 1000, 2) if paint >= 0 else "n/a", "rows": rows,
            "table_scroll_vs_client_px": width}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tenants", type=int, action="append", help="fleet size (repeatable; default 100 and 1000)"
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--browser", action="store_true", help="also time opening audit.html in Chromium")
    parser.add_argument("--keep", type=Path, help="write the reports here instead of a temporary folder")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rerender", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.tenants or [100, 1000]
    if args.rerender:
        print(json.dumps(rerender(args.rerender)))
        return
    if args.child:
        out = args.keep or Path(tempfile.mkdtemp(prefix="bench-reports-"))
        figures = one_size(sizes[0], args.users, out)
        if args.browser:
            figures.update(browser_open(out / "audit.html"))
        print(json.dumps(figures))
        return
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-reports-") as directory:
            out = args.keep / str(size) if args.keep else Path(directory)
            out.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "--child", "--tenants", str(size), "--users", str(args.users),
                       "--keep", str(out)] + (["--browser"] if args.browser else [])  # fmt: skip
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)  # noqa: S603
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            # `auditor report audit.json` in a process of its own: its peak RSS is the re-render's.
            command = [sys.executable, __file__, "--rerender", str(out / "audit.json")]
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=os.environ)  # noqa: S603
            figures.update(json.loads(done.stdout.strip().splitlines()[-1]))
            print(" ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
