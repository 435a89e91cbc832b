"""The error tree and redaction (auditor.errors): what an administrator reads, and what never leaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.errors import (
    DEFAULT_HINTS,
    AuditorError,
    ConfigError,
    ErrorCode,
    GraphError,
    TenantError,
    UsageError,
    redact,
    register_secret,
)


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


def test_errors_read_as_message_then_hint() -> None:
    error = AuditorError("Graph answered 500.", code=ErrorCode.GRAPH_ERROR, hint="Re-run.")
    assert str(error) == "Graph answered 500. Re-run." and error.args == ("Graph answered 500.",)
    plain = AuditorError("Something.", code=ErrorCode.TIMEOUT)
    assert plain.hint == DEFAULT_HINTS[ErrorCode.TIMEOUT]
    assert str(plain) == f"Something. {DEFAULT_HINTS[ErrorCode.TIMEOUT]}"


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


def test_usage_errors_are_config_errors_with_exit_code_2() -> None:
    error = UsageError("--yes needs --remediate", hint="Add --remediate.")
    assert (error.code, error.exit_code, error.hint) == (ErrorCode.CONFIG_ERROR, 2, "Add --remediate.")
    assert str(error) == "--yes needs --remediate Add --remediate."
    assert UsageError("x").hint == DEFAULT_HINTS[ErrorCode.CONFIG_ERROR]
