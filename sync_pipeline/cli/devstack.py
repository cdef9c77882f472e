"""What `sync-pipeline dev` starts besides Dagster: the sandboxes, demo users, the receiver."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
import httpx

from sync_pipeline.cli import context
from sync_pipeline.core.settings import (
    OUTREACH_PORT_OFFSETS,
    PLATFORM_PORTS,
    SANDBOX_SEED,
    WEBHOOK_PORT_OFFSET,
    Settings,
    outreach_sandbox_env,
)
from sync_pipeline.sandbox.platforms import RunningSandbox, start_platform
from sync_pipeline.sandbox.server import SandboxServer

#: Demo users: id, time zone, and which platforms they connect (sandbox account index each).
DEMO_USERS: list[tuple[str, str, tuple[str, ...]]] = [
    ("ana", "Europe/Berlin", ("github", "youtube", "x", "instagram")),
    ("ben", "America/Los_Angeles", ("github", "youtube")),
    ("chi", "Asia/Tokyo", ("github", "x", "instagram")),
    ("dev", "UTC", ("youtube", "instagram")),
]
PRIVATE_DEMO = ("ben", "youtube")  # one private platform, to see the public score differ


@dataclass
class DevStack:
    """Servers started for the main job; `stop()` ends them all."""

    servers: list[SandboxServer] = field(default_factory=list)
    platforms: dict[str, RunningSandbox] = field(default_factory=dict)
    receiver_url: str | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every server (receiver, sandboxes)."""
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()
        for server in reversed(self.servers):
            with contextlib.suppress(Exception):
                server.stop()


def start_platform_sandboxes(s: Settings, stack: DevStack) -> None:
    """One sandbox per platform on the port its base URL names."""
    for platform in PLATFORM_PORTS:
        config = s.platforms.get(platform, {})
        url = config.get("base_url", "")
        if "127.0.0.1" not in url:
            raise click.ClickException(
                f"{platform.upper()}_BASE_URL is {url or 'unset'}; `dev` runs against the "
                "sandboxes. Run `sync-pipeline init` to add the sandbox settings."
            )
        try:
            running = start_platform(
                platform,
                port=int(url.rsplit(":", 1)[1]),
                seed=SANDBOX_SEED,
                client_id=config["client_id"],
                client_secret=config["client_secret"],
            )
        except OSError as exc:
            raise click.ClickException(
                f"Cannot start the {platform} sandbox on {url} ({exc}); is another one running?"
            ) from exc
        stack.servers.append(running.server)
        stack.platforms[platform] = running


def connect_demo_users(s: Settings, stack: DevStack) -> int:
    """Add the demo users and connect their platforms through each sandbox's OAuth flow.

    Every start connects them again: the sandboxes begin with fresh state, so tokens stored by
    an earlier demo are unknown to them (the connection is updated, never added twice).
    """
    from sync_pipeline.defs.users.accounts import add_user, connect, set_privacy

    db_url = context.app_db(s).url
    connected = 0
    for index, (user_id, tz, platforms) in enumerate(DEMO_USERS):
        add_user(db_url, user_id, timezone=tz)
        for platform in platforms:
            client = context.platform_client(s, platform)
            try:
                account = stack.platforms[platform].account_ids()[index]
                connect(client, user_id, auto_approve=True, sandbox_user=account)
                connected += 1
            finally:
                client.close()
    set_privacy(db_url, *PRIVATE_DEMO, private=True)
    return connected


