"""`sync-pipeline sandbox`: the sandbox APIs on loopback."""

from __future__ import annotations

import signal
import threading
import urllib.parse
from typing import Any

import click

from sync_pipeline.cli import context, devstack
from sync_pipeline.core.settings import (
    DEFAULT_SANDBOX_PORT,
    SANDBOX_CLIENT_ID,
)


def start_sandbox(
    *,
    host: str,
    port: int,
    port_option: str,
    athletes: int,
    seed: int,
    time_scale: float,
    client_secret: str,
) -> Any:
    """Start the Strava sandbox; `port_option` is the option of the command that set `port`."""
    from sync_pipeline.sandbox.server import SandboxServer
    from sync_pipeline.sandbox.strava.app import create_app
    from sync_pipeline.sandbox.strava.state import StravaSandboxConfig, StravaSandboxState

    config = StravaSandboxConfig(
        seed=seed,
        athletes=athletes,
        client_id=SANDBOX_CLIENT_ID,
        client_secret=client_secret,
        time_scale=time_scale,
    )
    server = SandboxServer(create_app(StravaSandboxState(config)), host=host, port=port)
    try:
        return server.start()
    except OSError as exc:
        raise click.ClickException(
            f"Cannot start the Strava sandbox on {host}:{port} ({exc}); "
            f"is another one running? Pick another port with {port_option}."
        ) from exc


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    type=int,
    help=f"Strava sandbox port [default: the port of STRAVA_BASE_URL in .env, else "
    f"{DEFAULT_SANDBOX_PORT}]",
)
@click.option("--athletes", default=8, show_default=True, type=click.IntRange(0, 100_000))
@click.option("--seed", default=42, show_default=True)
@click.option(
    "--time-scale", default=1, show_default=True, type=click.IntRange(1), help="Compress time."
)
@click.option(
    "--platforms/--no-platforms",
    default=True,
    show_default=True,
    help="Also run the GitHub, YouTube, X and Instagram sandboxes (ports from .env).",
)
def sandbox(
    host: str, port: int | None, athletes: int, seed: int, time_scale: int, platforms: bool
) -> None:
    """Run the sandbox APIs (Strava; GitHub, YouTube, X, Instagram) on loopback until Ctrl-C."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise click.BadParameter("the sandbox listens on loopback only", param_hint="--host")
    if port is None:
        port = _sandbox_port(context.settings().strava_base_url)
    # SIGTERM stops the servers cleanly from the moment they can answer a request.
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        _serve_sandboxes(host, port, athletes, seed, time_scale, platforms, stop)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sandbox_port(strava_base_url: str) -> int:
    """The port of a loopback STRAVA_BASE_URL (where `init` pointed it), else the default."""
    url = urllib.parse.urlsplit(strava_base_url)
    if url.hostname in ("127.0.0.1", "localhost", "::1") and url.port:
        return url.port
    return DEFAULT_SANDBOX_PORT


def _serve_sandboxes(
    host: str,
    port: int,
    athletes: int,
    seed: int,
    time_scale: int,
    platforms: bool,
    stop: threading.Event,
) -> None:
    """Start the sandboxes, wait for `stop` (or Ctrl-C), stop them."""
    s = context.settings()
    server = start_sandbox(
        host=host,
        port=port,
        port_option="--port",
        athletes=athletes,
        seed=seed,
        time_scale=time_scale,
        client_secret=s.strava_client_secret or "sandbox-secret",
    )
    click.echo(f"Strava sandbox on {server.url} ({athletes} athletes)")
    stack = devstack.DevStack()
    try:
        if platforms:
            devstack.start_platform_sandboxes(s, stack)
            for name, running in stack.platforms.items():
                click.echo(f"{name} sandbox on {running.url}")
        click.echo("Ctrl-C stops them")
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        server.stop()
