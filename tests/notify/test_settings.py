"""[notifications] -> typed settings: defaults, every channel shape, and one clear ConfigError per mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.config import load_config
from auditor.errors import ConfigError
from auditor.notify import (
    EmailSettings,
    Policy,
    SmtpSecurity,
    WebhookFormat,
    WebhookSettings,
    notification_settings,
    parse_notifications_table,
)

EMAIL = {
    "smtp_host": "smtp.example.com",
    "username": "auditor@example.com",
    "password_env": "AUDITOR_SMTP_PASSWORD",
    "from": "auditor@example.com",
    "to": ["billing@example.com"],
}
WEBHOOK = {"format": "teams", "url_env": "AUDITOR_TEAMS_URL"}


def parse(table: dict[str, Any], tmp_path: Path) -> Any:
    return parse_notifications_table(table, config_path=tmp_path / "fleet.toml")


def test_an_empty_table_configures_no_channel(tmp_path: Path) -> None:
    settings = parse({}, tmp_path)
    assert settings.channels == ()
    assert settings.report_url is None


def test_email_defaults(tmp_path: Path) -> None:
    (email,) = parse({"email": EMAIL}, tmp_path).channels
    assert isinstance(email, EmailSettings)
    assert (email.name, email.policy, email.security, email.port) == (
        "email",
        Policy.ALWAYS,
        SmtpSecurity.STARTTLS,
        587,
    )
    assert email.attach == ("html", "xlsx", "json")
    assert email.recipients == ("billing@example.com",)
    assert email.password_env == "AUDITOR_SMTP_PASSWORD"


def test_implicit_tls_defaults_to_port_465(tmp_path: Path) -> None:
    (email,) = parse({"email": {**EMAIL, "security": "TLS"}}, tmp_path).channels
    assert isinstance(email, EmailSettings)
    assert (email.security, email.port) == (SmtpSecurity.TLS, 465)


def test_channels_as_tables_or_lists_keep_config_order(tmp_path: Path) -> None:
    settings = parse(
        {
            "report_url": "https://intranet.example/uss/audit.html",
            "email": [{**EMAIL, "name": "billing"}, {**EMAIL, "name": "ops", "when": "on_gaps"}],
            "webhook": [WEBHOOK, {"format": "slack", "url_env": "SLACK_URL", "when": "on_change"}],
        },
        tmp_path,
    )
    assert [c.name for c in settings.channels] == ["billing", "ops", "webhook (teams)", "webhook (slack)"]
    slack = settings.channels[3]
    assert isinstance(slack, WebhookSettings)
    assert (slack.format, slack.policy, slack.url_env) == (WebhookFormat.SLACK, Policy.ON_CHANGE, "SLACK_URL")
    assert settings.report_url == "https://intranet.example/uss/audit.html"


def test_a_disabled_channel_is_validated_but_not_used(tmp_path: Path) -> None:
    assert parse({"webhook": {**WEBHOOK, "enabled": False}}, tmp_path).channels == ()
    with pytest.raises(ConfigError):
        parse({"webhook": {**WEBHOOK, "enabled": False, "when": "sometimes"}}, tmp_path)


def test_a_local_relay_without_tls_or_auth_is_accepted(tmp_path: Path) -> None:
    relay = {"smtp_host": "localhost", "security": "none", "from": "a@example.com", "to": "b@example.com"}
    (email,) = parse({"email": relay}, tmp_path).channels
    assert isinstance(email, EmailSettings)
    assert (email.port, email.username, email.recipients) == (25, None, ("b@example.com",))


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"emial": EMAIL}, "notifications.emial", ["did you mean 'email'"]),
        (
            {"email": {**EMAIL, "password": "hunter2-secret"}},
            "notifications.email.password",
            ["password_env"],
        ),
        (
            {"webhook": {**WEBHOOK, "url": "https://x.example/hook"}},
            "notifications.webhook.url",
            ["url_env", "token"],
        ),
        (
            {"email": {**EMAIL, "password_env": "not a name!"}},
            "notifications.email.password_env",
            ["NAME of an environment variable"],
        ),
        (
            {"email": {k: v for k, v in EMAIL.items() if k != "smtp_host"}},
            "notifications.email.smtp_host",
            ["needs smtp_host"],
        ),
        ({"email": {**EMAIL, "smtp_host": "smtp://host:25"}}, "notifications.email.smtp_host", ["no scheme"]),
        ({"email": {**EMAIL, "smtp_port": 70000}}, "notifications.email.smtp_port", ["65535"]),
        ({"email": {**EMAIL, "security": "ssl"}}, "notifications.email.security", ["starttls"]),
        ({"email": {**EMAIL, "security": "none"}}, "notifications.email.security", ["relay on this machine"]),
        (
            {"email": {**EMAIL, "smtp_host": "127.0.0.1", "security": "none"}},
            "notifications.email.security",
            ["password unencrypted"],
        ),
        ({"email": {**EMAIL, "username": ""}}, "notifications.email.username", ["non-empty"]),
        (
            {"email": {k: v for k, v in EMAIL.items() if k != "password_env"}},
            "notifications.email.password_env",
            [],
        ),
        ({"email": {**EMAIL, "to": []}}, "notifications.email.to", ["at least one recipient"]),
        (
            {"email": {**EMAIL, "to": ["not-an-address"]}},
            "notifications.email.to[0]",
            ["not an e-mail address"],
        ),
        ({"email": {**EMAIL, "from": "a@b.example\r\nBcc: x@y.example"}}, "notifications.email.from", []),
        ({"email": {**EMAIL, "attach": ["pdf"]}}, "notifications.email.attach", ["html, xlsx, json"]),
        ({"email": {**EMAIL, "when": "on_gap"}}, "notifications.email.when", ["did you mean 'on_gaps'"]),
        ({"email": {**EMAIL, "timeout_seconds": 0}}, "notifications.email.timeout_seconds", ["from 1"]),
        (
            {"email": {**EMAIL, "ca_bundle": "missing.pem"}},
            "notifications.email.ca_bundle",
            ["does not exist"],
        ),
        ({"webhook": {"url_env": "X"}}, "notifications.webhook.format", ["needs format"]),
        ({"webhook": {**WEBHOOK, "format": "discord"}}, "notifications.webhook.format", ["slack"]),
        ({"webhook": {"format": "slack"}}, "notifications.webhook.url_env", ["secret"]),
        ({"webhook": "https://x.example"}, "notifications.webhook", ["table"]),
        ({"webhook": [WEBHOOK, WEBHOOK]}, "notifications.webhook[1].name", ["also used by"]),
        ({"report_url": "ftp://x.example/a"}, "notifications.report_url", ["http(s) URL"]),
        ({"max_tenants_listed": 0}, "notifications.max_tenants_listed", ["1 to 200"]),
    ],
)
def test_mistakes_are_one_config_error_naming_file_key_and_fix(
    tmp_path: Path, table: dict[str, Any], key: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(table, tmp_path)
    error = caught.value
    text = str(error)
    assert error.key == key
    assert text.startswith(str(tmp_path / "fleet.toml") + ": " + key + ": ")
    assert "Fix:" in text
    assert "\n" not in text
    for word in words:
        assert word in text
    # Whatever was in the file where a secret could be is never echoed back.
    assert "hunter2-secret" not in text
    assert "x.example/hook" not in text


def test_settings_come_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        """
[auth]
client_id = "00000000-0000-0000-0000-0000000000c1"
client_secret_env = "AUDITOR_SECRET"

[notifications]
report_url = "https://intranet.example/uss/audit.html"

[notifications.email]
when = "on_gaps"
smtp_host = "smtp.example.com"
username = "auditor@example.com"
password_env = "AUDITOR_SMTP_PASSWORD"
from = "USS auditor <auditor@example.com>"
to = ["billing@example.com", "ops@example.com"]

[[notifications.webhook]]
format = "slack"
url_env = "AUDITOR_SLACK_URL"

[[tenants]]
name = "Contoso"
tenant_id = "11111111-1111-1111-1111-111111111111"
"""
    )
    settings = notification_settings(load_config(path))
    email, slack = settings.channels
    assert isinstance(email, EmailSettings) and isinstance(slack, WebhookSettings)
    assert email.policy is Policy.ON_GAPS
    assert email.sender == "USS auditor <auditor@example.com>"
    assert slack.format is WebhookFormat.SLACK
