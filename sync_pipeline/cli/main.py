"""`sync-pipeline`: the project's own CLI (set-up, sandbox, athletes, syncs, status)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import click
import dagster as dg

from sync_pipeline.cli import context, devstack
from sync_pipeline.core import db, priorities
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.errors import SyncError
from sync_pipeline.core.settings import (
    DEFAULT_SANDBOX_PORT,
    PLATFORM_PORTS,
    SANDBOX_CLIENT_ID,
    Settings,
)

SOURCES = ["strava", *PLATFORM_PORTS]
#: Colour codes in Dagster's log lines (shown when a launch fails).
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@click.group()
def cli() -> None:
    """Keep per-user data from rate-limited APIs in sync, orchestrated by Dagster."""


@cli.command()
@click.option("--sandbox-port", default=DEFAULT_SANDBOX_PORT, show_default=True)
@click.option("--force", is_flag=True, help="Rewrite .env with new sandbox defaults.")
def init(sandbox_port: int, force: bool) -> None:
    """Create .env (sandbox defaults), the Dagster home and the app database schema."""
    s = context.init_home(sandbox_port=sandbox_port, force_env=force)
    click.echo(f"home: {s.home}\nDAGSTER_HOME: {s.dagster_home}")
    click.echo(f"app database: {db.redact_url(s.database_url)} at revision {db.head_revision()}")


@cli.command()
def keygen() -> None:
    """Print a new token encryption key for SYNC_TOKEN_KEY."""
    click.echo(generate_key())


@cli.group("db")
def db_group() -> None:
    """App database schema migrations (Alembic)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or upgrade the app database schema."""
    s = context.settings()
    db.upgrade(s.database_url, revision)
    click.echo(
        f"{db.redact_url(s.database_url)} is at revision {db.current_revision(s.database_url)}"
    )


@db_group.command("current")
def db_current() -> None:
    """Show the schema revision of the app database and of the code."""
    s = context.settings()
    click.echo(f"database: {db.current_revision(s.database_url)}  code: {db.head_revision()}")


def _start_sandbox(
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


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_SANDBOX_PORT, show_default=True)
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
    host: str, port: int, athletes: int, seed: int, time_scale: int, platforms: bool
) -> None:
    """Run the sandbox APIs (Strava; GitHub, YouTube, X, Instagram) on loopback until Ctrl-C."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise click.BadParameter("the sandbox listens on loopback only", param_hint="--host")
    # SIGTERM stops the servers cleanly from the moment they can answer a request.
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        _serve_sandboxes(host, port, athletes, seed, time_scale, platforms, stop)
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    server = _start_sandbox(
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


@cli.group()
def athletes() -> None:
    """Connect, list and disconnect Strava athletes."""


@athletes.command("connect")
@click.option(
    "--sandbox-athlete",
    "sandbox_ids",
    multiple=True,
    type=int,
    help="Sandbox athlete id to connect (repeatable); sandbox only.",
)
@click.option("--count", default=0, type=click.IntRange(0), help="Connect N sandbox athletes.")
@click.option("--browser", is_flag=True, help="Print the consent URL and wait for a person.")
@click.option("--port", default=0, help="Local port for the OAuth redirect (0: any).")
def athletes_connect(sandbox_ids: tuple[int, ...], count: int, browser: bool, port: int) -> None:
    """Connect athletes through Strava's OAuth flow (auto-approved on the sandbox)."""
    from sync_pipeline.defs.strava.athletes import connect_via_oauth

    strava = context.strava(context.settings())
    ids: list[int | None] = list(sandbox_ids) or [None] * max(count, 1)
    try:
        for sandbox_id in ids:
            athlete_id = connect_via_oauth(
                strava,
                redirect_port=port,
                auto_approve=not browser,
                sandbox_athlete_id=sandbox_id,
                on_url=lambda url: click.echo(f"Open this URL to authorize:\n{url}"),
            )
            click.echo(f"connected athlete {athlete_id}")
    except SyncError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        strava.close()


@athletes.command("list")
@click.option("--json", "as_json", is_flag=True)
def athletes_list(as_json: bool) -> None:
    """List athletes, their connection state and last sync."""
    from sync_pipeline.defs.strava.athletes import list_athletes

    rows = list_athletes(context.app_db(context.settings()).url)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], default=str, indent=2))
        return
    click.echo(f"{'id':>10}  {'name':24} {'state':16} {'acts':>6}  {'sync':10} last success")
    for r in rows:
        last = r.last_success_at.strftime("%Y-%m-%d %H:%M") if r.last_success_at else "-"
        click.echo(
            f"{r.id:>10}  {r.name[:24]:24} {r.state:16} {r.activities:>6}  "
            f"{r.sync_status:10} {last}" + (f"  ({r.last_error[:80]})" if r.last_error else "")
        )


