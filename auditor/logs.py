"""Log lines for log shippers: ``--log-format json`` writes one JSON object per line.

Every object carries the same core keys, so a collector can index them without parsing text::

    {"time": "2025-01-31T02:00:04.118Z", "level": "info", "tenant": "Contoso", "event": "tenant_done",
     "message": "[3/15] Contoso: compliant (2.1 s)", "logger": "auditor.progress"}

* ``tenant`` comes from a ``tenant`` attribute on the record: ``log.info(..., extra={"tenant": name})``
  or a :class:`TenantLogAdapter`; ``null`` for fleet-wide lines.
* ``event`` is a short stable name for what happened (``extra={"event": "tenant_done"}``); a record
  without one gets its logger's name, which is still stable enough to filter on.
* ``message`` is the rendered text. Other ``extra=`` values (``status``, ``seconds``, ...) are added as
  their own keys when they are JSON values.

Secrets never get here by design (credentials are referenced by variable name), and every string is
still passed through :func:`auditor.errors.redact`, which masks every secret value registered with
:func:`auditor.errors.register_secret` and anything shaped like a credential, because a library may echo
a token in an exception message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, TextIO

from auditor.errors import redact, register_secret

__all__ = [
    "JsonLogFormatter",
    "LogFormat",
    "TenantLogAdapter",
    "json_log_handler",
    "parse_log_format",
]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}
# Keys the formatter owns; an `extra=` value with one of these names cannot replace them.
_CORE_KEYS: Final = ("time", "level", "tenant", "event", "message", "logger")


class LogFormat(StrEnum):
    """What ``--log-format`` takes."""

    TEXT = "text"  # human lines (rich on a terminal, plain otherwise)
    JSON = "json"  # one JSON object per line, for log shipping


def parse_log_format(value: str) -> LogFormat:
    """``--log-format`` value (any case) -> :class:`LogFormat`; raises ``ValueError`` naming the choices."""
    try:
        return LogFormat(value.strip().lower())
    except ValueError:
        choices = ", ".join(f.value for f in LogFormat)
        raise ValueError(f"unknown log format {value!r}; use one of: {choices}") from None


class JsonLogFormatter(logging.Formatter):
    """Formats a record as one line of JSON: time, level, tenant, event, message, logger (+ extras).

    ``secrets`` are exact values (e.g. the client secrets read from the environment for this run) that
    are masked wherever they appear, in addition to the pattern-based :func:`redact`.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        for secret in secrets:
            register_secret(secret)

    def add_secret(self, value: str) -> None:
        """Mask ``value`` from now on (:func:`auditor.errors.register_secret`: everywhere, not only here)."""
        register_secret(value)

    def scrub(self, text: str) -> str:
        """``text`` with registered secret values and anything that looks like a credential replaced."""
        return redact(text)

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object on one line (newlines inside values are escaped by JSON)."""
        message = record.getMessage()
        if record.exc_info:
            # The traceback text may quote a library's message; it gets the same scrubbing.
            message = f"{message}\n{self.formatException(record.exc_info)}"
        elif record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        tenant = getattr(record, "tenant", None)
        event = getattr(record, "event", None)
        data: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "tenant": None if tenant is None else self.scrub(str(tenant)),
            "event": self.scrub(str(event)) if event else record.name,
            "message": self.scrub(message),
            "logger": record.name,
        }
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRIBUTES or key in _CORE_KEYS or key.startswith("_"):
                continue
            data[key] = self._json_value(value)
        # ASCII only: U+2028, NEL and friends in tenant data stay escaped, so a line is always one line and
        # a stderr that is not UTF-8 cannot fail to encode it.
        return json.dumps(data, ensure_ascii=True, separators=(",", ":"))

    def _json_value(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {str(k): self._json_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._json_value(v) for v in value]
        return self.scrub(str(value))


class TenantLogAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger whose every record names one tenant (and, optionally, a default event)::

    log = TenantLogAdapter(logging.getLogger(__name__), tenant="Contoso")
    log.info("signed in", extra={"event": "sign_in"})
    """

    def __init__(self, logger: logging.Logger, tenant: str, event: str | None = None) -> None:
        extra: dict[str, object] = {"tenant": tenant}
        if event:
            extra["event"] = event
        super().__init__(logger, extra)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the adapter's tenant/event under the call's own ``extra=`` (the call wins)."""
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def json_log_handler(stream: TextIO, secrets: Iterable[str] = ()) -> logging.StreamHandler[TextIO]:
    """A handler writing JSON lines to ``stream`` (what ``logging_to_stderr`` installs for ``json``)."""
    handler: logging.StreamHandler[TextIO] = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter(secrets))
    return handler


def _iso_time(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
