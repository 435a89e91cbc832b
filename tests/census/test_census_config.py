"""`[census] max_age_days` (default 7) and `auditor audit --full-census`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from auditor.config import CensusSettings, load_config, parse_config
from auditor.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TENANT = {"name": "Contoso", "tenant_id": "11111111-2222-4333-8444-555555555555"}
AUTH = {"client_id": "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "client_secret_env": "SECRET"}


def config_with(census: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"auth": AUTH, "tenants": [TENANT]}
    if census is not None:
        data["census"] = census
    return data


def test_default_and_example() -> None:
    assert parse_config(config_with(None), path="x.toml").census == CensusSettings(max_age_days=7)
    assert parse_config(config_with({"max_age_days": 0}), path="x.toml").census.max_age_days == 0
    assert load_config(REPO / "config" / "example.toml").census.max_age_days == 7


@pytest.mark.parametrize(
    ("census", "words"),
    [
        ({"max_age_days": -1}, "from 0 to 90"),
        ({"max_age_days": 91}, "from 0 to 90"),
        ({"max_age_days": 2.5}, "whole number"),
        ({"max_age_days": True}, "whole number"),
        ({"max_age_days": "7"}, "whole number"),
        ({"max_age": 7}, "max_age"),
    ],
)
def test_bad_census_settings_get_one_clear_message(census: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config_with(census), path="x.toml")
    text = str(info.value)
    assert words in text and "census" in text


@pytest.mark.parametrize(("argv", "full"), [([], False), (["--full-census"], True)])
def test_full_census_flag_reaches_the_audit(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], full: bool
) -> None:
    import auditor.cli.audit as cli_audit
    from auditor.cli.main import app

    seen: list[Any] = []

    def fake_run_audit(options: Any) -> Any:
        seen.append(options)
        return type("Outcome", (), {"exit_code": 0})()

    monkeypatch.setattr(cli_audit, "run_audit", fake_run_audit)
    result = CliRunner().invoke(app, ["audit", "--config", "x.toml", *argv])
    assert result.exit_code == 0, result.output
    assert [o.full_census for o in seen] == [full]
