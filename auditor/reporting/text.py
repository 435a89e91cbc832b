"""Tenant data as text in front of a person: control characters made visible, free text capped.

Display names, mail addresses, finding and error messages come from the tenants, and anyone who can
rename an app or a mailbox in a tenant writes them. Two kinds of character are dangerous there:

* terminal controls (ESC, NUL, BEL, other C0/C1 characters): an ``ESC [2J`` in a display name clears
  the operator's screen, an OSC sequence retitles the window or writes to the clipboard;
* invisible formatting (bidi overrides and isolates such as U+202E, zero-width characters, line and
  paragraph separators): ``\u202etxt.exe`` reads as ``exe.txt`` and a look-alike name hides behind it.

:func:`mark_controls` replaces each one with a visible ``[U+XXXX]`` marker, in the reports (HTML, Excel)
and on the terminal, so the admin sees that the name holds one and which. Tab and newline stay in the
reports (multi-line messages); :func:`terminal_text` marks them too, since a terminal field is one line.

Free text is capped at :data:`MAX_TEXT_LENGTH` characters per field in the reports (README "Reports"), with
a visible note of how much was cut, instead of Excel's silent cut at 32,767.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_TEXT_LENGTH", "mark_controls", "report_text", "terminal_text"]

# Characters per free-text field in the HTML and Excel reports (documented in the README).
MAX_TEXT_LENGTH: Final = 8_000

_INVISIBLE: Final = (
    "\u00ad"  # soft hyphen
    "\u061c"  # Arabic letter mark
    "\u180e"  # Mongolian vowel separator
    "\u200b-\u200f"  # zero-width space/joiners, LRM, RLM
    "\u2028-\u202e"  # line/paragraph separators, LRE, RLE, PDF, LRO, RLO
    "\u2060-\u2064"  # word joiner, invisible operators
    "\u2066-\u2069"  # LRI, RLI, FSI, PDI
    "\ufeff"  # zero-width no-break space (BOM)
    "\ufff9-\ufffb"  # interlinear annotation controls
)
# In reports tab and newline stay; on a terminal they are marked too.
_REPORT_CONTROLS: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]")
_TERMINAL_CONTROLS: Final = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")


def _marker(match: re.Match[str]) -> str:
    return f"[U+{ord(match.group()):04X}]"


def mark_controls(text: str) -> str:
    """``text`` with every control or invisible formatting character (tab and newline excepted)
    replaced by a visible ``[U+XXXX]`` marker."""
    return _REPORT_CONTROLS.sub(_marker, text)


def report_text(text: str, limit: int = MAX_TEXT_LENGTH) -> str:
    """A free-text field as the reports show it: controls marked, at most ``limit`` characters of it
    kept, followed by a note of how many were cut."""
    marked = mark_controls(text)
    if len(marked) <= limit:
        return marked
    return f"{marked[:limit]} [… {len(marked) - limit:,} more characters cut]"


def terminal_text(text: str) -> str:
    """``text`` safe to print in one terminal field: every control character (tab, newline, carriage
    return included) and invisible formatting character replaced by a visible ``[U+XXXX]`` marker."""
    return _TERMINAL_CONTROLS.sub(_marker, text)
