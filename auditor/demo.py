"""`auditor demo`: the whole product on a fresh machine, with no Microsoft account.

It starts the built-in Graph simulator serving the demo fleet (``config/demo-fleet.toml``: made-up
tenants that together show every verdict), writes an ordinary auditor config pointing at it
(``demo-config.toml`` in the output directory), and runs exactly what `auditor audit` runs. The fleet
has gaps and errors on purpose, so the demo exits 0 when the audit completed and says which exit code
`auditor audit` would have given; it exits non-zero only when the demo itself fails.

The simulator's credentials (fresh at every start) reach the audit through environment variables set
in this process only, for the duration of the run, exactly as a scheduler would provide them; they are
never printed or written to the config file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, TextIO

import auditor
from auditor.app import DEFAULT_DEMO_OUT_DIR, AuditOptions, AuditorFactory, audit, exit_code_meaning
from auditor.constants import ExitCode
from auditor.errors import AuditorError, ErrorCode
from auditor.reporting import prepare_out_dir
from auditor.reporting.atomic import atomic_write_text
from auditor.simulator import FixtureError, GraphSimulator
from auditor.simulator.fixtures import DEFAULT_VENDOR, load_fixture_with_data

__all__ = [
    "DEFAULT_DEMO_OUT_DIR",
    "DEMO_CONFIG_NAME",
    "DemoError",
    "DemoOptions",
    "demo_config_text",
    "demo_fixture_path",
    "run_demo",
]

log = logging.getLogger(__name__)

DEMO_CONFIG_NAME: Final = "demo-config.toml"

# The fixture's apps (by env_prefix) the demo config signs in as.
_AUDITOR_PREFIX: Final = "USS_DEMO_AUDITOR"
_RELECLOUD_PREFIX: Final = "USS_DEMO_RELECLOUD"
# The tenant that signs in with a rotated-out secret, so the demo shows an AUTH_FAILED error.
_FAILING_SIGNIN_TENANT: Final = "relecloud"


class DemoError(AuditorError):
    """The demo itself cannot run (its fixture is missing or broken): exit code 2."""

    exit_code: ClassVar[int] = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message, code=ErrorCode.CONFIG_ERROR, hint=hint)


class SimulatorStartError(DemoError):
    """The Graph simulator could not start (no free port, TLS set-up failed): exit code 3."""

    exit_code: ClassVar[int] = ExitCode.TENANT_ERROR


@dataclass(frozen=True)
class DemoOptions:
    """What `auditor demo` was asked to do."""

    out_dir: Path = DEFAULT_DEMO_OUT_DIR
    fixture: Path | None = None  # the simulator fixture; None: config/demo-fleet.toml


def demo_fixture_path(path: Path | None = None) -> Path:
    """The fixture the demo serves: ``path`` if given, else ``config/demo-fleet.toml`` next to the package
    (a source checkout or an editable install).

    Raises :class:`DemoError` when it is not there.
    """
    if path is None:
        package = Path(auditor.__file__).resolve().parent
        # A source checkout's config/ first; an installed wheel ships the same file as auditor/demo_data/.
        candidates = (
            package.parent / "config" / "demo-fleet.toml",
            package / "demo_data" / "demo-fleet.toml",
        )
        path = next((c for c in candidates if c.is_file()), candidates[0])
    if not path.is_file():
        raise DemoError(
            f"the demo fleet fixture is missing: {path}",
            hint="Run the demo from a source checkout of uss-auditor (`make demo`), where "
            "config/demo-fleet.toml exists.",
        )
    return path


def run_demo(
    options: DemoOptions,
    *,
    auditor_factory: AuditorFactory | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Start the simulator, write the demo config into ``options.out_dir``, run the audit against it
    and print where the reports are. Returns 0 when the audit completed (whatever it found).

    Raises :class:`DemoError` (exit 2) when the fixture is missing or broken or the output directory is
    unusable, :class:`SimulatorStartError` (exit 3) when the simulator cannot start. The simulator is
    always stopped before returning.
    """
    out = stdout if stdout is not None else sys.stdout
    fixture_path = demo_fixture_path(options.fixture)
    try:
        world, fixture = load_fixture_with_data(fixture_path)
    except (FixtureError, OSError) as exc:
        raise DemoError(
            f"the demo fleet fixture cannot be used: {exc}", hint="Restore config/demo-fleet.toml."
        ) from None
    out_dir = prepare_out_dir(options.out_dir)

    sim = GraphSimulator(world)
    try:
        sim.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            sim.stop()
        raise SimulatorStartError(
            f"the Graph simulator could not start: {type(exc).__name__}: {exc}",
            hint="Check that 127.0.0.1 accepts local connections and re-run with --verbose.",
        ) from exc
    try:
        out.write(
            f"uss-auditor demo: the built-in Graph simulator serves {len(world.tenants)} made-up tenants "
            f"at {sim.origin} (no Microsoft account involved).\n"
            "The demo fleet has gaps and errors on purpose, to show every verdict the audit can reach.\n\n"
        )
        out.flush()
        config_path = atomic_write_text(out_dir / DEMO_CONFIG_NAME, demo_config_text(sim, fixture))
        with _environment(sim.credentials):
            outcome = audit(
                AuditOptions(config=config_path, out_dir=out_dir),
                auditor_factory=auditor_factory,
                stdout=out,
            )
    finally:
        sim.stop()
    out.write(
        f"\nThe demo completed. On this fleet `auditor audit` exits with {outcome.exit_code} "
        f"({exit_code_meaning(outcome.exit_code)}): that is expected here.\n"
        f"The config the demo audited with is {config_path.resolve()} (its simulator has stopped; "
        "`auditor simulator serve --fixture config/demo-fleet.toml` runs one by hand).\n"
    )
    out.flush()
    return int(ExitCode.OK)