@athletes.command("disconnect")
@click.argument("athlete_id", type=int)
@click.option("--no-revoke", is_flag=True, help="Do not call Strava's deauthorize endpoint.")
def athletes_disconnect(athlete_id: int, no_revoke: bool) -> None:
    """Revoke access and delete an athlete's tokens and data (the partition goes too)."""
    from sync_pipeline.defs.strava.athletes import disconnect

    strava = context.strava(context.settings())
    try:
        if not disconnect(strava, athlete_id, revoke=not no_revoke):
            raise click.ClickException(
                f"No athlete {athlete_id}; see `sync-pipeline athletes list`."
            )
    finally:
        strava.close()
    click.echo(f"disconnected athlete {athlete_id}; the partition sensor removes its partition")


@cli.group()
def sync() -> None:
    """Queue syncs in Dagster's run queue, or run them in-process with --direct."""


def _launch(
    s: Settings,
    job: str,
    *,
    tags: dict[str, str],
    run_config: dict[str, Any],
    grpc_host: str | None = None,
    grpc_port: int | None = None,
) -> str:
    """Queue a run with `dagster job launch` (the same path a person uses); return its run id.

    The launch sees exactly this command's settings: an explicit environment (DAGSTER_HOME
    etc. as resolved here), run from the Dagster home, never from the project root, whose
    `.env` Dagster would load over that environment. The code location comes from the
    project's workspace.yaml (a code server is spawned for the launch), or from a running code
    server: `grpc_host`/`grpc_port`, else SYNC_CODE_SERVER=host:port. Dagster's own output is
    shown only when the launch fails.
    """
    env = context.launch_env(s)
    home = Path(env["DAGSTER_HOME"])
    if (home / ".env").exists():
        raise click.ClickException(
            f"{home / '.env'} would override the settings of `dagster job launch`, which runs "
            "in the Dagster home; move that file out of the Dagster home."
        )
    named_by = "grpc_host/grpc_port"
    if grpc_host is None and grpc_port is None and (found := context.code_server()):
        (grpc_host, grpc_port), named_by = found, context.CODE_SERVER_VARIABLE
    elif grpc_host is None and grpc_port is None and (found := devstack.running_code_server(s)):
        (grpc_host, grpc_port), named_by = found, "the running `sync-pipeline dev`"
    run_id = str(uuid.uuid4())
    with tempfile.TemporaryDirectory(prefix="sync-pipeline-launch-") as tmp:
        if grpc_port is None:
            workspace, source = context.workspace_file(), "the project's workspace.yaml"
        else:
            host = grpc_host or "localhost"
            workspace = _code_server_workspace(Path(tmp), host, grpc_port, named_by)
            source = f"the code server at {host}:{grpc_port} ({named_by})"
        cmd = [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "launch",
            "-w",
            str(workspace),
            "-j",
            job,
            "--run-id",
            run_id,
            "--tags",
            json.dumps(tags),
            "--config-json",
            json.dumps(run_config),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=home, env=env, check=False)
    if proc.returncode != 0:
        output = ANSI_ESCAPE.sub("", "\n".join((proc.stdout.strip(), proc.stderr.strip())))
        tail = "\n".join(output.strip().splitlines()[-40:])[-4000:]
        raise click.ClickException(
            f"Could not queue {job} (`dagster job launch` with {source}, Dagster home {home}, "
            f"exit {proc.returncode}); the end of Dagster's output:\n{tail}"
        )
    return run_id


def _code_server_workspace(directory: Path, host: str, port: int, named_by: str) -> Path:
    """A workspace file loading the project's code location from a running code server.

    The location keeps the name workspace.yaml gives it (`--grpc-host`/`--grpc-port` would
    name it `grpc:HOST:PORT`): the daemon finds a queued run's code by that name.
    """
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise click.ClickException(
            f"Cannot reach the Dagster code server at {host}:{port} ({exc}), named by "
            f"{named_by}. Start it (`dagster code-server start -m sync_pipeline.definitions "
            f"-h {host} -p {port}`, in the daemon's environment)"
            + (
                f" or unset {named_by} to load the code for each launch."
                if named_by == context.CODE_SERVER_VARIABLE
                else "."
            )
        ) from exc
    server = {"host": host, "port": port, "location_name": context.code_location_name()}
    path = directory / "workspace.yaml"
    path.write_text(json.dumps({"load_from": [{"grpc_server": server}]}))  # JSON is YAML
    return path


