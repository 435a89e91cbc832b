"""--log-format json: one JSON object per line with time, level, tenant, event and message; secrets out."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from auditor.logs import JsonLogFormatter, LogFormat, TenantLogAdapter, json_log_handler, parse_log_format

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlcyI6WyJVc2VyLlJlYWQuQWxsIl19.c2lnbmF0dXJlLXZhbHVl"
SECRET = "Zq8~known-secret-value-from-env"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines into a buffer (and only there)."""
    stream = io.StringIO()
    handler = json_log_handler(stream, secrets=[SECRET])
    logger = logging.getLogger("auditor.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_object_per_line_with_the_core_keys(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info(
        "[%d/%d] %s: %s", 3, 15, "Contoso", "compliant", extra={"tenant": "Contoso", "event": "tenant_done"}
    )
    logger.warning("fleet-wide line\nwith a second line")
    first, second = lines(stream)
    assert list(first)[:6] == ["time", "level", "tenant", "event", "message", "logger"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["level"] == "info"
    assert first["tenant"] == "Contoso"
    assert first["event"] == "tenant_done"
    assert first["message"] == "[3/15] Contoso: compliant"
    assert first["logger"] == "auditor.test_logs"
    assert second["level"] == "warning"
    assert second["tenant"] is None
    assert second["event"] == "auditor.test_logs"  # no event given: the logger's name
    assert second["message"] == "fleet-wide line\nwith a second line"


def test_a_tenant_adapter_names_the_tenant_on_every_line(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    log = TenantLogAdapter(logger, tenant="Fabrikam Retail", event="collect")
    log.info("signed in")
    log.info("read %d users", 240, extra={"event": "users_read", "count": 240})
    first, second = lines(stream)
    assert (first["tenant"], first["event"]) == ("Fabrikam Retail", "collect")
    assert (second["tenant"], second["event"], second["count"]) == ("Fabrikam Retail", "users_read", 240)


def test_extra_values_become_json_values(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info(
        "done",
        extra={
            "status": "compliant",
            "seconds": 2.5,
            "ok": True,
            "codes": ("A", "B"),
            "where": object(),
            "time": "x",
        },
    )
    (line,) = lines(stream)
    assert line["status"] == "compliant" and line["seconds"] == 2.5 and line["ok"] is True
    assert line["codes"] == ["A", "B"]
    assert isinstance(line["where"], str)
    assert line["time"] != "x"  # an extra cannot replace a core key


def test_secrets_are_redacted_everywhere(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info("token %s and client_secret=abc123def", JWT, extra={"tenant": "T", "detail": f"Bearer {JWT}"})
    logger.info("the env secret %s leaked", SECRET, extra={"event": f"evt {SECRET}"})
    try:
        raise RuntimeError(f"library echoed password={SECRET} and {JWT}")
    except RuntimeError:
        logger.exception("failed")
    text = stream.getvalue()
    assert JWT not in text and SECRET not in text and "abc123def" not in text
    first, second, third = lines(stream)
    assert "[redacted-token]" in first["message"]
    assert "client_secret=[redacted]" in first["message"]
    assert first["detail"] == "Bearer [redacted-token]"
    assert second["message"] == "the env secret [redacted] leaked"
    assert "Traceback" in third["message"] and "RuntimeError" in third["message"]


def test_secrets_can_be_added_later_and_short_values_are_ignored() -> None:
    formatter = JsonLogFormatter(secrets=["", "1"])
    formatter.add_secret("late-secret-value")
    record = logging.LogRecord("auditor.x", logging.INFO, __file__, 1, "1 late-secret-value", None, None)
    assert json.loads(formatter.format(record))["message"] == "1 [redacted]"


@pytest.mark.parametrize(("value", "expected"), [("json", LogFormat.JSON), (" TEXT ", LogFormat.TEXT)])
def test_parse_log_format(value: str, expected: LogFormat) -> None:
    assert parse_log_format(value) is expected


def test_an_unknown_log_format_names_the_choices() -> None:
    with pytest.raises(ValueError, match="use one of: text, json"):
        parse_log_format("xml")


# --- secrets read at run time are masked everywhere redact() runs -------------------------------------------


@pytest.mark.parametrize(
    ("registered", "text", "expected"),
    [
        (
            ["Zq8~unusual-secret-value"],
            "AADSTS7000215: bad Zq8~unusual-secret-value",
            "AADSTS7000215: bad [redacted]",
        ),
        (["abc"], "abc is too short to mask", "abc is too short to mask"),
        (
            ["Tok3n-part", "Tok3n-part-and-more"],
            "url /hooks/Tok3n-part-and-more and Tok3n-part",
            "url /hooks/[redacted] and [redacted]",
        ),
        ([None, ""], "nothing registered", "nothing registered"),
    ],
)
def test_registered_secret_values_are_masked(
    registered: list[str | None], text: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import auditor.errors

    monkeypatch.setattr(auditor.errors, "_known_secrets", ())
    for value in registered:
        auditor.errors.register_secret(value)
    assert auditor.errors.redact(text) == expected
    assert auditor.errors.TenantError(auditor.errors.ErrorCode.AUTH_FAILED, text).message == expected


@pytest.mark.parametrize("log_format", list(LogFormat))
def test_log_lines_never_show_a_registered_secret(
    log_format: LogFormat, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import auditor.errors
    from auditor.output import logging_to_stderr

    monkeypatch.setattr(auditor.errors, "_known_secrets", ())
    auditor.errors.register_secret("s3cret-from-the-environment")
    with logging_to_stderr(verbose=True, log_format=log_format):
        log = logging.getLogger("auditor.test")
        log.warning("sign-in failed for s3cret-from-the-environment", extra={"tenant": "Contoso"})
        try:
            raise ValueError("library echoed s3cret-from-the-environment")
        except ValueError:
            log.debug("traceback", exc_info=True)
    err = capsys.readouterr().err
    assert "s3cret-from-the-environment" not in err
    assert err.count("[redacted]") >= 2 and "library echoed" in err


def test_a_python_warning_is_a_json_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    from auditor.output import logging_to_stderr

    with logging_to_stderr(log_format=LogFormat.JSON), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library is unhappy", DeprecationWarning, stacklevel=1)
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record["level"] == "warning" and "a library is unhappy" in record["message"]


@pytest.mark.parametrize(
    "name", ["Contoso\u2028Evil", "Line\x85Break", "Caf\u00e9 \U0001f600", "tab\tand\rCR"]
)
def test_hostile_tenant_names_stay_on_one_ascii_line(
    name: str, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    logger.info("%s: compliant", name, extra={"tenant": name})
    text = stream.getvalue()
    assert text.isascii() and len(text.splitlines()) == 1  # str.splitlines() splits on U+2028 and NEL too
    (record,) = lines(stream)
    assert record["tenant"] == name and record["message"] == f"{name}: compliant"
