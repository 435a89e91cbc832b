"""Mutation testing of the core modules with mutmut 3 (`make mutation`); prints kill rates and survivors.

Each module runs in its own work directory (build/mutation/<module>/, a copy of the checkout) with its
own test selection, because mutmut takes one test selection per run: the modules that the whole
engine passes through (reader.send, say) would otherwise run every integration test for each mutant.
Inside that selection mutmut's own per-function coverage picks the tests that call the mutated function.

Each run starts afresh (mutmut would keep a mutant's old result although the tests changed); --resume
keeps the earlier results, e.g. to finish an interrupted run.
Mutants that are true equivalents (no behaviour can tell them apart) are listed, with a reason, in
tests/mutation-equivalents.md; they are reported apart and excluded from the adjusted kill rate.

    python tools/mutation.py                      # every module, one mutant at a time
    python tools/mutation.py evaluate collect     # some modules
    python tools/mutation.py --report-only        # print the figures of the last runs
    python tools/mutation.py --diff               # also print each survivor's diff
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
EQUIVALENTS = ROOT / "tests" / "mutation-equivalents.md"
# What a work directory needs besides the module: the package, the tests and their data files.
COPIED = ("auditor", "tests", "config", "reports/templates", "pyproject.toml")
PYTEST_ARGS = ["-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", "-p", "mutation_order"]
# A pytest plugin written into each work directory: unit tests first, so that a mutant they kill is
# caught in a fraction of a second instead of after the end-to-end tests mutmut happened to list first.
ORDER_PLUGIN = """
def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/unit/") else 1)
"""

# mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code).
KILLED = {1, 3, 37}
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


@dataclass(frozen=True)
class Module:
    path: str  # the file mutated
    tests: tuple[str, ...]  # the test selection (pytest node ids or files)


FAILURE_PATHS = "tests/integration/test_failure_paths.py"
ENGINE = "tests/integration/test_audit_engine.py"
# A few end-to-end audits of the demo fleet: every verdict and every error once.
ENGINE_CORE = (
    f"{ENGINE}::test_every_demo_tenant_gets_the_verdict_its_situation_calls_for",
    f"{ENGINE}::test_errors_carry_a_code_and_an_admin_ready_hint",
)
MODULES: dict[str, Module] = {
    "evaluate": Module(
        "auditor/evaluate.py",
        (
            "tests/unit/test_evaluate.py",
            "tests/unit/test_evaluate_edges.py",
            "tests/unit/test_fidelity_logic.py",
            "tests/unit/test_remediation.py",
            "tests/unit/test_runner.py",
            "tests/unit/test_shard.py",
        ),
    ),
    "remediation": Module(
        "auditor/remediation.py",
        (
            "tests/unit/test_remediation.py",
            "tests/unit/test_remediation_edges.py",
            "tests/unit/test_remediation_replication.py",
            FAILURE_PATHS,
            "tests/integration/test_remediation.py",
            "tests/integration/test_remediation_replication.py",
        ),
    ),
    "collect": Module(
        "auditor/collect.py",
        (
            "tests/unit/test_collect.py",
            "tests/unit/test_collector.py",
            FAILURE_PATHS,
            *ENGINE_CORE,
            f"{ENGINE}::test_request_count_follows_the_readme_formula",
            f"{ENGINE}::test_name_only_identification",
            f"{ENGINE}::test_more_than_999_users_are_paged_completely",
            # TenantAuditor hands the stored censuses to the collector: a second night reads only changes.
            "tests/census/test_incremental_nights.py::"
            "test_a_second_night_without_change_sends_at_most_a_tenth_of_the_requests",
        ),
    ),
    "reader": Module(
        "auditor/graph/reader.py",
        (
            "tests/unit/test_reader.py",
            "tests/unit/test_retry_policy.py",
            "tests/census/test_users_delta_route.py",
            "tests/integration/test_lean_batch.py",
        ),
    ),
    "client": Module(
        "auditor/graph/client.py",
        (
            "tests/unit/test_client.py",
            "tests/unit/test_endpoints.py",
            "tests/unit/test_writer.py",
            "tests/integration/test_lean_wire.py",
            "tests/integration/test_sign_in_trust.py",
            "tests/simulator/test_identity.py",
            "tests/integration/test_lean_batch.py",
            "tests/integration/test_tenant_and_endpoints.py",
        ),
    ),
    "writer": Module(
        "auditor/graph/writer.py",
        (
            "tests/unit/test_writer.py",
            "tests/unit/test_remediation.py",
            FAILURE_PATHS,
            "tests/integration/test_remediation.py",
        ),
    ),
    "rows": Module(
        "auditor/reporting/rows.py",
        (
            "tests/reporting/test_rows.py",
            "tests/reporting/test_history_rows.py",
            "tests/reporting/test_history_tables.py",
        ),
    ),
    "errors": Module(
        "auditor/errors.py",
        (
            "tests/unit/test_errors.py",
            "tests/unit/test_logs.py",
            "tests/unit/test_evaluate.py",
            "tests/unit/test_collect.py",
            "tests/unit/test_reader.py",
            "tests/unit/test_cli.py",
        ),
    ),
    "store": Module(
        "auditor/history/store.py", ("tests/history/test_store.py", "tests/history/test_recorder.py")
    ),
}


@dataclass
class Figures:
    name: str
    killed: int = 0
    timeout: int = 0
    survived: list[str] | None = None
    no_tests: list[str] | None = None
    other: int = 0
    pending: int = 0  # not tested yet (an interrupted or running run)
    equivalent: list[str] | None = None
    text_only: list[str] | None = None  # unlisted survivors that only change the wording of a message

    @property
    def total(self) -> int:
        return self.killed + self.timeout + len(self.survived or []) + len(self.no_tests or []) + self.other

    @property
    def unlisted(self) -> list[str]:
        """Survivors that are neither killed nor listed as equivalent: each still needs a test or a reason."""
        return [m for m in (self.survived or []) + (self.no_tests or []) if m not in (self.equivalent or [])]

    def rate(self, *, adjusted: bool) -> float:
        """Killed share of all mutants; `adjusted` leaves out the listed equivalents."""
        left_out = len(set(self.equivalent or [])) if adjusted else 0
        total = self.total - left_out
        return 100.0 * (self.killed + self.timeout) / total if total else 0.0


def equivalents() -> dict[str, str]:
    """Mutant name -> reason, from the table in tests/mutation-equivalents.md."""
    found: dict[str, str] = {}
    if EQUIVALENTS.is_file():
        for line in EQUIVALENTS.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\|\s*`([\w.]+__mutmut_\d+)`\s*\|\s*(.+?)\s*\|\s*$", line)
            if match:
                found[match.group(1)] = match.group(2)
    return found


def prepare(name: str, module: Module, *, resume: bool) -> Path:
    """A fresh copy of the checkout for one module, with its mutmut settings.

    mutmut keeps a mutant's result even when the tests change, so results are thrown away unless `resume`
    (then only mutants of changed functions, and ones not tried yet, are tested)."""
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    if not resume:
        shutil.rmtree(work / "mutants", ignore_errors=True)
    for item in COPIED:
        source, target = ROOT / item, work / item
        if source.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (work / "mutation_order.py").write_text(ORDER_PLUGIN, encoding="utf-8")
    tests = [t for t in module.tests if (work / t.split("::")[0]).exists()]
    lines = [
        "[mutmut]",
        "source_paths = auditor",
        f"only_mutate = {module.path}",
        "also_copy =",
        "    config",
        "    reports",
        "    mutation_order.py",
        "pytest_add_cli_args =",
        *(f"    {arg}" for arg in PYTEST_ARGS),
        "pytest_add_cli_args_test_selection =",
        *(f"    {t}" for t in tests),
        # Tests that talk to the simulator vary in speed on a shared machine; a mutant that hangs is still
        # caught (as a timeout) without flagging slow-but-correct runs.
        "timeout_multiplier = 5.0",
        "timeout_constant = 30.0",
        "use_git_change_detection = false",
        "",
    ]
    (work / "setup.cfg").write_text("\n".join(lines), encoding="utf-8")
    return work


def run(name: str, module: Module, jobs: int, mutmut: str, *, resume: bool, survivors: bool = False) -> None:
    again: list[str] = []
    if survivors:  # re-test only the mutants that survived the last run, with the tests as they are now
        last = figures(name, module, {})
        again = (last.survived or []) + (last.no_tests or []) if last else []
        if not again:
            print(f"== {name}: no survivors to re-test", flush=True)
            return
    work = prepare(name, module, resume=resume or survivors)
    log = work / "mutmut.log"
    started = time.monotonic()
    print(f"== {name}: mutating {module.path} (tests: {', '.join(module.tests)}); log: {log}", flush=True)
    with log.open("w", encoding="utf-8") as out:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        code = subprocess.call(  # noqa: S603 (our own venv's mutmut, fixed arguments)
            [mutmut, "run", "--max-children", str(jobs), *again],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    print(f"   done in {time.monotonic() - started:.0f} s (mutmut exit {code})", flush=True)
    if code != 0:
        print(f"   mutmut failed; the end of its log:\n{_tail(log)}", flush=True)


def figures(name: str, module: Module, known_equivalents: dict[str, str]) -> Figures | None:
    meta = WORK / name / "mutants" / (module.path + ".meta")
    if not meta.is_file():
        return None
    codes: dict[str, int | None] = _read_meta(meta).get("exit_code_by_key", {})
    result = Figures(name, survived=[], no_tests=[], equivalent=[])
    for mutant, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
        if code in KILLED:
            result.killed += 1
        elif code in TIMEOUT:
            result.timeout += 1
        elif code is None:
            result.pending += 1
        elif code in SURVIVED or code in NO_TESTS:
            if mutant in known_equivalents:
                result.equivalent.append(mutant)  # type: ignore[union-attr]
            (result.survived if code in SURVIVED else result.no_tests).append(mutant)  # type: ignore[union-attr]
        else:
            result.other += 1
    return result


# Run inside a work directory: prints {mutant name: diff} as JSON for the names given on stdin.
_DIFFS = """
import json, sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant
found = {}
for name in json.load(sys.stdin):
    try:
        found[name] = get_diff_for_mutant(name, path=find_mutant(name).path)
    except Exception as exc:  # a mutant mutmut cannot show any more: report it as it is
        found[name] = f"(no diff: {exc})"
