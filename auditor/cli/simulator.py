"""`auditor simulator serve`: run the Graph simulator by hand."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from auditor.simulator import World

app = typer.Typer(help="The built-in Microsoft Graph + identity simulator.", no_args_is_help=True)


def _world(fixture: Path | None, generate: str | None) -> World:
    # Imported here: the simulator (aiohttp, cryptography) is not loaded by every `auditor` command.
    from auditor.simulator import FixtureError, load_fixture
    from auditor.simulator.fleet import FleetSpec, generate_fleet

    if (fixture is None) == (generate is None):
        raise typer.BadParameter("give exactly one of --fixture FILE or --generate TENANTSxUSERS")
    if fixture is not None:
        try:
            return load_fixture(fixture)
        except FixtureError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
    match = re.fullmatch(r"(\d+)x(\d+)", generate or "")
    if not match:
        raise typer.BadParameter("--generate takes TENANTSxUSERS, for example 100x2000")
    return generate_fleet(FleetSpec(tenants=int(match[1]), users=int(match[2])))


@app.command()
def serve(
    fixture: Annotated[Path | None, typer.Option(help="Fixture file (TOML) describing the tenants.")] = None,
    generate: Annotated[
        str | None, typer.Option(help="Serve a synthetic fleet instead, e.g. 100x2000.")
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8443,
    state_dir: Annotated[Path, typer.Option(help="Where the CA, certificates and credentials go.")] = Path(
        ".sim"
    ),
    replay: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Serve a capture (`auditor audit --capture DIR`) instead: the same audit gets the same answers.",
            show_default=False,
        ),
    ] = None,
    faults: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Fault mode: inject Graph's misbehaviour at this rate (0.1 = 10%): 429 with Retry-After, "
            "503 (r/2), dropped connections (r/3), slow answers (r/10), per-item 429/503 in $batch, lost "
            "answers to applied writes.",
        ),
    ] = 0.0,
    fault_seed: Annotated[int, typer.Option(help="Seed of the fault dice, to repeat a run exactly.")] = 0,
    slow_seconds: Annotated[
        float, typer.Option(min=0.0, help="How long a slow answer takes (beyond the client's time-out).")
    ] = 90.0,
    replication_delay: Annotated[
        float, typer.Option(min=0.0, help="Seconds a new role assignment stays invisible to reads.")
    ] = 0.0,
) -> None:
    """Serve identity and Graph over HTTPS until interrupted; prints the URLs and the CA file."""
    if replay is not None:
        if fixture is not None or generate is not None:
            raise typer.BadParameter("--replay DIR serves a capture: give it without --fixture or --generate")
        _serve_replay(replay, port, state_dir)
        return
    from auditor.simulator import FaultProfile, GraphSimulator

    world = _world(fixture, generate)
    if faults > 0 or replication_delay > 0:
        base = world.default_faults if isinstance(world.default_faults, FaultProfile) else FaultProfile()
        world.default_faults = base.mixed(
            faults, slow_seconds=slow_seconds, replication_delay_seconds=replication_delay
        )
    sim = GraphSimulator(world, port=port, state_dir=state_dir, seed=fault_seed).start()
    env_file = state_dir / "credentials.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"export {name}='{value}'\n" for name, value in sim.credentials.items())
    typer.echo(f"Graph simulator: {len(world.tenants)} tenants")
    typer.echo(f"  authority       {sim.authority}")
    typer.echo(f"  graph endpoint  {sim.graph_url}   (requests under /v1.0)")
    typer.echo(f"  token scope     {sim.scope}")
    typer.echo(f"  CA bundle       {sim.ca_file.resolve()}")
    typer.echo(
        "  in a config     [auth] allow_custom_endpoints = true  (the simulator is not a Microsoft host)"
    )
    if "IDENTITY_ENDPOINT" in sim.credentials:
        typer.echo(
            f"  managed identity {sim.identity_endpoint}  (IDENTITY_ENDPOINT; header in credentials.env)"
        )
    typer.echo(f"  credentials     {env_file.resolve()}  (source it; owner-only file)")
    typer.echo(f"  statistics      {sim.origin}/_simulator/stats")
    if faults > 0:
        typer.echo(f"  fault mode      rate {faults:g}, seed {fault_seed}, slow answers {slow_seconds:g} s")
    if replication_delay > 0:
        typer.echo(f"  replication     new role assignments visible after {replication_delay:g} s")
    _serve_until_stopped(sim.stop)


def _serve_replay(capture: Path, port: int, state_dir: Path) -> None:
    from auditor.graph.capture import CaptureError
    from auditor.simulator.replay import REPLAY_SECRET_ENV, ReplayServer

    try:
        server = ReplayServer(capture, port=port, state_dir=state_dir)
    except CaptureError as exc:
        typer.echo(f"error: --replay: {exc}", err=True)
        raise typer.Exit(2) from exc
    server.start()
    config_file = state_dir / "replay.toml"
    config_file.write_text(server.config_text() + "\n", encoding="utf-8")
    env_file = state_dir / "credentials.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:  # the replay checks no credential: any value signs in
        handle.write(f"export {REPLAY_SECRET_ENV}='replay'\n")
    manifest = server.manifest
    typer.echo(
        f"Replaying {capture} ({len(server.tenants)} tenants, captured {manifest.get('started')}"
        f"{', redacted' if manifest.get('redacted') else ''})"
    )
    typer.echo(f"  authority       {server.authority}")
    typer.echo(f"  graph endpoint  {server.graph_url}   (requests under /v1.0)")
    typer.echo(f"  CA bundle       {server.ca_file.resolve()}")
    typer.echo(f"  audit config    {config_file.resolve()}")
    typer.echo(f"  credentials     {env_file.resolve()}  (source it)")
    typer.echo(
        f"  statistics      {server.origin}/_replay/stats  (misses: requests the capture has no answer for)"
    )
    typer.echo(f"Audit it: auditor audit --config {config_file}")
    _serve_until_stopped(server.stop)


def _serve_until_stopped(stop_server: Callable[[], None]) -> None:
    """Wait for Ctrl+C or SIGTERM, then stop the server."""
    typer.echo("Press Ctrl+C to stop.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server()
