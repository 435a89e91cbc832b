"""tools/mutation.py: the equivalents table it reads, and which survivors it still counts as open."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutation_tool", ROOT / "tools" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def test_every_equivalent_row_is_read_once_with_its_reason() -> None:
    text = tool.EQUIVALENTS.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"\|\s*`[^`]+__mutmut_\d+`", line)]
    names = [re.search(r"`([^`]+)`", row).group(1) for row in rows]  # type: ignore[union-attr]
    assert len(names) == len(set(names)), "a mutant is listed twice"
    found = tool.equivalents()
    assert sorted(found) == sorted(names), "a row the tool cannot parse would silently not count"
    assert all(len(reason) >= 8 for reason in found.values()), "every equivalent needs its reason"


def test_every_equivalent_names_a_mutated_module() -> None:
    modules = {m.path.removesuffix(".py").replace("/", ".") for m in tool.MODULES.values()}
    for name in tool.equivalents():
        module = re.sub(r"\.x[^.]*__mutmut_\d+$", "", name)
        assert module in modules, f"{name} is not in a module `make mutation` mutates"


@pytest.mark.parametrize(
    ("survived", "no_tests", "listed", "unlisted", "logic"),
    [
        (["a_1", "a_2"], [], [], ["a_1", "a_2"], 80.0),  # 8 killed of 10
        (["a_1", "a_2"], [], ["a_2"], ["a_1"], 8 / 9 * 100),  # the listed one leaves the rate
        (["a_1"], ["a_3"], ["a_1", "a_3"], [], 100.0),  # a mutant no test calls can be listed too
        ([], [], [], [], 100.0),
    ],
)
def test_a_survivor_stays_open_until_killed_or_listed(
    survived: list[str], no_tests: list[str], listed: list[str], unlisted: list[str], logic: float
) -> None:
    killed = 10 - len(survived) - len(no_tests)
    figures = tool.Figures("m", killed=killed, survived=survived, no_tests=no_tests, equivalent=listed)
    assert figures.unlisted == unlisted
    assert figures.rate(adjusted=True) == pytest.approx(logic)
    assert figures.rate(adjusted=False) == pytest.approx(killed * 10.0)
