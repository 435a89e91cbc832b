"""Where the HTML report's templates are, and the jinja2 environment that renders them.

The source of truth is ``reports/templates/`` at the top of the repository. The wheel ships the same
files as ``auditor/report_templates/`` (a setuptools ``package-dir`` mapping), so an installed
``auditor`` finds them without a checkout. The copy next to the running code wins: a source checkout
renders from ``reports/templates/`` even when an older wheel is installed elsewhere.

A user's own directory (``--templates DIR``) is searched first, file by file, so it may override only
``audit.css`` for branding, or provide an ``audit.html.j2`` that ``{% extends "builtin/audit.html.j2" %}``
and replaces single blocks. Autoescaping is always on and an undefined variable is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import jinja2
from markupsafe import Markup

from auditor.reporting import ReportError
from auditor.reporting.text import report_text

__all__ = [
    "BUILTIN_PREFIX",
    "MAIN_TEMPLATE",
    "TemplateDirectoryError",
    "builtin_templates_dir",
    "check_templates_dir",
    "template_environment",
]

MAIN_TEMPLATE: Final = "audit.html.j2"
# Templates of a user directory reach the built-in ones under this prefix ("builtin/audit.html.j2").
BUILTIN_PREFIX: Final = "builtin"

_PACKAGE_ROOT: Final = Path(__file__).resolve().parent.parent  # .../auditor
_CANDIDATES: Final = (
    _PACKAGE_ROOT.parent / "reports" / "templates",  # source checkout (and editable installs)
    _PACKAGE_ROOT / "report_templates",  # installed from a wheel
)


class TemplateDirectoryError(ReportError):
    """The report templates cannot be found or used (a wrong ``--templates DIR``, a broken template or
    install). A usage problem: exit code 2."""


def builtin_templates_dir() -> Path:
    """The directory holding the built-in templates (checkout first, then the installed package copy)."""
    for candidate in _CANDIDATES:
        if (candidate / MAIN_TEMPLATE).is_file():
            return candidate
    searched = ", ".join(str(c) for c in _CANDIDATES)
    raise TemplateDirectoryError(
        f"the report templates are missing (looked in {searched})",
        hint="Reinstall uss-auditor; a wheel ships them as auditor/report_templates.",
    )


def check_templates_dir(user_dir: Path) -> Path:
    """``--templates DIR`` as a Path; raises :class:`TemplateDirectoryError` when it is not a directory."""
    user_dir = Path(user_dir)
    if not user_dir.is_dir():
        raise TemplateDirectoryError(
            f"--templates {user_dir}: not a directory",
            hint="Give a directory holding audit.html.j2 and/or audit.css / audit.js to override.",
        )
    return user_dir


def _finalize(value: object) -> object:
    # Every {{ value }} that is plain text (tenant data included) gets its control and bidi characters
    # marked and is capped (auditor.reporting.text); markup the page builds itself (Markup) is left alone.
    if isinstance(value, str) and not isinstance(value, Markup):
        return report_text(value)
    return value


def template_environment(user_dir: Path | None = None) -> jinja2.Environment:
    """A jinja2 environment over ``user_dir`` (if given, searched first) and the built-in templates.

    Autoescaping is on for every template and undefined variables raise, so a typo in a template fails
    the render instead of printing an empty figure.
    """
    builtin = jinja2.FileSystemLoader(builtin_templates_dir())
    loaders: list[jinja2.BaseLoader] = []
    if user_dir is not None:
        loaders.append(jinja2.FileSystemLoader(check_templates_dir(user_dir)))
    loaders.append(builtin)
    loaders.append(jinja2.PrefixLoader({BUILTIN_PREFIX: builtin}))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
