"""What `sync-pipeline dev` starts besides Dagster: the sandboxes, demo users, the receiver."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import click
import httpx

from sync_pipeline.cli import context
from sync_pipeline.core.settings import PLATFORM_PORTS, SANDBOX_SEED, Settings
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
WEBHOOK_PORT_OFFSET = 10  # receiver on the Strava sandbox port + 10 (8720 by default)


@dataclass
class DevStack:
    """Servers started for the main job; `stop()` ends them all."""

    servers: list[SandboxServer] = field(default_factory=list)
    platforms: dict[str, RunningSandbox] = field(default_factory=dict)
    receiver_url: str | None = None

    def stop(self) -> None:
        """Stop every server (receiver, platform sandboxes)."""
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
    """Add the demo users and connect their platforms through each sandbox's OAuth flow."""
    from sync_pipeline.defs.users.accounts import add_user, connect, list_users, set_privacy

    db_url = context.app_db(s).url
    existing = {(r.id, p) for r in list_users(db_url) for p in r.platforms}
    connected = 0
    for index, (user_id, tz, platforms) in enumerate(DEMO_USERS):
        add_user(db_url, user_id, timezone=tz)
        for platform in platforms:
            if (user_id, platform) in existing:
                connected += 1
                continue
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
    """The push receiver on loopback, subscribed at the Strava sandbox; returns its URL."""
    from sync_pipeline.webhooks.app import create_webhook_app

    port = int(s.strava_base_url.rsplit(":", 1)[1]) + WEBHOOK_PORT_OFFSET
    server = SandboxServer(create_webhook_app(s.database_url, verify_token, None), port=port)
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
