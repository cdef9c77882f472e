"""`sync-pipeline dev`: sandboxes, demo athletes and users, `dagster dev`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import click

from sync_pipeline.cli import context, devstack
from sync_pipeline.cli.sandbox import sandbox_athletes, start_sandbox
from sync_pipeline.core.settings import DEFAULT_SANDBOX_PORT

#: Warnings of Dagster about Dagster itself, repeated at every code load (PYTHONWARNINGS
#: filters: action:message-start): `dagster dev` is "superseded" by `dg dev`; Dagster's own
#: sensor wrapper passes the beta `owners` parameter.
DAGSTER_WARNING_FILTERS = ",".join(
    (
        "ignore:Function `dev_command` is superseded",
        "ignore:Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta",
    )
)


@click.command()
@click.option("--athletes", "n_athletes", default=8, show_default=True, type=click.IntRange(1, 500))
@click.option(
    "--port",
    type=int,
    help="Dagster UI port [default: the port of DAGSTER_WEBSERVER_URL, else 3000].",
)
@click.option("--sandbox-port", default=DEFAULT_SANDBOX_PORT, show_default=True)
@click.option(
    "--code-port",
    default=4266,
    show_default=True,
    help="Port of the Dagster code server shared by the UI, the daemon and launches.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Log level of Dagster's UI and daemon (info also logs every sensor tick).",
)
def dev(
    n_athletes: int, port: int | None, sandbox_port: int, code_port: int, log_level: str
) -> None:
    """The main job: sandbox + demo athletes + `dagster dev` (UI and daemon); Ctrl-C stops all."""
    from urllib.parse import urlsplit

    from sync_pipeline.defs.strava.athletes import connect_via_oauth

    s = context.init_home(sandbox_port=sandbox_port)
    configured = urlsplit(s.webserver_url).port or 3000
    port = configured if port is None else port
    if not s.strava_base_url.startswith("http://127.0.0.1"):
        raise click.ClickException(
            "`dev` runs against the sandbox; .env points STRAVA_BASE_URL elsewhere. "
            "Use `dagster dev` directly for a real deployment."
        )
    server = start_sandbox(
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
        promidata_url = devstack.start_promidata_sandbox(s, stack)
        outreach_env = devstack.start_outreach(s, stack)
        strava = context.strava(s)
        # The sandbox starts with fresh state: tokens stored by an earlier demo are unknown to
        # it, so every demo athlete is connected again (stored tokens replaced, nothing added).
        sandbox_ids = [int(a["id"]) for a in sandbox_athletes(server.url)]
        for sandbox_id in sandbox_ids:
            connect_via_oauth(strava, auto_approve=True, sandbox_athlete_id=sandbox_id)
        strava.close()
        click.echo(
            f"Strava sandbox on {server.url}; {len(sandbox_ids)} demo athletes connected.\n"
            f"Push events: Strava sandbox -> {receiver}\n"
            f"Platform sandboxes: "
            + ", ".join(f"{p} {r.url}" for p, r in stack.platforms.items())
            + f"; {len(devstack.DEMO_USERS)} demo users, {users} platform connections.\n"
            f"Promidata sandbox on {promidata_url}; suppliers "
            f"{', '.join(devstack.DEMO_SUPPLIERS)} configured.\n"
            f"Outreach: Hunter {outreach_env['HUNTER_BASE_URL']}, Supabase "
            f"{outreach_env['SUPABASE_URL']}, SMTP 127.0.0.1:{outreach_env['SMTP_PORT']}, IMAP "
            f"127.0.0.1:{outreach_env['IMAP_PORT']}; campaign demo with 4 prospects.\n"
            f"Dagster UI: http://127.0.0.1:{port}  (Ctrl-C stops everything)"
        )
        if port != configured:
            click.echo(
                f"`sync-pipeline sync` queues runs through DAGSTER_WEBSERVER_URL="
                f"{s.webserver_url}; set it to http://127.0.0.1:{port} in .env to use this UI."
            )
        dagster_env = {
            **os.environ,
            **outreach_env,  # as `.env` names them (also read by the CLI in other shells)
            "DAGSTER_HOME": str(s.dagster_home),
            "PYTHONWARNINGS": DAGSTER_WARNING_FILTERS,
        }
        code_server = devstack.start_code_server(s, code_port, dagster_env)
        click.echo(
            f"Code server on 127.0.0.1:{code_port}; queue a sync from another shell with\n"
            f"  dagster job launch -w {s.home / 'workspace.yaml'} -j strava_athlete_sync "
            """--tags '{"dagster/partition": "<athlete id>", "dagster/priority": "10"}'\n"""
            "or `sync-pipeline sync strava --athlete <id>` (through the UI's GraphQL API)."
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
                "--log-level",
                log_level,
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