def _echo_queued(run_id: str, job: str, tags: dict[str, str]) -> None:
    """One line per queued run: its id, what it syncs and where to follow it."""
    what = [job]
    if partition := tags.get("dagster/partition"):
        source = tags.get(priorities.SOURCE_TAG, "")
        what.append(f"{'athlete' if source == 'strava' else 'user'} {partition}")
    what.append(f"priority {tags.get(priorities.PRIORITY_TAG, '0')}")
    click.echo(f"queued run {run_id} ({', '.join(what)}); follow it in the UI at /runs/{run_id}")


def _queue(s: Settings, job: str, *, tags: dict[str, str], run_config: dict[str, Any]) -> str:
    """Launch a run and print its line; return its id."""
    run_id = _launch(s, job, tags=tags, run_config=run_config)
    _echo_queued(run_id, job, tags)
    return run_id


@sync.command("strava")
@click.option("--athlete", "athlete_id", type=int, help="One athlete (Strava id).")
@click.option("--all", "all_athletes", is_flag=True, help="Every connected athlete.")
@click.option("--full", is_flag=True, help="Full re-sync instead of incremental.")
@click.option("--priority", type=int, help="Run priority (default 10 for one athlete, 0 for all).")
@click.option("--direct", is_flag=True, help="Run in this process now, bypassing the queue.")
@click.option(
    "--activity",
    "activity_ids",
    type=int,
    multiple=True,
    help="With --athlete: also fetch this activity in detail with its streams and match it "
    "to streets (as a push event does). Repeatable.",
)
def sync_strava(
    athlete_id: int | None,
    all_athletes: bool,
    full: bool,
    priority: int | None,
    direct: bool,
    activity_ids: tuple[int, ...],
) -> None:
    """Sync one athlete (--athlete ID) or all of them (--all)."""
    from sync_pipeline.core.batching import sweep_shards
    from sync_pipeline.defs.strava.athletes import connected_athlete_ids
    from sync_pipeline.defs.strava.partitions import strava_athletes
    from sync_pipeline.defs.strava.source import STRAVA, strava_defs

    if (athlete_id is None) == (not all_athletes):
        raise click.UsageError("Give exactly one of --athlete ID or --all.")
    if activity_ids and athlete_id is None:
        raise click.UsageError("--activity needs --athlete (the activity's owner).")
    s = context.settings()
    strava = context.strava(s)
    if athlete_id is not None:
        known = connected_athlete_ids(strava.app_db.url)
        if athlete_id not in known:
            raise click.ClickException(
                f"Athlete {athlete_id} is not connected; see `sync-pipeline athletes list`."
            )
        prio = priorities.MANUAL if priority is None else priority
        tags = {**priorities.run_tags(prio, "strava", "cli"), "dagster/partition": str(athlete_id)}
        op_config = {"full": full, "activity_ids": sorted(set(activity_ids))}
        run_config: dict[str, Any] = {"ops": {"strava_activities": {"config": op_config}}}
        with context.dagster_instance(s) as instance:
            name = strava_athletes.name or ""
            if not instance.has_dynamic_partition(name, str(athlete_id)):
                instance.add_dynamic_partitions(name, [str(athlete_id)])
            if direct:
                result = dg.materialize(
                    [strava_defs.asset],
                    partition_key=str(athlete_id),
                    resources={"strava": strava},
                    instance=instance,
                    run_config=run_config,
                    tags=tags,
                    raise_on_error=False,
                )
                _report_direct(result)
                return
        _queue(s, STRAVA.single_job_name, tags=tags, run_config=run_config)
        return
    n = len(connected_athlete_ids(strava.app_db.url, include_needs_reconnect=False))
    if n == 0:
        raise click.ClickException("No connected athletes; connect some with `athletes connect`.")
    prio = priorities.BATCH if priority is None else priority
    shards = sweep_shards(n)  # as the sweep schedules shard
    for shard in range(shards):
        run_config = STRAVA.sweep_run_config(shard=shard, shards=shards, full=full)
        tags = priorities.run_tags(prio, "strava", "cli")
        if direct:
            with context.dagster_instance(s) as instance:
                result = strava_defs.sweep_job.execute_in_process(
                    run_config=run_config,
                    resources={"strava": strava},
                    instance=instance,
                    tags=tags,
                    raise_on_error=False,
                )
            _report_direct(result)
        else:
            _queue(s, STRAVA.sweep_job_name, tags=tags, run_config=run_config)


