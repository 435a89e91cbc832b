"""Webhooks against a real HTTP receiver on 127.0.0.1: the Teams (Adaptive Card, MessageCard) and Slack
(Block Kit) shapes, and the webhook URL treated as the secret it is."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from auditor.logs import JsonLogFormatter
from auditor.model import RunResult
from auditor.notify import (
    Delivery,
    NotificationOutcome,
    NotificationSettings,
    WebhookFormat,
    WebhookSettings,
    digest_run,
    notify,
)
from auditor.notify.webhook import build_payload
from tests.receivers import WEBHOOK_TOKEN, WEBHOOK_URL_ENV, WebhookReceiver, free_port
from tests.reporting.sample import sample_run

REPORT_URL = "https://intranet.example/uss/latest/audit.html"


def post(
    run: RunResult, fmt: WebhookFormat, env: dict[str, str], *, report_url: str | None = REPORT_URL
) -> NotificationOutcome:
    channel = WebhookSettings(
        name=f"{fmt.value} channel", format=fmt, url_env=WEBHOOK_URL_ENV, timeout_seconds=5
    )
    (outcome,) = notify(run, [], NotificationSettings((channel,), report_url=report_url), environ=env)
    return outcome


def texts(value: Any) -> list[str]:
    """Every string in a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in texts(v)]
    return []


def test_teams_gets_an_adaptive_card(webhook_receiver: WebhookReceiver, run: RunResult) -> None:
    outcome = post(run, WebhookFormat.TEAMS, {WEBHOOK_URL_ENV: webhook_receiver.url})
    assert outcome.delivery is Delivery.SENT, outcome.detail
    assert outcome.detail == "delivered to 127.0.0.1 (HTTP 200, teams format)"
    (body,) = webhook_receiver.bodies
    assert webhook_receiver.headers[0]["Content-Type"] == "application/json"
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert all(element["type"] in ("TextBlock", "FactSet") for element in card["body"])
    assert card["body"][0]["text"].startswith("USS audit: 8 of 15 tenant(s) need attention")
    facts = [f for element in card["body"] if element["type"] == "FactSet" for f in element["facts"]]
    assert all(set(f) == {"title", "value"} and isinstance(f["value"], str) for f in facts)
    assert any(f["title"] == "Lucerne Publishing" and "ROLE\\_MISSING" in f["value"] for f in facts)
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "Open the report", "url": REPORT_URL}]


def test_teams_messagecard_is_well_formed(webhook_receiver: WebhookReceiver, run: RunResult) -> None:
    outcome = post(
        run, WebhookFormat.TEAMS_MESSAGECARD, {WEBHOOK_URL_ENV: webhook_receiver.url}, report_url=None
    )
    assert outcome.delivery is Delivery.SENT, outcome.detail
    (card,) = webhook_receiver.bodies
    assert card["@type"] == "MessageCard" and card["@context"] == "https://schema.org/extensions"
    assert card["themeColor"] == "D13438"
    assert card["summary"] == card["title"]
    assert all(section["markdown"] is False for section in card["sections"])
    names = [f["name"] for section in card["sections"] for f in section.get("facts", [])]
    assert "Fabrikam Retail" in names
    assert "potentialAction" not in card


def test_slack_gets_block_kit(webhook_receiver: WebhookReceiver, run: RunResult) -> None:
    outcome = post(run, WebhookFormat.SLACK, {WEBHOOK_URL_ENV: webhook_receiver.url})
    assert outcome.delivery is Delivery.SENT, outcome.detail
    (body,) = webhook_receiver.bodies
    assert body["text"].startswith("USS audit: 8 of 15")
    blocks = body["blocks"]
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "actions", "context"]
    assert blocks[0]["text"]["type"] == "plain_text" and len(blocks[0]["text"]["text"]) <= 150
    assert len(blocks[1]["fields"]) <= 10
    for block in blocks:
        for obj in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if obj and "type" in obj and obj["type"] in ("plain_text", "mrkdwn"):
                assert obj["type"] == "plain_text"  # tenant data is never interpreted as markup
                assert len(obj["text"]) <= 3000
    assert "Needs attention:\n• Lucerne Publishing: non_compliant (ROLE_MISSING)" in blocks[2]["text"]["text"]
    assert blocks[4]["elements"][0]["url"] == REPORT_URL


MARKUP_NAME = "[click](https://evil.example) *urgent* <https://evil.example|login> _x_"


