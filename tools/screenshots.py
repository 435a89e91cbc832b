"""`make screenshots`: PNG screenshots of the HTML report for the README, taken in headless Chromium.

Renders ``tests/reporting/data/audit.json`` (a demo-like run) and saves, 1280 CSS pixels wide:

* ``docs/report-overview.png``: the top of the page, summary cards, charts and the tenants table;
* ``docs/report-tenant.png``: one tenant's detail, opened the way a reader's link opens it
  (``audit.html#tenant-<tenant id>``).

Needs Debian's ``chromium`` (``apt-get install chromium``; ``--chromium`` or ``$CHROMIUM`` for another
path). Uses the DevTools-protocol driver of the browser tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditor.reporting.html import render_html  # noqa: E402 - after the path set-up
from auditor.reporting.json_report import read_run  # noqa: E402
from tests.reporting.cdp import Browser, chromium_path  # noqa: E402

WIDTH = 1280
# Alpine Ski House: a gap with findings, the admin-consent link and a short mailbox list.
DETAIL_TENANT = "3c8f1e52-7a41-4d0b-9c6e-1f2a3b4c5d10"


def take_screenshots(run_json: Path, out_dir: Path, chromium: str) -> list[Path]:
    """Render ``run_json`` and write the README screenshots into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = read_run(run_json)
    with tempfile.TemporaryDirectory(prefix="auditor-screenshots-") as tmp, Browser(chromium) as browser:
        page_file = render_html(run, Path(tmp) / "audit.html")
        page = browser.new_page(width=WIDTH, height=900)
        page.goto(page_file.as_uri())

        overview = out_dir / "report-overview.png"
        bottom = page.evaluate(
            "Math.ceil(document.getElementById('tenants').getBoundingClientRect().bottom + window.scrollY + 24)"
        )
        page.set_viewport(WIDTH, int(bottom))
        page.screenshot(overview)

        anchor = f"tenant-{DETAIL_TENANT}"
        page.set_viewport(WIDTH, 900)
        page.goto("about:blank")  # load the fragment URL afresh, as a link from a mail would
        page.goto(f"{page_file.as_uri()}#{anchor}")
        if not page.evaluate(f"document.getElementById({json.dumps(anchor)}).open"):
            raise RuntimeError(f"#{anchor} did not open the tenant's detail")
        page.evaluate("document.activeElement.blur()")  # no focus ring in the picture
        detail = out_dir / "report-tenant.png"
        page.screenshot(detail, selector=f"#{anchor}", margin=16)
    return [overview, detail]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python tools/screenshots.py [--run audit.json] [--out docs] [--chromium PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "tests" / "reporting" / "data" / "audit.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--chromium", default=chromium_path())
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"error: {args.chromium} not found; install it with: apt-get install chromium", file=sys.stderr)
        return 2
    for path in take_screenshots(args.run, args.out, args.chromium):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