def demo_config_text(sim: GraphSimulator, fixture: Mapping[str, Any]) -> str:
    """An auditor config (TOML) for the simulator's fleet.

    The vendor is identified by publisher only (no pinned ``app_id``), so the tenant holding two vendor
    service principals is ``ambiguous``; the Relecloud tenant signs in as its own app with the
    rotated-out secret, so it fails sign-in (``AUTH_FAILED``). Secrets are named, never included.
    """
    vendor = {**DEFAULT_VENDOR, **fixture.get("vendor", {})}
    auditor_app = _app(sim, _AUDITOR_PREFIX)
    relecloud_app = _app(sim, _RELECLOUD_PREFIX)
    fixture_tenants = list(fixture.get("tenants", ()))
    served = list(sim.world.tenants.values())  # in fixture order
    if len(fixture_tenants) != len(served):
        raise DemoError("the demo fleet fixture and the simulator disagree on the tenants")
    lines = [
        "# Written by `auditor demo` for its Graph simulator; secrets come from the environment.",
        "",
        "[vendor]",
        f"app_display_name = {_toml(vendor['display_name'])}",
        'app_id = ""',
        f"publisher_tenant_id = {_toml(vendor['publisher_tenant_id'])}",
        "",
        "[billing]",
        "price_per_mailbox = 2.50",
        'currency = "GBP"',
        "",
        "[run]",
        "concurrency = 8",
        "tenant_timeout_seconds = 120",
        "",
        "[auth]",
        f"client_id = {_toml(auditor_app)}",
        'method = "secret"',
        f"client_secret_env = {_toml(_AUDITOR_PREFIX + '_SECRET')}",
        f"authority = {_toml(sim.authority)}",
        f"graph_endpoint = {_toml(sim.graph_url)}",
        f"ca_bundle = {_toml(str(sim.ca_file))}",
    ]
    for spec, tenant in zip(fixture_tenants, served, strict=True):
        key = str(spec.get("key", ""))
        lines += [
            "",
            "[[tenants]]",
            f"name = {_toml(tenant.display_name)}",
            f"tenant_id = {_toml(tenant.tenant_id)}",
            f"tags = [{_toml('demo')}, {_toml(key)}]",
        ]
        if key == _FAILING_SIGNIN_TENANT:
            lines += [
                "# The customer's own app, with the secret it has rotated since: fails sign-in on purpose.",
                f"client_id = {_toml(relecloud_app)}",
                f"client_secret_env = {_toml(_RELECLOUD_PREFIX + '_PREVIOUS_SECRET')}",
            ]
    return "\n".join(lines) + "\n"


def _app(sim: GraphSimulator, env_prefix: str) -> str:
    for app in sim.world.apps.values():
        if app.env_prefix == env_prefix:
            return app.client_id
    raise DemoError(f"the demo fleet fixture has no app with env_prefix {env_prefix}")


def _toml(value: str) -> str:
    # A JSON string is a valid TOML basic string (same escapes), and keeps non-ASCII as is.
    return json.dumps(value, ensure_ascii=False)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables in this process for the block, then restore what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = previous