def hostile_run() -> RunResult:
    base = sample_run(hostile=True)
    first = next(t for t in base.tenants if t.status.value == "non_compliant")
    return replace(base, tenants=(replace(first, name=MARKUP_NAME), *base.tenants))


@pytest.mark.parametrize("fmt", list(WebhookFormat))
def test_hostile_tenant_names_stay_text(fmt: WebhookFormat) -> None:
    payload = build_payload(fmt, digest_run(hostile_run(), max_listed=50))
    json.dumps(payload)  # serialisable as is
    strings = texts(payload)
    if fmt is WebhookFormat.TEAMS:
        # Adaptive Card markdown always renders: link and emphasis syntax arrive escaped.
        assert (
            "\\[click\\](https://evil.example) \\*urgent\\* <https://evil.example|login> \\_x\\_" in strings
        )
        assert MARKUP_NAME not in strings
    else:
        # Slack plain_text objects and MessageCard sections with markdown off show the name as written.
        assert any(MARKUP_NAME in s for s in strings)
    if fmt is WebhookFormat.SLACK:
        objects = [
            o
            for b in payload["blocks"]
            for o in [b.get("text"), *b.get("fields", []), *b.get("elements", [])]
            if o
        ]
        assert all(o.get("type") != "mrkdwn" for o in objects)
        assert "<" not in payload["text"]  # the mrkdwn fallback carries no tenant data, and is escaped
    if fmt is WebhookFormat.TEAMS_MESSAGECARD:
        assert all(section["markdown"] is False for section in payload["sections"])


def test_the_url_must_be_https_except_for_loopback(run: RunResult) -> None:
    secret_url = f"http://hooks.example.com/services/{WEBHOOK_TOKEN}"
    outcome = post(run, WebhookFormat.SLACK, {WEBHOOK_URL_ENV: secret_url})
    assert outcome.delivery is Delivery.FAILED
    assert "does not hold an https URL" in outcome.detail
    assert WEBHOOK_TOKEN not in outcome.detail and "hooks.example.com" not in outcome.detail


def test_an_unset_url_variable_is_named(run: RunResult) -> None:
    outcome = post(run, WebhookFormat.TEAMS, {})
    assert outcome.delivery is Delivery.FAILED
    assert f"environment variable {WEBHOOK_URL_ENV} (url_env) is not set" in outcome.detail


def test_a_rejected_message_is_a_failed_outcome(webhook_receiver: WebhookReceiver, run: RunResult) -> None:
    webhook_receiver.status = 400
    webhook_receiver.reply = f"invalid_payload for /hooks/{WEBHOOK_TOKEN}"
    outcome = post(run, WebhookFormat.SLACK, {WEBHOOK_URL_ENV: webhook_receiver.url})
    assert outcome.delivery is Delivery.FAILED
    assert "answered HTTP 400: invalid_payload" in outcome.detail
    assert "check format" in outcome.detail
    assert WEBHOOK_TOKEN not in outcome.detail


def test_a_gone_webhook_says_to_make_a_new_one(webhook_receiver: WebhookReceiver, run: RunResult) -> None:
    url = webhook_receiver.url.replace(WEBHOOK_TOKEN, "revoked-token")
    outcome = post(run, WebhookFormat.TEAMS, {WEBHOOK_URL_ENV: url})
    assert outcome.delivery is Delivery.FAILED
    assert "HTTP 404" in outcome.detail and "create a new one" in outcome.detail


def test_a_receiver_that_is_down_fails_cleanly_and_the_url_stays_out_of_the_logs(
    run: RunResult, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/{WEBHOOK_TOKEN}"
    with caplog.at_level(logging.DEBUG):
        outcome = post(run, WebhookFormat.TEAMS, {WEBHOOK_URL_ENV: url})
    assert outcome.delivery is Delivery.FAILED
    assert "cannot connect to webhook host 127.0.0.1" in outcome.detail
    formatter = JsonLogFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    assert lines and all(WEBHOOK_TOKEN not in line for line in lines)
    assert WEBHOOK_TOKEN not in outcome.detail


def test_receivers_get_the_same_figures(
    webhook_receiver: WebhookReceiver, run: RunResult, tmp_path: Path
) -> None:
    env = {WEBHOOK_URL_ENV: webhook_receiver.url}
    for fmt in WebhookFormat:
        assert post(run, fmt, env).delivery is Delivery.SENT
    for body in webhook_receiver.bodies:
        joined = " ".join(texts(body))
        assert "GBP 290.00 per month" in joined
        assert "116 of 160" in joined