print(json.dumps(found))
"""


def diffs(name: str, mutants: list[str]) -> dict[str, str]:
    """Each mutant's diff against the original source (mutmut's own rendering)."""
    if not mutants:
        return {}
    done = subprocess.run(  # noqa: S603 (this interpreter, our own snippet)
        [sys.executable, "-c", _DIFFS],
        cwd=WORK / name,
        input=json.dumps(mutants),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        print(f"   (could not read the diffs of {name}'s survivors: {done.stderr.strip()[-300:]})")
        return {}
    found: dict[str, str] = json.loads(lines[-1])
    return found


def wording_only(diff: str) -> bool:
    """True when the mutant only changes the wording of a string (mutmut's "XX" padding or letter case),
    i.e. a message's text, not what the code decides."""
    removed = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if not removed or len(removed) != len(added):
        return False
    return all(_reworded(old, new) for old, new in zip(removed, added, strict=True))


def _reworded(old: str, new: str) -> bool:
    """`new` differs from `old` only inside a string literal that is prose (it has a space): a message,
    not a key, a code or a format."""
    if new == old or new.replace("XX", "").lower() != old.lower():
        return False
    start = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), len(old))
    quotes = [i for i, char in enumerate(old) if char in "\"'"]
    before = [i for i in quotes if i < start]
    after = [i for i in quotes if i >= start]
    return bool(before and after) and " " in old[before[-1] + 1 : after[0]]


