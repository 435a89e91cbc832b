"""``audit.json``: the machine-readable report (DESIGN §3.3), and reading it back for ``auditor report``.

The document is :meth:`RunResult.to_dict` as is: UTF-8, indented, non-ASCII kept readable. It is
streamed into a temporary file beside the target, flushed to disk and renamed over the target
(:mod:`auditor.reporting.atomic`), so a crash half-way (a full disk, a value that will not serialise)
leaves the previous ``audit.json`` untouched and no temporary file behind.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TextIO

from auditor.config import MAX_PRICE
from auditor.model import SCHEMA_VERSION, RunResult
from auditor.reporting import RunFileError
from auditor.reporting.atomic import atomic_path

__all__ = ["JSON_FILENAME", "STREAM_ABOVE", "json_chunks", "read_run", "write_json"]

JSON_FILENAME: Final = "audit.json"

_READ_HINT: Final = "Pass the audit.json that `auditor audit --out DIR` wrote (DIR/audit.json)."


def write_json(run: RunResult, path: Path) -> Path:
    """Write ``run`` as audit.json to ``path`` atomically; returns ``path``.

    Written tenant by tenant (:func:`json_chunks`): the whole document is never built in memory, and a
    tenant's spooled mailbox list (:mod:`auditor.reporting.spool`) is read back only while it is written.
    """
    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for chunk in json_chunks(run):
            handle.write(chunk)
    return path


def json_chunks(run: RunResult) -> Iterator[str]:
    """audit.json as text, in pieces: exactly ``json.dumps(run.to_dict(), indent=2, ensure_ascii=False)``
    plus a final newline, one tenant at a time."""
    head = RunResult.to_dict(replace(run, tenants=()))
    head["summary"] = run.summary().to_dict()
    if not run.tenants:
        yield _dumps(head) + "\n"
        return
    del head["tenants"]
    text = _dumps(head)
    yield text[: -len("\n}")] + ',\n  "tenants": [\n'
    for index, tenant in enumerate(run.tenants):
        body = _dumps(tenant.to_dict()).replace("\n", "\n    ")
        yield ("    " if index == 0 else ",\n    ") + body
    yield "\n  ]\n}\n"


def _dumps(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)


def read_run(path: Path, *, stream_above: int | None = None) -> RunResult:
    """Read a saved audit.json back into a :class:`RunResult`.

    A file larger than ``stream_above`` bytes (default :data:`STREAM_ABOVE`) is read tenant by tenant:
    the document is never held whole, and each tenant's shared-mailbox list goes to a spool file
    (:mod:`auditor.reporting.spool`), so re-rendering a 1,000-tenant run takes no more memory than the
    run itself did.

    Raises :class:`~auditor.reporting.RunFileError` (one line: the file, what is wrong, what to do) when
    the file is missing or unreadable, is not JSON, has an unsupported ``schema_version`` or lacks
    required fields.
    """
    path = Path(path)
    limit = STREAM_ABOVE if stream_above is None else stream_above
    try:
        large = path.stat().st_size > limit
    except OSError:
        large = False  # reported by the reading below, with its reason
    if large:
        try:
            with path.open("r", encoding="utf-8") as handle:
                return _read_streaming(path, handle)
        except UnicodeDecodeError:
            raise RunFileError(f"{path}: not UTF-8 text", hint=_READ_HINT) from None
        except OSError as exc:
            raise RunFileError(
                f"{path}: cannot read the file ({exc.strerror or exc})", hint=_READ_HINT
            ) from None
    return _read_whole(path)


def _read_whole(path: Path) -> RunResult:
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
        # Numbers are parsed by us: NaN/Infinity and integers of thousands of digits (which make int()
        # raise, or every sum after them inf) become markers that the check below names.
        data = json.loads(text, parse_int=_parse_int, parse_constant=_NotANumber)
    except json.JSONDecodeError as exc:
        raise RunFileError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})",
            hint="The file is damaged or not an audit.json; re-run the audit to produce a new one.",
        ) from None
    return _checked(path, data)


def _checked(path: Path, data: object) -> RunResult:
    if not isinstance(data, dict) or "schema_version" not in data:
        raise RunFileError(f"{path}: not an audit.json document (no schema_version)", hint=_READ_HINT)
    _check_version(path, data["schema_version"])
    problem = _number_problem(data, "") or _shape_problem(data)
    if problem:
        raise RunFileError(
            f"{path}: {problem}",
            hint="The file was edited or damaged; use the audit.json the audit wrote, or re-run the audit.",
        )
    try:
        return RunResult.from_dict(data)
    except KeyError as exc:
        raise RunFileError(f"{path}: not a complete audit.json (missing {exc})", hint=_READ_HINT) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise RunFileError(f"{path}: not a valid audit.json ({exc})", hint=_READ_HINT) from None


def _check_version(path: Path, version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise RunFileError(
            f"{path}: schema_version must be a whole number, not {_shown(version)} (this auditor reads "
            f"schema_version {SCHEMA_VERSION})",
            hint=_READ_HINT,
        )
    if version != SCHEMA_VERSION:
        raise RunFileError(
            f"{path}: audit.json schema_version {version!r} is not supported "
            f"(this auditor reads schema_version {SCHEMA_VERSION})",
            hint="Use the auditor version that wrote the file (run.tool_version), or re-run the audit.",
        )


# --- reading a large file tenant by tenant -----------------------------------------------------------------

# Bytes: smaller files are parsed whole (a little faster, same result). Low enough that `auditor merge`
# streams the parts of a large run too, whatever the number of parts.
STREAM_ABOVE: Final = 1024 * 1024
_CHUNK: Final = 1 << 20
_DAMAGED_HINT: Final = "The file is damaged or not an audit.json; re-run the audit to produce a new one."


class _Incomplete(Exception):
    """The buffer ends before the value does: read more."""


class _Stream:
    """A text file read in chunks, decoded value by value with ``raw_decode`` (positions kept for errors)."""

    def __init__(self, path: Path, handle: TextIO) -> None:
        self.path = path
        self.handle = handle
        self.buffer = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # line of buffer[0]
        self.line_start = 0  # offset in buffer of the start of that line (may be negative)
        self.decoder = json.JSONDecoder(parse_int=_parse_int, parse_constant=_NotANumber)

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.handle.read(_CHUNK)
        if not chunk:
            self.eof = True
            return False
        # Drop what has been consumed, counting its lines for error positions.
        dropped = self.buffer[: self.pos]
        newlines = dropped.count("\n")
        if newlines:
            self.line += newlines
            self.line_start = dropped.rindex("\n") + 1
        self.line_start -= self.pos
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        return True

    def where(self, pos: int) -> str:
        """``line:column`` (1-based) of ``buffer[pos]`` in the file."""
        before = self.buffer[:pos]
        newlines = before.count("\n")
        if newlines:
            return f"{self.line + newlines}:{pos - before.rindex(chr(10))}"
        return f"{self.line}:{pos - self.line_start + 1}"

    def fail(self, message: str, pos: int | None = None) -> RunFileError:
        where = self.where(self.pos if pos is None else pos)
        return RunFileError(f"{self.path}:{where}: not valid JSON ({message})", hint=_DAMAGED_HINT)

    def peek(self) -> str:
        """The next non-blank character ("" at the end of the file), not consumed."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._more():
                return ""

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise self.fail(f"Expecting {what}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self._more():
                    continue  # the value may just go on in the next chunk
                raise self.fail(exc.msg, exc.pos) from None
            # A number or literal cut at the chunk's end decodes short: make sure it really ended.
            if end == len(self.buffer) and not self.eof and self._more():
                continue
            self.pos = end
            return value


def _read_streaming(path: Path, handle: TextIO) -> RunResult:
    from auditor.model import TenantResult
    from auditor.reporting.spool import TenantSpool

    stream = _Stream(path, handle)
    head: dict[str, Any] = {}
    tenants: list[TenantResult] = []
    seen_tenants = False
    spool = TenantSpool.create(Path(tempfile.gettempdir()))
    if stream.peek() != "{":
        raise RunFileError(f"{path}: not an audit.json document (no schema_version)", hint=_READ_HINT)
    stream.pos += 1
    first = True
    while True:
        if stream.peek() == "}":
            stream.pos += 1
            break
        if not first:
            stream.expect(",", "',' delimiter")
        first = False
        if stream.peek() != '"':
            raise stream.fail("Expecting property name enclosed in double quotes")
        key = stream.value()
        stream.expect(":", "':' delimiter")
        if key != "tenants" or stream.peek() != "[":
            head[key] = stream.value()
            if key == "schema_version":
                _check_version(path, head[key])
            continue
        seen_tenants = True
        stream.pos += 1
        index = 0
        while stream.peek() != "]":
            if index:
                stream.expect(",", "',' delimiter")
            tenant = stream.value()
            where = f"tenants[{index}]"
            problem = _number_problem(tenant, where) or _tenant_problem(index, tenant)
            if problem:
                raise RunFileError(
                    f"{path}: {problem}",
                    hint="The file was edited or damaged; use the audit.json the audit wrote, or re-run the audit.",
                )
            try:
                tenants.append(spool.add(TenantResult.from_dict(tenant)))
            except KeyError as exc:
                raise RunFileError(
                    f"{path}: not a complete audit.json (missing {exc} in {where})", hint=_READ_HINT
                ) from None
            except (TypeError, ValueError, AttributeError) as exc:
                raise RunFileError(
                    f"{path}: not a valid audit.json ({where}: {exc})", hint=_READ_HINT
                ) from None
            index += 1
        stream.pos += 1
    if stream.peek() != "":
        raise stream.fail("Extra data")
    if seen_tenants:
        head["tenants"] = []  # checked above, one by one
    run = _checked(path, head)
    return replace(run, tenants=tuple(tenants))


# --- validation of what is read back ------------------------------------------------------------------------

# Every number in audit.json is a count, a price, a cost or a duration: never negative, and far below this
# (a trillion mailboxes, or a monthly cost of a trillion, is not a reading but an edit).
MAX_NUMBER: Final = 10**15
_MAX_DIGITS: Final = 16


class _NotANumber:
    """What the parser makes of NaN, Infinity, -Infinity (not JSON, but Python's json accepts them)."""

    def __init__(self, text: str) -> None:
        self.text = text


class _TooLong:
    """An integer literal with more digits than any count or cost can have (never converted)."""

    def __init__(self, text: str) -> None:
        self.digits = len(text.lstrip("-"))


def _parse_int(text: str) -> int | _TooLong:
    return int(text) if len(text.lstrip("-")) <= _MAX_DIGITS else _TooLong(text)


def _shown(value: object) -> str:
    if isinstance(value, str):
        return repr(value[:40])
    return type(value).__name__ if isinstance(value, dict | list) else repr(value)


def _number_problem(value: object, where: str) -> str:
    """The first number in the document that no audit.json holds, named by its path; "" when none."""
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _number_problem(item, f"{where}.{key}" if where else str(key))
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = _number_problem(item, f"{where}[{index}]")
            if problem:
                return problem
    elif isinstance(value, _NotANumber):
        return f"{where}: {value.text} is not a finite number"
    elif isinstance(value, _TooLong):
        return f"{where}: an integer of {value.digits} digits is out of range (at most {MAX_NUMBER:.0e})"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            return f"{where}: {value!r} is not a finite number"
        if value < 0:
            return f"{where}: {value!r} is negative (counts, prices and costs never are)"
        if value > MAX_NUMBER:
            return f"{where}: {value!r} is out of range (at most {MAX_NUMBER:.0e})"
    return ""


def _shape_problem(data: dict[str, object]) -> str:
    """The first structural problem (tenants a list of objects, billing counts whole numbers); "" if none."""
    tenants = data.get("tenants")
    if not isinstance(tenants, list):
        return f"tenants must be a list, not {_shown(tenants)}"
    for index, tenant in enumerate(tenants):
        problem = _tenant_problem(index, tenant)
        if problem:
            return problem
    return ""


def _tenant_problem(index: int, tenant: object) -> str:
    """The first structural problem of ``tenants[index]``; "" if none."""
    if not isinstance(tenant, dict):
        return f"tenants[{index}] must be an object, not {_shown(tenant)}"
    billing = tenant.get("billing")
    if billing is None:
        return ""
    if not isinstance(billing, dict):
        return f"tenants[{index}].billing must be an object, not {_shown(billing)}"
    billed = billing.get("billed_shared_mailboxes")
    if billed is not None and (isinstance(billed, bool) or not isinstance(billed, int)):
        return (
            f"tenants[{index}].billing.billed_shared_mailboxes must be a whole number, not {_shown(billed)}"
        )
    for key in ("price_per_mailbox", "monthly_cost"):
        amount = billing.get(key)
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
            return f"tenants[{index}].billing.{key} must be a number, not {_shown(amount)}"
    price = billing.get("price_per_mailbox")
    if isinstance(price, int | float) and price > MAX_PRICE:
        return f"tenants[{index}].billing.price_per_mailbox {price!r} is out of range (at most {MAX_PRICE:,})"
    return ""
