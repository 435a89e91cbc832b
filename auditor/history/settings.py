"""The ``[history]`` table of the config file -> :class:`HistorySettings`.

``auditor.config`` keeps ``[history]`` as written (a mapping); it is validated here, when a run or
``auditor history`` starts, with the same strictness as the rest of the config: an unknown key is an
error with a did-you-mean suggestion, and every error is a :class:`~auditor.errors.ConfigError` naming the
file, the key, what is wrong and how to fix it (exit code 2, nothing audited).

```toml
[history]
enabled = true                    # false: no history is kept (reports then show no changes or gap ages)
path = "history.sqlite"           # default; relative paths are relative to the config file
lock_timeout_seconds = 10         # how long a run waits for an overlapping run before refusing
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from auditor.config import AuditConfig, did_you_mean
from auditor.errors import ConfigError

__all__ = ["DEFAULT_HISTORY_FILE", "DEFAULT_LOCK_TIMEOUT_SECONDS", "HistorySettings", "history_settings"]

DEFAULT_HISTORY_FILE: Final = "history.sqlite"
# Long enough to ride out `auditor history` probing the lock or a run that is just finishing, short
# enough that a scheduler starting a second run while the first is still auditing hears about it at once.
DEFAULT_LOCK_TIMEOUT_SECONDS: Final = 10.0

_KEYS: Final = ("enabled", "path", "lock_timeout_seconds")


@dataclass(frozen=True)
class HistorySettings:
    """Where the run history lives and how a run takes it."""

    path: Path  # absolute path of the SQLite file
    enabled: bool = True
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS


def history_settings(config: AuditConfig) -> HistorySettings:
    """Validate ``config.history`` (the raw ``[history]`` table). Raises :class:`ConfigError`."""
    return parse_history_table(config.history, config_path=config.path)


def parse_history_table(table: Mapping[str, Any], *, config_path: Path) -> HistorySettings:
    """Validate a ``[history]`` table; relative paths resolve against ``config_path``'s directory."""

    def fail(key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(problem, path=config_path, key=f"history.{key}" if key else "history", fix=fix)

    for key in table:
        if key not in _KEYS:
            raise fail(
                key,
                f"unknown key in the [history] section{did_you_mean(key, _KEYS)}",
                f"valid keys are: {', '.join(_KEYS)}",
            )

    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail("enabled", f"must be true or false, not {enabled!r}", "e.g. enabled = true")

    raw_path = table.get("path", DEFAULT_HISTORY_FILE)
    if not isinstance(raw_path, str) or not raw_path.strip():
        raise fail("path", "must be a non-empty file path string", f'e.g. path = "{DEFAULT_HISTORY_FILE}"')
    path = Path(raw_path.strip()).expanduser()
    # Like every path in the config: relative to the config file, not to wherever the scheduler starts us.
    path = path if path.is_absolute() else config_path.resolve().parent / path
    path = path.resolve()
    if path.is_dir():
        raise fail(
            "path",
            f"{path} is a directory; it must name the history database file",
            f'e.g. path = "{path / DEFAULT_HISTORY_FILE}"',
        )

    timeout = table.get("lock_timeout_seconds", DEFAULT_LOCK_TIMEOUT_SECONDS)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 <= timeout <= 3600
    ):
        raise fail(
            "lock_timeout_seconds",
            f"must be a number of seconds from 0 to 3600, not {timeout!r}",
            "e.g. lock_timeout_seconds = 10 (0: refuse at once when another run holds the history)",
        )
    return HistorySettings(path=path, enabled=enabled, lock_timeout_seconds=float(timeout))
