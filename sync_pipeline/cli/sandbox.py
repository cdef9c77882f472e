"""`sync-pipeline sandbox`: the sandbox APIs on loopback."""

from __future__ import annotations

import json
import signal
import threading
import urllib.parse
from typing import Any

import click
import httpx

from sync_pipeline.cli import context, devstack
from sync_pipeline.core.settings import (
    DEFAULT_SANDBOX_PORT,
    SANDBOX_CLIENT_ID,
)


def sandbox_athletes(url: str) -> list[dict[str, Any]]:
    """The Strava sandbox's athletes (its control route), in id order."""
    response = httpx.get(f"{url.rstrip('/')}/_sandbox/athletes", timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return sorted(result, key=lambda a: int(a["id"]))


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


@click.group(invoke_without_command=True)
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
@click.pass_context
def sandbox(
    ctx: click.Context,
    host: str,
    port: int | None,
    athletes: int,
    seed: int,
    time_scale: int,
    platforms: bool,
) -> None:
    """Run the sandbox APIs (Strava; GitHub, YouTube, X, Instagram) on loopback until Ctrl-C.

    `sandbox fault ...` injects failures into the running sandboxes.
    """
    if ctx.invoked_subcommand is not None:
        return
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


#: Fault kinds per sandbox (see each sandbox's app) and what each does there.
FAULT_HELP = {
    "5xx": "a server error; --status 5xx picks which",
    "timeout": "no answer for --delay s (default 30), then a gateway timeout",
    "slow": "the normal answer, --delay s late",
    "429": "the provider's rate-limit answer",
    "error": "--status (default 500) with the provider's error body",
    "secondary": "GitHub's secondary rate limit (403 with Retry-After)",
    "revoked": "revoke --account's grant now: its syncs need a reconnect",
    "deleted": "delete activity --activity now: full syncs remove it",
}
SANDBOX_FAULT_KINDS = {
    "strava": ("5xx", "timeout", "slow", "429", "revoked", "deleted"),
    "github": ("5xx", "timeout", "slow", "429", "error", "secondary"),
    "youtube": ("5xx", "timeout", "slow", "429", "error"),
    "x": ("5xx", "timeout", "slow", "429", "error"),
    "instagram": ("5xx", "timeout", "slow", "429", "error"),
}


def _kinds_help() -> str:
    """The kinds and the sandboxes knowing each, for `--help` (kept as written by click)."""
    lines = []
    for kind, text in FAULT_HELP.items():
        where = [n for n, kinds in SANDBOX_FAULT_KINDS.items() if kind in kinds]
        lines.append(f"  {kind:9} {text}")
        lines.append(f"  {'':9} ({'every sandbox' if len(where) == 5 else ', '.join(where)})")
    return "\b\nKinds:\n" + "\n".join(lines)


CONTROL_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


def _sandbox_url(name: str) -> str:
    """Where the named sandbox listens, from the settings (`.env`)."""
    s = context.settings()
    url = s.strava_base_url if name == "strava" else s.platforms.get(name, {}).get("base_url", "")
    host = urllib.parse.urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        variable = "STRAVA_BASE_URL" if name == "strava" else f"{name.upper()}_BASE_URL"
        raise click.ClickException(
            f"{variable} is {url or 'unset'}, not a sandbox on loopback; faults can only be "
            "injected into the sandboxes (`sync-pipeline init` writes their settings)."
        )
    return url.rstrip("/")


def _control(name: str, method: str, **kwargs: Any) -> Any:
    """One request to a sandbox's `/_sandbox/faults`; failures become click errors."""
    url = f"{_sandbox_url(name)}/_sandbox/faults"
    try:
        response = httpx.request(method, url, timeout=CONTROL_TIMEOUT, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"The {name} sandbox at {url} does not answer ({exc}); start it with "
            "`sync-pipeline sandbox` or `make demo`."
        ) from exc
    if response.status_code >= 400:
        try:
            reason = response.json().get("error") or response.text
        except ValueError:
            reason = response.text
        raise click.ClickException(f"The {name} sandbox refused: {reason}")
    return response.json()


SANDBOX_NAME = click.Choice(list(SANDBOX_FAULT_KINDS))


@sandbox.group("fault", epilog=_kinds_help())
def fault() -> None:
    """Inject failures into a running sandbox (to see a failed sync and recover it)."""


@fault.command("add", epilog=_kinds_help())
@click.argument("sandbox_name", metavar="SANDBOX", type=SANDBOX_NAME)
@click.argument("kind", metavar="KIND", type=click.Choice(list(FAULT_HELP)))
@click.option(
    "--count",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="How many requests it hits.",
)
@click.option("--account", help="Only requests of this Strava athlete id / sandbox account id.")
@click.option("--path-contains", help="Only requests whose path contains this.")
@click.option("--delay", type=click.FloatRange(0), default=0.0, help="Seconds (slow, timeout).")
@click.option("--status", type=click.IntRange(400, 599), help="HTTP status (5xx, error).")
@click.option("--activity", "activity_id", type=int, help="Strava activity id (deleted).")
def fault_add(
    sandbox_name: str,
    kind: str,
    count: int,
    account: str | None,
    path_contains: str | None,
    delay: float,
    status: int | None,
    activity_id: int | None,
) -> None:
    """Make the next COUNT requests to SANDBOX fail (or slow down) the KIND way."""
    if kind not in SANDBOX_FAULT_KINDS[sandbox_name]:
        raise click.BadParameter(
            f"the {sandbox_name} sandbox knows {', '.join(SANDBOX_FAULT_KINDS[sandbox_name])}",
            param_hint="KIND",
        )
    if kind == "revoked" and account is None:
        raise click.UsageError("revoked needs --account ATHLETE_ID.")
    if kind == "deleted" and activity_id is None:
        raise click.UsageError("deleted needs --activity ID.")
    body: dict[str, Any] = {"kind": kind, "count": count, "delay": delay}
    if path_contains:
        body["path_contains"] = path_contains
    if status is not None:
        body["status"] = status
    if account is not None:
        if sandbox_name == "strava":
            body["athlete_id"] = int(account) if account.isdigit() else account
        else:
            body["principal"] = account
    if activity_id is not None:
        body["activity_id"] = activity_id
    result = _control(sandbox_name, "POST", json=body)
    if result.get("id") is None:
        click.echo(f"{sandbox_name}: {kind} applied")
        return
    who = f" of {account}" if account else ""
    where = f" to paths containing {path_contains!r}" if path_contains else ""
    click.echo(
        f"{sandbox_name}: fault {result['id']} added: the next {count} request(s){who}{where} "
        f"get {kind}; clear with `sync-pipeline sandbox fault clear {sandbox_name}`"
    )


@fault.command("list")
@click.argument("sandbox_names", metavar="[SANDBOX]...", nargs=-1, type=SANDBOX_NAME)
@click.option("--json", "as_json", is_flag=True)
def fault_list(sandbox_names: tuple[str, ...], as_json: bool) -> None:
    """Faults waiting to fire, per sandbox (default: every sandbox)."""
    found = {name: _control(name, "GET") for name in sandbox_names or SANDBOX_FAULT_KINDS}
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for name, faults in found.items():
        if not faults:
            click.echo(f"{name}: no faults")
        for f in faults:
            who = f.get("principal") or f.get("athlete_id")
            click.echo(
                f"{name}: fault {f['id']} {f['kind']}, {f['remaining']} more"
                + (f", account {who}" if who is not None else "")
                + (f", paths containing {f['path_contains']!r}" if f.get("path_contains") else "")
                + (f", delay {f['delay']} s" if f.get("delay") else "")
                + (f", status {f['status']}" if f.get("status") else "")
            )


@fault.command("clear")
@click.argument("sandbox_names", metavar="[SANDBOX]...", nargs=-1, type=SANDBOX_NAME)
def fault_clear(sandbox_names: tuple[str, ...]) -> None:
    """Drop the faults waiting to fire (default: in every sandbox)."""
    for name in sandbox_names or SANDBOX_FAULT_KINDS:
        cleared = _control(name, "DELETE").get("cleared", 0)
        click.echo(f"{name}: {cleared} fault(s) cleared")
