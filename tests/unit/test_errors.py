"""The error tree and redaction (auditor.errors): what an administrator reads, and what never leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor import errors
from auditor.errors import (
    DEFAULT_HINTS,
    AuditorError,
    ConfigError,
    ErrorCode,
    GraphError,
    TenantError,
    UsageError,
    permission_hint,
    redact,
    redact_bulk,
    register_secret,
)


@pytest.fixture(autouse=True)
def no_registered_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no secret registered, as a fresh process does: the registry is process-wide,
    so a value another test registered would otherwise be masked here however registration behaves."""
    monkeypatch.setattr(errors, "_known_secrets", ())


@pytest.mark.parametrize(
    ("value", "masked"), [("zq9x7", False), ("zq9x7w", True), ("", False), (None, False)]
)
def test_secrets_of_six_characters_or_more_are_masked(value: str | None, masked: bool) -> None:
    register_secret(value)
    text = f"before {value} after"
    assert (redact(text) == "before [redacted] after") is masked


def test_a_secret_containing_another_is_masked_whole() -> None:
    register_secret("qzv-pass-01")
    register_secret("my-qzv-pass-01-long")
    assert redact("x my-qzv-pass-01-long y qzv-pass-01 z") == "x [redacted] y [redacted] z"


# What a capture file holds: Graph JSON, form bodies, headers. `redact_bulk` skips patterns whose words are
# absent, so each case has the words in the case a pattern ignores (or not) to show nothing slips past.
BULK_TEXTS = [
    '{"value": [{"id": "1"}], "@odata.nextLink": "https://x/v1.0/users?$skiptoken=eyJhYmMx.eyJkZWYy.c2ln"}',
    '{"form": {"client_secret": "abc", "Client_Assertion": "def"}}',
    "Authorization: BEARER abc.def.ghi and eyJhbGciOi.eyJzdWIiOi.c2ln",
    "PASSWORD=hunter22; Passwd: x; ACCESS_TOKEN=y; Id_Token=z; refresh_token=w; SECRET=v",
    "a registered value reg1st3red-S3cret-value inside plain text",
    "nothing at all to hide here",
]


@pytest.mark.parametrize("text", BULK_TEXTS)
def test_bulk_redaction_masks_exactly_what_redact_masks(text: str) -> None:
    register_secret("reg1st3red-S3cret-value")
    assert redact_bulk(text) == redact(text)
    for secret in ("reg1st3red-S3cret-value", "hunter22", "abc.def.ghi", "eyJhbGciOi", '"abc"', "=y;"):
        assert secret not in redact_bulk(text)


def test_bulk_redaction_of_a_capture() -> None:
    register_secret("reg1st3red-S3cret-value")
    text = "\n".join(BULK_TEXTS)
    assert redact_bulk(text) == (
        '{"value": [{"id": "1"}], "@odata.nextLink": "https://x/v1.0/users?$skiptoken=[redacted-token]"}\n'
        '{"form": {"client_secret": "[redacted]", "Client_Assertion": "[redacted]"}}\n'
        "Authorization: BEARER [redacted] and [redacted-token]\n"
        "PASSWORD=[redacted]; Passwd: [redacted]; ACCESS_TOKEN=[redacted]; Id_Token=[redacted]; "
        "refresh_token=[redacted]; SECRET=[redacted]\n"
        "a registered value [redacted] inside plain text\n"
        "nothing at all to hide here"
    )


def test_permission_hints_name_the_permission_tenant_and_app() -> None:
    assert permission_hint("MailboxSettings.Read", "Contoso") == (
        "Grant the Microsoft Graph application permission MailboxSettings.Read to the auditor app and have "
        "an administrator of tenant Contoso grant admin consent, then re-run."
    )
    assert "to the USS app and" in permission_hint("Mail.Read", "Contoso", "the USS app")


def test_errors_read_as_message_then_hint() -> None:
    error = AuditorError("Graph answered 500.", code=ErrorCode.GRAPH_ERROR, hint="Re-run.")
    assert str(error) == "Graph answered 500. Re-run." and error.args == ("Graph answered 500.",)
    plain = AuditorError("Something.", code=ErrorCode.TIMEOUT)
    assert plain.hint == DEFAULT_HINTS[ErrorCode.TIMEOUT]
    assert str(plain) == f"Something. {DEFAULT_HINTS[ErrorCode.TIMEOUT]}"