def start_webhook_receiver(s: Settings, stack: DevStack, verify_token: str) -> str:
    """The push receiver on loopback, subscribed at the Strava sandbox (it also serves the
    outreach unsubscribe links when OUTREACH_UNSUBSCRIBE_KEY is set); returns its URL."""
    from sync_pipeline.defs.outreach.unsubscribe import KEY_VARIABLE
    from sync_pipeline.webhooks.app import create_webhook_app

    port = int(s.strava_base_url.rsplit(":", 1)[1]) + WEBHOOK_PORT_OFFSET
    app = create_webhook_app(
        s.database_url, verify_token, None, unsubscribe_key=os.environ.get(KEY_VARIABLE) or None
    )
    server = SandboxServer(app, port=port)
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(
            f"Cannot start the webhook receiver on port {port} ({exc}); is another one running?"
        ) from exc
    stack.servers.append(server)
    callback = f"{server.url}/webhooks/strava"
    base = s.strava_base_url.rstrip("/")
    creds = context.strava_credentials(s)
    with httpx.Client(base_url=base, timeout=20.0) as http:
        existing: list[dict[str, Any]] = http.get("/api/v3/push_subscriptions", params=creds).json()
        for sub in existing if isinstance(existing, list) else []:
            http.delete(f"/api/v3/push_subscriptions/{sub['id']}", params=creds)
        created = http.post(
            "/api/v3/push_subscriptions",
            data={**creds, "callback_url": callback, "verify_token": verify_token},
        )
    if created.status_code >= 400:
        raise click.ClickException(
            f"The Strava sandbox refused the push subscription: {created.text[:300]}"
        )
    stack.receiver_url = callback
    return callback


CODE_SERVER_FILE = "code-server.json"


