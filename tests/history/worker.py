"""A second auditor process for the concurrency tests: ``python -m tests.history.worker MODE CONFIG``.

* ``hold``: take the history like a run does, print ``LOCKED``, wait for a line on stdin, record a run.
* ``stall``: take the history, start recording a run of several tenants and stop half-way inside the
  transaction, printing ``MIDWAY`` (the test then SIGKILLs it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from auditor.config import load_config
from auditor.history import open_history
from auditor.history.store import HistoryStore
from auditor.model import Status, TenantResult
from tests.history.builders import CONTOSO, FABRIKAM, NORTHWIND, T0, run, tenant


def main(mode: str, config_path: str, run_id: str) -> None:
    config = load_config(Path(config_path))
    with open_history(config) as history:
        print("LOCKED", flush=True)
        if mode == "stall":
            original = HistoryStore._insert_tenant
            done = 0

            def stall_half_way(self: HistoryStore, seq: int, position: int, result: TenantResult) -> None:
                nonlocal done
                original(self, seq, position, result)
                done += 1
                if done == 2:
                    print("MIDWAY", flush=True)
                    time.sleep(60)  # killed here, inside the run's transaction

            HistoryStore._insert_tenant = stall_half_way  # type: ignore[method-assign, assignment]
        else:
            sys.stdin.readline()
        history.record(
            run(
                T0,
                tenant(CONTOSO, Status.COMPLIANT),
                tenant(FABRIKAM, Status.NON_COMPLIANT),
                tenant(NORTHWIND, Status.COMPLIANT),
                run_id=run_id,
            )
        )
    print("DONE", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
