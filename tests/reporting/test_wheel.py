"""The report templates ship in the wheel and are found by an installed ``auditor`` run elsewhere.

Builds the wheel from this checkout, installs it (without dependencies) into a fresh virtualenv whose
dependencies come from the running environment, and renders a saved audit.json from an unrelated
directory. Needs the package registry for the build backend (pip's isolated build), like ``make``.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "reports" / "templates"
SAVED_RUN = Path(__file__).parent / "data" / "audit.json"

pytestmark = pytest.mark.slow


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command the test built itself (interpreter, pip, the built wheel): no outside input."""
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300, **kwargs)  # noqa: S603


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--quiet", "--wheel-dir", str(out)])
    (built,) = out.glob("uss_auditor-*.whl")
    return built


def test_the_wheel_ships_the_templates(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        sources = sorted(p for p in TEMPLATES.iterdir() if p.suffix in (".j2", ".css", ".js"))
        assert sources
        for source in sources:
            shipped = f"auditor/report_templates/{source.name}"
            assert shipped in names, f"{shipped} is not in the wheel: see pyproject's package-dir mapping"
            assert archive.read(shipped) == source.read_bytes()


def test_the_wheel_ships_every_package(wheel: Path) -> None:
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "auditor").rglob("__init__.py")}
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert missing == [], f"packages missing from the wheel (pyproject [tool.setuptools] packages): {missing}"


def test_an_installed_wheel_renders_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)])
    # Dependencies (jinja2, pandas, openpyxl, ...) from the environment running the tests.
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    )
    (site / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import sys, auditor\n"
        "from pathlib import Path\n"
        "from auditor.reporting.templates import builtin_templates_dir\n"
        "from auditor.reporting.render import RenderOptions, render_saved_run\n"
        "print(auditor.__file__)\n"
        "print(builtin_templates_dir())\n"
        "for path in render_saved_run(RenderOptions(Path(sys.argv[1]), Path('out'))):\n"
        "    print(path)\n"
    )
    result = _run([str(python), "-I", "-c", script, str(SAVED_RUN)], cwd=elsewhere)
    package, templates, html, xlsx = result.stdout.split()
    assert Path(package).is_relative_to(venv)
    assert Path(templates) == site / "auditor" / "report_templates"
    assert (elsewhere / html).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert zipfile.is_zipfile(elsewhere / xlsx)
