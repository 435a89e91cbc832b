"""The retry policy's pure parts, the run limits in the config, the fault mode's mix, the tenant deadline."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditor.cli.main import app
from auditor.config import RemediationSettings, RunSettings, load_config
from auditor.deadline import current_deadline, tenant_deadline
from auditor.errors import ConfigError
from auditor.graph.reader import RetryPolicy
from auditor.runner import give_up_margin
from auditor.simulator import FaultProfile
from tests.unit.test_config import AUTH, TENANT, write


@pytest.mark.parametrize(
    ("failures", "cap"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (5, 16.0), (6, 30.0), (60, 30.0), (10_000, 30.0)],
)
def test_backoff_is_full_jitter_under_an_exponential_cap(failures: int, cap: float) -> None:
    random.seed(failures)
    waits = [RetryPolicy().backoff(failures) for _ in range(2000)]
    assert all(0.0 <= w <= cap for w in waits)
    # Full jitter: spread over the whole range, not bunched at the cap (a fleet does not retry in step).
    assert min(waits) < 0.1 * cap and max(waits) > 0.9 * cap
    assert abs(sum(waits) / len(waits) - cap / 2) < 0.1 * cap


def test_the_runner_leaves_the_reader_time_to_say_why() -> None:
    assert give_up_margin(600) == 2.0
    assert give_up_margin(6) == pytest.approx(0.3)
    assert 0 < give_up_margin(0.5) < 0.5


async def test_the_deadline_belongs_to_the_task_that_set_it() -> None:
    assert current_deadline() is None

    async def tenant(seconds: float) -> float:
        with tenant_deadline(seconds, budget=seconds + 1):
            await asyncio.sleep(0.01)
            deadline = current_deadline()
            assert deadline is not None and deadline.seconds == seconds + 1
            return deadline.left()

    short, long = await asyncio.gather(tenant(1.0), tenant(100.0))
    assert 0 < short <= 1.0 and 98 < long <= 100.0
    assert current_deadline() is None


def test_run_limits_default_and_parse(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, AUTH + TENANT))
    assert config.run == RunSettings(8, 600.0, 60.0)
    assert config.remediation == RemediationSettings(60.0)
    text = (
        "[run]\ntenant_timeout_seconds = 30\nrequest_timeout_seconds = 2.5\n"
        "[remediation]\nverify_timeout_seconds = 0\n" + AUTH + TENANT
    )
    config = load_config(write(tmp_path, text))
    assert config.run.request_timeout_seconds == 2.5 and config.remediation.verify_timeout_seconds == 0.0
    # Unset, it is 60 s or the tenant's whole time when that is shorter.
    config = load_config(write(tmp_path, "[run]\ntenant_timeout_seconds = 20\n" + AUTH + TENANT))
    assert config.run.request_timeout_seconds == 20.0


@pytest.mark.parametrize(
    ("section", "key_path", "words"),
    [
        ("[run]\nrequest_timeout_seconds = 0", "run.request_timeout_seconds", "positive number"),
        ("[run]\nrequest_timeout_seconds = true", "run.request_timeout_seconds", "positive number"),
        (
            "[run]\ntenant_timeout_seconds = 10\nrequest_timeout_seconds = 11",
            "run.request_timeout_seconds",
            "at most run.tenant_timeout_seconds (10)",
        ),
        (
            "[remediation]\nverify_timeout_seconds = -1",
            "remediation.verify_timeout_seconds",
            "from 0 to 3600",
        ),
        (
            "[remediation]\nverify_timeout_seconds = 'soon'",
            "remediation.verify_timeout_seconds",
            "from 0 to 3600",
        ),
        ("[remediation]\nverify_timout_seconds = 5", "verify_timout_seconds", "verify_timeout_seconds"),
    ],
)
def test_run_limits_refuse_bad_values_with_one_clear_message(
    tmp_path: Path, section: str, key_path: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, section + "\n" + AUTH + TENANT))
    message = str(info.value)
    assert key_path in message and words in message


def test_the_fault_mode_mix() -> None:
    base = FaultProfile(latency_ms=2, mailbox_concurrency=4, routes=("users.list",))
    mix = base.mixed(0.3, slow_seconds=5)
    assert (mix.throttle_rate, mix.retry_after_seconds) == (0.3, 1)  # 429 with Retry-After: 1, and in $batch
    assert (
        mix.error_rate == pytest.approx(0.15) and mix.error_statuses == (503,) and not mix.error_retry_after
    )
    assert mix.reset_rate == pytest.approx(0.1) and mix.slow_rate == pytest.approx(0.03)
    assert mix.slow_seconds == 5 and mix.batch_items and mix.lost_write_rate == 0.3
    assert mix.latency_ms == 2 and mix.mailbox_concurrency == 4 and mix.routes == ()  # kept / widened
    assert FaultProfile.mix(0.0) == FaultProfile().mixed(0.0)
    with pytest.raises(ValueError, match="fraction from 0 to 1"):
        FaultProfile.mix(1.5)


@pytest.mark.parametrize("rate", ["1.5", "-0.1"])
def test_simulator_serve_refuses_a_fault_rate_outside_0_to_1(rate: str) -> None:
    began = time.monotonic()
    result = CliRunner().invoke(app, ["simulator", "serve", "--generate", "1x1", "--faults", rate])
    assert result.exit_code == 2 and "--faults" in result.output
    assert time.monotonic() - began < 10