def _platform_sync_command(platform: str) -> click.Command:
    """`sync-pipeline sync <platform> (--user ID | --all) [--priority N] [--direct]`."""

    @click.option("--user", "user_id", help="One user.")
    @click.option("--all", "all_users", is_flag=True, help="Every user connected to it.")
    @click.option("--priority", type=int, help="Run priority (default 10 for one user, 0 all).")
    @click.option("--direct", is_flag=True, help="Run in this process now, bypassing the queue.")
    def command(user_id: str | None, all_users: bool, priority: int | None, direct: bool) -> None:
        from sync_pipeline.defs.users.accounts import connected_user_ids
        from sync_pipeline.defs.users.partitions import users
        from sync_pipeline.sources import defs_of

        if (user_id is None) == (not all_users):
            raise click.UsageError("Give exactly one of --user ID or --all.")
        s = context.settings()
        client = context.platform_client(s, platform)
        connected = connected_user_ids(client.app_db.url, platform)
        if user_id is not None and user_id not in connected:
            raise click.ClickException(
                f"User {user_id!r} has no working {platform} connection; see "
                "`sync-pipeline users list`."
            )
        if not connected:
            raise click.ClickException(f"No users are connected to {platform}.")
        keys = [user_id] if user_id is not None else connected
        prio = (
            (priorities.MANUAL if user_id else priorities.BATCH) if priority is None else priority
        )
        tags = priorities.run_tags(prio, platform, "cli")
        built = defs_of(platform)
        run_config = built.source.sweep_run_config(keys=keys)
        if not direct:
            if user_id is not None:
                tags = {**tags, "dagster/partition": user_id}
                _queue(s, built.source.single_job_name, tags=tags, run_config={})
            else:
                _queue(s, built.source.sweep_job_name, tags=tags, run_config=run_config)
            return
        with context.dagster_instance(s) as instance:
            missing = [k for k in keys if not instance.has_dynamic_partition(users.name or "", k)]
            if missing:
                instance.add_dynamic_partitions(users.name or "", missing)
            result = built.sweep_job.execute_in_process(
                run_config=run_config,
                resources={platform: client, "app_db": client.app_db},
                instance=instance,
                tags=tags,
                raise_on_error=False,
            )
        _report_direct(result)

    command.__doc__ = f"Sync users' {platform} activity (--user ID or --all)."
    return click.command(platform)(command)


for _platform in PLATFORM_PORTS:
    sync.add_command(_platform_sync_command(_platform))


def _report_direct(result: Any) -> None:
    for event in result.all_events:
        if event.event_type_value in ("ASSET_MATERIALIZATION", "ASSET_OBSERVATION"):
            data = event.event_specific_data
            mat = getattr(data, "materialization", None) or getattr(data, "asset_observation", None)
            if mat is None:
                continue
            md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
            name = mat.asset_key.to_user_string() if hasattr(mat, "asset_key") else "asset"
            click.echo(f"{name} {mat.partition}: {json.dumps(md, default=str)}")
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        msg = failure.event_specific_data.error.message if failure else "run failed"
        raise click.ClickException(f"sync failed (run {result.run_id}): {msg.strip()}")
    click.echo(f"run {result.run_id} succeeded")


