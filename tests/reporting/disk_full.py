"""Run a report writer in a child process whose files may not grow past a few kilobytes (RLIMIT_FSIZE).

The writer then fails half-way through writing, the way it would on a full disk, wherever and however it
writes: an in-place write would leave a truncated report behind, an atomic one leaves the old file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 2048


def write_with_a_full_disk(writer: str, target: Path) -> subprocess.CompletedProcess[str]:
    """Call ``writer`` (``"module:function"``, taking ``(run, path)``) on the sample run, files capped at
    LIMIT_BYTES. Returns the finished child process (its stderr says why the write failed)."""
    module, function = writer.split(":")
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from tests.reporting.sample import sample_run
        from {module} import {function} as write

        run = sample_run()  # built before the cap, so that nothing but the report is written under it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT_BYTES}, {LIMIT_BYTES}))
        write(run, Path(sys.argv[1]))
        """
    )
    return subprocess.run(  # noqa: S603 (this interpreter, our own code)
        [sys.executable, "-c", code, str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