def start_code_server(
    s: Settings, port: int, env: dict[str, str], deadline_seconds: float = 120.0
) -> subprocess.Popen[bytes]:
    """`dagster code-server start` for the project, shared by the UI, the daemon and every
    `dagster job launch`/CLI launch while `dev` runs (a launch then costs ~2 s instead of
    spawning and loading its own code server, ~4 s).

    Writes `$SYNC_HOME/workspace.yaml` pointing at it (same location name as the project's
    workspace.yaml, so queued runs find their code) and `$SYNC_HOME/code-server.json`, which
    CLI launches use while the server answers.
    """
    host = "127.0.0.1"
    with contextlib.closing(socket.socket()) as probe:
        if probe.connect_ex((host, port)) == 0:
            raise click.ClickException(
                f"Port {port} is in use; pick another port for the code server with --code-port."
            )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "code-server",
            "start",
            "-m",
            "sync_pipeline.definitions",
            "-h",
            host,
            "-p",
            str(port),
            "--location-name",
            context.code_location_name(),
        ],
        cwd=s.home,
        env=env,
    )
    deadline = time.monotonic() + deadline_seconds
    while True:
        if proc.poll() is not None:
            raise click.ClickException(
                f"The Dagster code server exited with code {proc.returncode} while starting; "
                "its output is above."
            )
        with contextlib.closing(socket.socket()) as probe:
            if probe.connect_ex((host, port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.terminate()
            raise click.ClickException(
                f"The Dagster code server did not listen on {host}:{port} within "
                f"{deadline_seconds:.0f} s."
            )
        time.sleep(0.2)  # polling a starting server, bounded by the deadline
    server = {"host": host, "port": port, "location_name": context.code_location_name()}
    (s.home / "workspace.yaml").write_text(
        "# Written by `sync-pipeline dev`: the code server it runs (removed when it stops).\n"
        + json.dumps({"load_from": [{"grpc_server": server}]}, indent=2)
        + "\n"
    )
    (s.home / CODE_SERVER_FILE).write_text(json.dumps({**server, "pid": proc.pid}))
    return proc


def running_code_server(s: Settings) -> tuple[str, int] | None:
    """(host, port) of the code server a running `dev` announced and that still answers."""
    path = s.home / CODE_SERVER_FILE
    try:
        info = json.loads(path.read_text())
        host, port = str(info["host"]), int(info["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    with contextlib.closing(socket.socket()) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex((host, port)) != 0:
            return None  # left behind by a `dev` that was killed
    return host, port


def forget_code_server(s: Settings) -> None:
    """Remove what `start_code_server` wrote."""
    for name in (CODE_SERVER_FILE, "workspace.yaml"):
        with contextlib.suppress(FileNotFoundError):
            (s.home / name).unlink()


#: The Promidata suppliers the demo configures (a few families each).
DEMO_SUPPLIERS = ("A23", "A360", "D170")
DEMO_FAMILIES = 8


def start_promidata_sandbox(s: Settings, stack: DevStack) -> str:
    """The Promidata sandbox on the port PROMIDATA_BASE_URL names, with the demo suppliers
    configured in the app database (the partitions sensor then syncs them)."""
    from sync_pipeline.defs.promidata.sync import add_supplier
    from sync_pipeline.sandbox.promidata import (
        PromidataSandboxConfig,
        PromidataSandboxState,
        create_app,
    )

    url = os.environ.get("PROMIDATA_BASE_URL", "")
    if "127.0.0.1" not in url:
        raise click.ClickException(
            f"PROMIDATA_BASE_URL is {url or 'unset'}; `dev` runs against the sandboxes. Run "
            "`sync-pipeline init` to add the sandbox settings."
        )
    state = PromidataSandboxState(
        PromidataSandboxConfig(
            seed=SANDBOX_SEED, suppliers=dict.fromkeys(DEMO_SUPPLIERS, DEMO_FAMILIES)
        )
    )
    server = SandboxServer(create_app(state), port=int(url.rsplit(":", 1)[1]))
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(
            f"Cannot start the Promidata sandbox on {url} ({exc}); is another one running?"
        ) from exc
    stack.servers.append(server)
    for code in DEMO_SUPPLIERS:
        add_supplier(s.database_url, code)
    return server.url


def start_outreach(s: Settings, stack: DevStack) -> dict[str, str]:
    """Hunter, Supabase, SMTP and IMAP sandboxes on the ports the settings name (`init` writes
    them to `.env`, so the CLI in another shell reaches them too) and a demo campaign with
    prospects; returns the settings pointing at them."""
    from sync_pipeline.core.errors import ConfigError
    from sync_pipeline.defs.outreach.prospects import add_campaign, import_prospects
    from sync_pipeline.sandbox.outreach import start_outreach_sandboxes

    settings = {name: os.environ.get(name, "") for name in outreach_sandbox_env()}
    remote = [
        name
        for name in ("HUNTER_BASE_URL", "SUPABASE_URL", "SMTP_HOST", "IMAP_HOST")
        if "127.0.0.1" not in settings[name]
    ]
    if remote:
        raise click.ClickException(
            f"{', '.join(remote)} not on 127.0.0.1; `dev` runs against the sandboxes. Run "
            "`sync-pipeline init` to add the sandbox settings."
        )
    try:
        running = start_outreach_sandboxes(settings)
    except OSError as exc:
        first = int(s.strava_base_url.rsplit(":", 1)[1]) + min(OUTREACH_PORT_OFFSETS.values())
        raise click.ClickException(
            f"Cannot start the outreach sandboxes on ports {first}-"
            f"{first + len(OUTREACH_PORT_OFFSETS) - 1} ({exc}); is another demo running?"
        ) from exc
    stack.closers.append(running.stop)
    sender = settings["SMTP_USERNAME"]
    with contextlib.suppress(ConfigError):  # already there from an earlier demo
        add_campaign(
            s.database_url,
            "demo",
            sender=sender,
            subject="Hello {{ first_name }}",
            body="Hi {{ first_name }}, a word about {{ company }}.",
        )
    rows = [
        "first_name,last_name,company,tier,timezone",
        "Hank,Scorpio,Globex,hot,UTC",
        "Bill,Lumbergh,Initech,warm,UTC",
        "Peter,Gibbons,Initech,cold,UTC",
        "Gavin,Belson,Hooli,warm,UTC",
    ]
    # A second demo start finds them there: the import reports them and writes nothing.
    import_prospects(s.database_url, "\n".join(rows) + "\n", "demo")
    return running.env