def test_an_error_becomes_a_result_with_its_code_message_and_hint() -> None:
    error = AuditorError("Reading /users took too long.", code=ErrorCode.TIMEOUT, hint="Raise the limit.")
    assert error.to_tenant_error() == TenantError(
        ErrorCode.TIMEOUT, "Reading /users took too long.", "Raise the limit."
    )


def test_graph_errors_keep_status_and_request_id_for_support() -> None:
    error = GraphError(
        "Graph answered 403.",
        code=ErrorCode.PERMISSION_DENIED,
        hint="Grant it.",
        status=403,
        request_id="r-1",
    )
    assert (error.status, error.request_id, error.hint) == (403, "r-1", "Grant it.")
    result = error.to_tenant_error()
    assert result == TenantError(
        ErrorCode.PERMISSION_DENIED, "Graph answered 403. (request-id r-1)", "Grant it."
    )
    bare = GraphError("Graph answered 500.").to_tenant_error()
    assert (bare.code, bare.message, bare.hint) == (
        ErrorCode.GRAPH_ERROR,
        "Graph answered 500.",
        DEFAULT_HINTS[ErrorCode.GRAPH_ERROR],
    )


def test_tenant_errors_round_trip_and_coerce_their_code() -> None:
    error = TenantError("TIMEOUT", "took too long", "")  # type: ignore[arg-type]
    assert error.code is ErrorCode.TIMEOUT and error.hint == DEFAULT_HINTS[ErrorCode.TIMEOUT]
    assert TenantError.from_dict(error.to_dict()) == error
    assert (
        TenantError.from_dict({"code": "AUTH_FAILED", "message": "m", "hint": None}).hint
        == DEFAULT_HINTS[ErrorCode.AUTH_FAILED]
    )
    assert TenantError.from_dict({"code": "AUTH_FAILED", "message": "m", "hint": "h"}).hint == "h"


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({}, "config: tenant_id is wrong."),
        ({"path": "fleet.toml"}, "fleet.toml: tenant_id is wrong."),
        ({"path": "fleet.toml", "line": 3}, "fleet.toml:3: tenant_id is wrong."),
        ({"path": "fleet.toml", "line": 3, "column": 7}, "fleet.toml:3:7: tenant_id is wrong."),
        (
            {"path": "fleet.toml", "key": "tenants[2].tenant_id", "fix": "use the GUID"},
            "fleet.toml: tenants[2].tenant_id: tenant_id is wrong. Fix: use the GUID",
        ),
    ],
)
def test_config_errors_are_one_line_naming_file_place_key_and_fix(
    kwargs: dict[str, object], text: str
) -> None:
    error = ConfigError(".. tenant_id is wrong. ", **kwargs)  # type: ignore[arg-type]
    expected = text.replace("tenant_id is wrong", ".. tenant_id is wrong")
    assert str(error) == expected
    assert error.code is ErrorCode.CONFIG_ERROR and error.exit_code == 2
    assert error.path == (Path(str(kwargs["path"])) if "path" in kwargs else None)
    assert (error.line, error.column) == (kwargs.get("line"), kwargs.get("column"))
    assert error.hint == (kwargs.get("fix") or DEFAULT_HINTS[ErrorCode.CONFIG_ERROR])


def test_a_config_error_over_several_lines_is_printed_on_one() -> None:
    assert str(ConfigError("bad\nvalue", fix="set it\nagain")) == "config: bad value. Fix: set it again"


def test_a_config_error_keeps_its_last_word_and_ends_with_one_full_stop() -> None:
    # Only trailing dots and spaces are dropped before the full stop, never the letters of a value.
    assert str(ConfigError("currency must be an ISO 4217 code, not XXX. ")) == (
        "config: currency must be an ISO 4217 code, not XXX."
    )


def test_usage_errors_are_config_errors_with_exit_code_2() -> None:
    error = UsageError("--yes needs --remediate", hint="Add --remediate.")
    assert (error.code, error.exit_code, error.hint) == (ErrorCode.CONFIG_ERROR, 2, "Add --remediate.")
    assert str(error) == "--yes needs --remediate Add --remediate."
    assert UsageError("x").hint == DEFAULT_HINTS[ErrorCode.CONFIG_ERROR]