def report(names: list[str], *, diff: bool) -> int:
    known = equivalents()
    rows = [(n, figures(n, MODULES[n], known)) for n in names]
    texts: dict[str, str] = {}
    for name, fig in rows:
        if fig is not None:
            found = diffs(name, [m for m in (fig.survived or []) + (fig.no_tests or []) if m not in known])
            texts.update(found)
            fig.text_only = [m for m, d in found.items() if wording_only(d)]
    print()
    print(
        f"{'module':<12} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} {'no tests':>8} "
        f"{'equiv.':>6} {'unlisted':>8} {'kill %':>7} {'logic %':>7}"
    )
    for name, fig in rows:
        if fig is None:
            print(f"{name:<12} (not run yet)")
            continue
        print(
            f"{name:<12} {fig.total:>7} {fig.killed:>7} {fig.timeout:>7} {len(fig.survived or []):>8} "
            f"{len(fig.no_tests or []):>8} {len(fig.equivalent or []):>6} {len(fig.unlisted):>8} "
            f"{fig.rate(adjusted=False):>6.1f}% {fig.rate(adjusted=True):>6.1f}%"
            + (f"  ({fig.pending} not tested yet)" if fig.pending else "")
        )
    print(
        "kill % counts every mutant; logic % leaves out the equivalents listed with a reason in\n"
        "tests/mutation-equivalents.md. `unlisted` survivors are neither killed nor listed: each needs a test\n"
        "of behaviour or, if no input can tell it apart, a row in that file."
    )
    for name, fig in rows:
        if fig is None:
            continue
        prefix = MODULES[name].path.removesuffix(".py").replace("/", ".") + ".x"
        alive = set((fig.survived or []) + (fig.no_tests or []))
        stale = [m for m in known if m.startswith(prefix) and m not in alive and not fig.pending]
        if stale:
            print(
                f"\nRows of tests/mutation-equivalents.md for {MODULES[name].path} that name no surviving "
                f"mutant (killed now, or the function changed): {len(stale)}"
            )
            for mutant in stale:
                print(f"  {mutant}")
        survivors = fig.unlisted
        if survivors:
            print(
                f"\nUnlisted survivors in {MODULES[name].path} ({len(survivors)}; `mutmut show NAME` in "
                f"build/mutation/{name}/ shows one):"
            )
            for mutant in survivors:
                tag = " (no test calls it)" if mutant in (fig.no_tests or []) else ""
                tag += " (wording only)" if mutant in (fig.text_only or []) else ""
                print(f"  {mutant}{tag}")
                if diff:
                    print("    " + "\n    ".join(texts.get(mutant, "").strip().splitlines()[3:]))
    return 0


def _read_meta(meta: Path) -> dict[str, Any]:
    """mutmut's results file; a running mutmut rewrites it, so a half-written read is tried again."""
    for _ in range(20):
        try:
            data: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
            return data
        except json.JSONDecodeError:
            time.sleep(0.1)
    return {}


def _natural(name: str) -> tuple[str, int]:
    base, _, number = name.rpartition("_")
    return base, int(number) if number.isdigit() else 0


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="*", help=f"modules to run (default: all of {', '.join(MODULES)})")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--report-only", action="store_true", help="print the figures of earlier runs")
    parser.add_argument(
        "--resume", action="store_true", help="keep earlier results (stale if the tests changed since)"
    )
    parser.add_argument("--diff", action="store_true", help="print each survivor's diff")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="re-test only the last run's survivors with the current tests",
    )
    args = parser.parse_args(argv)
    names = list(args.modules) or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    if not args.report_only:
        for name in names:
            run(name, MODULES[name], args.jobs, mutmut, resume=args.resume, survivors=args.survivors)
    return report(names, diff=args.diff)


if __name__ == "__main__":
    sys.exit(main())