@cli.command()
@click.option("--athletes", "n_athletes", default=8, show_default=True, type=click.IntRange(1, 500))
@click.option("--port", default=3000, show_default=True, help="Dagster UI port.")
@click.option("--sandbox-port", default=DEFAULT_SANDBOX_PORT, show_default=True)
@click.option(
    "--code-port",
    default=4266,
    show_default=True,
    help="Port of the Dagster code server shared by the UI, the daemon and launches.",
)
def dev(n_athletes: int, port: int, sandbox_port: int, code_port: int) -> None:
    """The main job: sandbox + demo athletes + `dagster dev` (UI and daemon); Ctrl-C stops all."""
    from sync_pipeline.defs.strava.athletes import connect_via_oauth

    s = context.init_home(sandbox_port=sandbox_port)
    if not s.strava_base_url.startswith("http://127.0.0.1"):
        raise click.ClickException(
            "`dev` runs against the sandbox; .env points STRAVA_BASE_URL elsewhere. "
            "Use `dagster dev` directly for a real deployment."
        )
    server = _start_sandbox(
        host="127.0.0.1",
        port=int(s.strava_base_url.rsplit(":", 1)[1]),
        port_option="--sandbox-port",
        athletes=n_athletes,
        seed=42,
        time_scale=s.strava_time_scale,
        client_secret=s.strava_client_secret,
    )
    child: subprocess.Popen[bytes] | None = None
    code_server: subprocess.Popen[bytes] | None = None
    stack = devstack.DevStack()
    # Ctrl-C and SIGTERM both shut everything down cleanly, even when this process was
    # started with SIGINT ignored (background jobs, some supervisors).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        receiver = devstack.start_webhook_receiver(
            s, stack, os.environ.get("STRAVA_WEBHOOK_VERIFY_TOKEN", "")
        )
        devstack.start_platform_sandboxes(s, stack)
        users = devstack.connect_demo_users(s, stack)
        strava = context.strava(s)
        from sync_pipeline.defs.strava.athletes import connected_athlete_ids

        already = set(connected_athlete_ids(strava.app_db.url))
        sandbox_ids = [int(a["id"]) for a in _sandbox_athletes(server.url)]
        for sandbox_id in sandbox_ids:
            if sandbox_id not in already:
                connect_via_oauth(strava, auto_approve=True, sandbox_athlete_id=sandbox_id)
        strava.close()
        click.echo(
            f"Strava sandbox on {server.url}; {len(sandbox_ids)} demo athletes connected.\n"
            f"Push events: Strava sandbox -> {receiver}\n"
            f"Platform sandboxes: "
            + ", ".join(f"{p} {r.url}" for p, r in stack.platforms.items())
            + f"; {len(devstack.DEMO_USERS)} demo users, {users} platform connections.\n"
            f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything)"
        )
        dagster_env = {
            **os.environ,
            "DAGSTER_HOME": str(s.dagster_home),
            "PYTHONWARNINGS": "ignore:Function `dev_command` is superseded",
        }
        code_server = devstack.start_code_server(s, code_port, dagster_env)
        click.echo(
            f"Code server on 127.0.0.1:{code_port}; queue a sync from another shell with\n"
            f"  dagster job launch -w {s.home / 'workspace.yaml'} -j strava_athlete_sync "
            """--tags '{"dagster/partition": "<athlete id>", "dagster/priority": "10"}'\n"""
            "or `sync-pipeline sync strava --athlete <id>` (both reuse this code server)."
        )
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster",
                "dev",
                "-w",
                str(s.home / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=s.home,
            env=dagster_env,
        )
        child.wait()
    except KeyboardInterrupt:
        click.echo("\nstopping Dagster and the sandbox...")
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.terminate()
                child.wait(timeout=10)
        if code_server is not None:
            code_server.terminate()
            try:
                code_server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code_server.kill()
            devstack.forget_code_server(s)
        stack.stop()
        server.stop()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _sandbox_athletes(url: str) -> list[dict[str, Any]]:
    import httpx

    response = httpx.get(f"{url}/_sandbox/athletes", timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--source", type=click.Choice(SOURCES), help="Only this source.")
def status(as_json: bool, source: str | None) -> None:
    """Per source: runs queued/running/24 h, oldest queued, sync states, dead letters, budget."""
    from sync_pipeline.core.health import (
        current_budget,
        needs_reconnect_connections,
        source_health,
    )
    from sync_pipeline.defs.strava.athletes import needs_reconnect_count

    s = context.settings()
    db_url = context.app_db(s).url
    report = {}
    with context.dagster_instance(s) as instance:
        for name in [source] if source else SOURCES:
            reconnect = (
                needs_reconnect_count(db_url)
                if name == "strava"
                else needs_reconnect_connections(db_url, name)
            )
            report[name] = source_health(
                instance,
                db_url,
                name,
                needs_reconnect=reconnect,
                budget=current_budget(db_url, name),
            )
    if as_json:
        click.echo(json.dumps({k: h.as_dict() for k, h in report.items()}, indent=2))
        return
    for name, health in report.items():
        oldest = f"{health.oldest_queued_seconds:.0f} s" if health.oldest_queued_seconds else "-"
        click.echo(name)
        click.echo(
            f"  runs: queued {health.queued} (oldest {oldest}), running {health.running}, "
            f"succeeded 24h {health.succeeded_24h}, failed 24h {health.failed_24h}"
        )
        states = ", ".join(f"{k} {v}" for k, v in sorted(health.partitions_by_status.items()))
        click.echo(f"  partitions by sync status: {states or '-'}")
        click.echo(
            f"  dead letters: {health.dead_letters}   needing reconnect: {health.needs_reconnect}"
        )
        for b in health.budget:
            click.echo(
                f"  budget {b['bucket']:24} {b['used']:>6}/{b['limit']:<6} left {b['left']:<6} "
                f"resets {b['resets_at']}"
            )


@cli.group("dead-letters")
def dead_letters() -> None:
    """Syncs that failed for good (permanent error or retries exhausted), and their redrive."""


@dead_letters.command("list")
@click.option("--source", type=click.Choice(SOURCES), help="Only this source (default: all).")
@click.option("--json", "as_json", is_flag=True)
def dead_letters_list(source: str | None, as_json: bool) -> None:
    """List dead letters, newest failure first."""
    from sync_pipeline.core.health import dead_letter_rows

    app_db = context.app_db(context.settings())
    rows = [
        row
        for name in ([source] if source else SOURCES)
        for row in dead_letter_rows(app_db.checkpoints(name).dead_letters())
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no dead letters")
        return
    for r in rows:
        click.echo(
            f"{r['source']}/{r['partition']}: {r['error_class']} after {r['attempts']} attempt(s), "
            f"last {r['last_failure_at']} (run {r['run_id']})\n    {r['message']}"
        )


@dead_letters.command("redrive")
@click.option("--source", type=click.Choice(SOURCES), default="strava", show_default=True)
@click.option("--partition", help="One partition (athlete id or user id).")
@click.option("--all", "redrive_all", is_flag=True, help="Every dead letter of the source.")
def dead_letters_redrive(source: str, partition: str | None, redrive_all: bool) -> None:
    """Re-queue dead letters at manual priority; they clear when the sync succeeds."""
    if (partition is None) == (not redrive_all):
        raise click.UsageError("Give exactly one of --partition P or --all.")
    s = context.settings()
    dead = context.app_db(s).checkpoints(source).dead_letters()
    keys = [st.partition_key for st in dead]
    if partition is not None:
        if partition not in keys:
            raise click.ClickException(
                f"{source}/{partition} is not a dead letter; see `sync-pipeline dead-letters list`."
            )
        keys = [partition]
    if not keys:
        click.echo("no dead letters")
        return
    tags = priorities.run_tags(priorities.MANUAL, source, "redrive")
    # One run: a single-partition sync, or one batch run for all of them (those that fail
    # again fall back to single-partition retry runs).
    from sync_pipeline.sources import source as source_named

    declared = source_named(source)
    if len(keys) == 1:
        job = declared.single_job_name
        tags = {**tags, "dagster/partition": keys[0]}
        config = declared.single_run_config()
    else:
        job, config = declared.sweep_job_name, declared.sweep_run_config(keys=keys)
    _queue(s, job, tags=tags, run_config=config)
    click.echo(f"redriving {len(keys)} dead letter(s): {', '.join(keys[:20])}")


@cli.command()
@click.option("--older-than", default="7d", show_default=True, help="Age such as 7d, 12h, 30m.")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True)
def cleanup(older_than: str, dry_run: bool, as_json: bool) -> None:
    """Delete finished runs older than an age, keeping partition status and current failures."""
    from sync_pipeline.core.cleanup import cleanup_runs, parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    s = context.settings()
    app_db = context.app_db(s)
    with context.dagster_instance(s) as instance:
        report = cleanup_runs(instance, app_db.url, older_than=age, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"runs finished before {report.cutoff}: examined {report.examined}, {verb} "
        f"{len(report.deleted)}, kept {report.kept_latest_materialization} holding a "
        f"partition's latest materialization and {report.kept_explains_failure} explaining "
        "a current failure"
    )
    for run_id in report.deleted:
        click.echo(f"  {verb} {run_id}")


from sync_pipeline.cli.suppliers import suppliers, sync_promidata  # noqa: E402
from sync_pipeline.cli.users import users  # noqa: E402
from sync_pipeline.cli.webhooks import webhooks  # noqa: E402

cli.add_command(users)
cli.add_command(webhooks)
cli.add_command(suppliers)
sync.add_command(sync_promidata)

if __name__ == "__main__":
    cli()
