"""The [history] table: defaults, paths relative to the config file, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.errors import ConfigError
from auditor.history.settings import DEFAULT_LOCK_TIMEOUT_SECONDS, HistorySettings, parse_history_table


def parse(table: dict[str, Any], config: Path) -> HistorySettings:
    return parse_history_table(table, config_path=config)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    return tmp_path / "etc" / "fleet.toml"


def test_defaults_put_the_database_beside_the_config(config: Path) -> None:
    settings = parse({}, config)
    assert settings == HistorySettings(
        path=config.parent / "history.sqlite", enabled=True, lock_timeout_seconds=DEFAULT_LOCK_TIMEOUT_SECONDS
    )


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("runs.sqlite", "etc/runs.sqlite"),
        ("../var/history.db", "var/history.db"),
        ("  data/h.sqlite ", "etc/data/h.sqlite"),
    ],
)
def test_relative_paths_resolve_against_the_config_directory(
    config: Path, tmp_path: Path, written: str, expected: str
) -> None:
    assert parse({"path": written}, config).path == (tmp_path / expected).resolve()


def test_absolute_path_and_other_settings(config: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "h.sqlite"
    settings = parse({"path": str(target), "enabled": False, "lock_timeout_seconds": 0}, config)
    assert settings == HistorySettings(path=target, enabled=False, lock_timeout_seconds=0.0)


@pytest.mark.parametrize(
    ("table", "key", "text"),
    [
        ({"pth": "x.sqlite"}, "history.pth", "did you mean 'path'?"),
        ({"enable": False}, "history.enable", "did you mean 'enabled'?"),
        ({"keep": 3}, "history.keep", "valid keys are: enabled, path, lock_timeout_seconds"),
        ({"enabled": "no"}, "history.enabled", "must be true or false"),
        ({"path": ""}, "history.path", "non-empty file path"),
        ({"path": 3}, "history.path", "non-empty file path"),
        ({"lock_timeout_seconds": -1}, "history.lock_timeout_seconds", "from 0 to 3600"),
        ({"lock_timeout_seconds": True}, "history.lock_timeout_seconds", "from 0 to 3600"),
        ({"lock_timeout_seconds": float("nan")}, "history.lock_timeout_seconds", "from 0 to 3600"),
    ],
)
def test_mistakes_name_the_file_the_key_and_the_fix(
    config: Path, table: dict[str, Any], key: str, text: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(table, config)
    message = str(caught.value)
    assert message.startswith(f"{config}: {key}: ")
    assert text in message and "Fix:" in message
    assert caught.value.exit_code == 2


def test_a_directory_is_not_a_database_path(config: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        parse({"path": str(tmp_path)}, config)


def test_history_settings_reads_the_loaded_config(tmp_path: Path) -> None:
    from auditor.config import load_config
    from auditor.history import history_settings

    path = tmp_path / "fleet.toml"
    path.write_text(
        '[history]\npath = "h/runs.sqlite"\n\n[auth]\nclient_id = "00000000-0000-0000-0000-0000000000c1"\n'
        'client_secret_env = "X"\n\n[[tenants]]\nname = "A"\ntenant_id = "11111111-1111-1111-1111-111111111111"\n'
    )
    assert history_settings(load_config(path)).path == tmp_path / "h" / "runs.sqlite"
