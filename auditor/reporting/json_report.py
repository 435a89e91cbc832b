"""``audit.json``: the machine-readable report (DESIGN §3.3), and reading it back for ``auditor report``.

The document is :meth:`RunResult.to_dict` as is: UTF-8, indented, non-ASCII kept readable. It is
streamed into a temporary file beside the target, flushed to disk and renamed over the target
(:mod:`auditor.reporting.atomic`), so a crash half-way (a full disk, a value that will not serialise)
leaves the previous ``audit.json`` untouched and no temporary file behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from auditor.model import SCHEMA_VERSION, RunResult
from auditor.reporting import RunFileError
from auditor.reporting.atomic import atomic_path

__all__ = ["JSON_FILENAME", "read_run", "write_json"]

JSON_FILENAME: Final = "audit.json"

_READ_HINT: Final = "Pass the audit.json that `auditor audit --out DIR` wrote (DIR/audit.json)."


def write_json(run: RunResult, path: Path) -> Path:
    """Write ``run`` as audit.json to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as handle:
        json.dump(run.to_dict(), handle, indent=2, ensure_ascii=False, allow_nan=False)
        handle.write("\n")
    return path


def read_run(path: Path) -> RunResult:
    """Read a saved audit.json back into a :class:`RunResult`.

    Raises :class:`~auditor.reporting.RunFileError` (one line: the file, what is wrong, what to do) when
    the file is missing or unreadable, is not JSON, has an unsupported ``schema_version`` or lacks
    required fields.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunFileError(f"{path}: file not found", hint=_READ_HINT) from None
    except IsADirectoryError:
        raise RunFileError(
            f"{path}: is a directory", hint=f"Pass the file itself, e.g. {path / JSON_FILENAME}."
        ) from None
    except UnicodeDecodeError as exc:
        raise RunFileError(
            f"{path}: not UTF-8 text (bad byte at offset {exc.start})", hint=_READ_HINT
        ) from None
    except OSError as exc:
        raise RunFileError(f"{path}: cannot read the file ({exc.strerror or exc})", hint=_READ_HINT) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFileError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})",
            hint="The file is damaged or not an audit.json; re-run the audit to produce a new one.",
        ) from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise RunFileError(f"{path}: not an audit.json document (no schema_version)", hint=_READ_HINT)
    version = data["schema_version"]
    if version != SCHEMA_VERSION:
        raise RunFileError(
            f"{path}: audit.json schema_version {version!r} is not supported "
            f"(this auditor reads schema_version {SCHEMA_VERSION})",
            hint="Use the auditor version that wrote the file (run.tool_version), or re-run the audit.",
        )
    try:
        return RunResult.from_dict(data)
    except KeyError as exc:
        raise RunFileError(f"{path}: not a complete audit.json (missing {exc})", hint=_READ_HINT) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise RunFileError(f"{path}: not a valid audit.json ({exc})", hint=_READ_HINT) from None
