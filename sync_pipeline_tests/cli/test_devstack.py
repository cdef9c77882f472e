"""What `sync-pipeline dev` starts besides Dagster (cli/devstack.py): the platform sandboxes,
the demo users and the webhook receiver subscribed at the Strava sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from sync_pipeline.cli import context, devstack
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import WebhookEvent
from sync_pipeline.core.settings import PLATFORM_PORTS, outreach_sandbox_env
from sync_pipeline_tests.cli.conftest import CliEnv, error_of, free_port, invoke, run_cli
from sync_pipeline_tests.conftest import CLIENT_ID, CLIENT_SECRET, Sandbox
from sync_pipeline_tests.serving import wait_until

TOKEN = "devstack-verify-token"


@pytest.fixture
def platform_settings(cli_env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every platform's settings pointed at a free loopback port; {platform: base URL}."""
    urls = {}
    for platform in PLATFORM_PORTS:
        prefix, url = platform.upper(), f"http://127.0.0.1:{free_port()}"
        monkeypatch.setenv(f"{prefix}_CLIENT_ID", f"sandbox-{platform}-client")
        monkeypatch.setenv(f"{prefix}_CLIENT_SECRET", f"{platform}-secret")
        monkeypatch.setenv(f"{prefix}_BASE_URL", url)
        monkeypatch.setenv(f"{prefix}_OAUTH_URL", url)
        urls[platform] = url
    return urls


@pytest.fixture
def stack() -> Iterator[devstack.DevStack]:
    """A dev stack, stopped after the test."""
    running = devstack.DevStack()
    yield running
    running.stop()


def test_platform_sandboxes_and_demo_users(
    platform_settings: dict[str, str], stack: devstack.DevStack, cli_env: CliEnv
) -> None:
    s = context.settings()
    devstack.start_platform_sandboxes(s, stack)

    assert {p: r.url for p, r in stack.platforms.items()} == platform_settings
    connected = devstack.connect_demo_users(s, stack)
    again = devstack.connect_demo_users(s, stack)  # a second `dev`: nothing is added twice

    expected = sum(len(platforms) for _, _, platforms in devstack.DEMO_USERS)
    assert connected == again == expected == 11
    users = {u["id"]: u for u in json.loads(invoke("users", "list", "--json").stdout)}
    assert {u: (r["timezone"], sorted(r["platforms"])) for u, r in users.items()} == {
        user: (tz, sorted(platforms)) for user, tz, platforms in devstack.DEMO_USERS
    }
    private = {(u, p) for u, r in users.items() for p, c in r["platforms"].items() if c["private"]}
    assert private == {devstack.PRIVATE_DEMO}
    # Each demo user holds a different sandbox account of a platform.
    for platform in PLATFORM_PORTS:
        handles = [
            r["platforms"][platform]["handle"] for r in users.values() if platform in r["platforms"]
        ]
        assert len(handles) == len(set(handles))


def test_platform_sandboxes_need_loopback_urls(
    platform_settings: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("X_BASE_URL", "https://api.x.com")

    result = invoke("sandbox", "--port", str(free_port()), exit_code=1)

    assert error_of(result) == (
        "Error: X_BASE_URL is https://api.x.com; `dev` runs against the sandboxes. "
        "Run `sync-pipeline init` to add the sandbox settings."
    )
    # The sandboxes started before the check were stopped again.
    with pytest.raises(httpx.ConnectError):
        httpx.get(platform_settings["github"], timeout=2)


def test_webhook_receiver_is_subscribed_and_stores_pushes(
    strava_env: Sandbox, cli_env: CliEnv
) -> None:
    s = context.settings()
    creds = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    subscriptions = f"{strava_env.url}/api/v3/push_subscriptions"
    first_stack = devstack.DevStack()
    try:
        devstack.start_webhook_receiver(s, first_stack, TOKEN)
    finally:
        first_stack.stop()
    [old] = httpx.get(subscriptions, params=creds).json()
    second_stack = devstack.DevStack()
    try:
        callback = devstack.start_webhook_receiver(s, second_stack, TOKEN)

        strava_port = int(strava_env.url.rsplit(":", 1)[1])
        assert callback == f"http://127.0.0.1:{strava_port + 10}/webhooks/strava"
        assert second_stack.receiver_url == callback
        [sub] = httpx.get(subscriptions, params=creds).json()  # the old one was replaced
        assert sub["callback_url"] == callback and sub["id"] != old["id"]
        athlete = strava_env.state.add_athlete(0)
        invoke("athletes", "connect", "--sandbox-athlete", str(athlete))
        [activity] = strava_env.state.add_activities(athlete, 1)

        def stored() -> list[tuple[int, int, int]]:
            with transaction(cli_env.db_url) as session:
                return [
                    (e.subscription_id, e.object_id, e.owner_id)
                    for e in session.scalars(select(WebhookEvent))
                ]

        events = wait_until(stored, 10, what="the pushed event in the inbox")
        assert events == [(sub["id"], activity, athlete)]
    finally:
        second_stack.stop()


def test_outreach_sandboxes_listen_where_the_settings_say_and_other_shells_reach_them(
    cli_env: CliEnv,
    stack: devstack.DevStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As `init` writes them (fixed ports; free ones here), in the `.env` every shell reads.
    port = {name: free_port() for name in ("hunter", "supabase", "smtp", "imap")}
    settings = {
        **outreach_sandbox_env(),
        "HUNTER_BASE_URL": f"http://127.0.0.1:{port['hunter']}",
        "HUNTER_WEBSITE_URL": f"http://127.0.0.1:{port['hunter']}/_sandbox/sites/{{domain}}",
        "SUPABASE_URL": f"http://127.0.0.1:{port['supabase']}",
        "SMTP_PORT": str(port["smtp"]),
        "IMAP_PORT": str(port["imap"]),
    }
    (tmp_path / ".env").write_text(
        "".join(
            f"{k}={v}\n"
            for k, v in {
                "SYNC_HOME": str(cli_env.home),
                "SYNC_DATABASE_URL": cli_env.db_url,
                "SYNC_TOKEN_KEY": cli_env.token_key,
                "DAGSTER_HOME": str(cli_env.dagster_home),
                **settings,
            }.items()
        )
    )
    with monkeypatch.context() as m:  # what `dev` loaded from `.env`
        for name, value in settings.items():
            m.setenv(name, value)
        started = devstack.start_outreach(context.settings(), stack)
    assert {k: started[k] for k in ("HUNTER_BASE_URL", "SMTP_PORT", "IMAP_PORT")} == {
        k: settings[k] for k in ("HUNTER_BASE_URL", "SMTP_PORT", "IMAP_PORT")
    }

    # Another shell: nothing but the `.env` file.
    listed = run_cli(tmp_path, "prospects", "list").stdout
    hot = next(line.split()[0] for line in listed.splitlines() if " hot " in line)
    website = run_cli(tmp_path, "outreach", "enrich-website", "--prospect", hot, "--direct")
    address = run_cli(tmp_path, "outreach", "enrich-email", "--prospect", hot, "--direct")
    crm = run_cli(tmp_path, "outreach", "crm", "--prospect", hot, "--direct")
    status = run_cli(tmp_path, "outreach", "status")

    assert website.stdout == f"{hot}: succeeded (domains_found 1, websites_up 1)\n"
    assert address.stdout == f"{hot}: succeeded (emails_found 1)\n"
    assert crm.stdout == "succeeded 1\n"
    assert "enrich_email    succeeded       1" in status.stdout


def test_a_second_demo_reconnects_users_to_its_fresh_sandboxes(
    platform_settings: dict[str, str], cli_env: CliEnv
) -> None:
    # Each `dev` starts the sandboxes with fresh state: tokens an earlier demo stored are
    # unknown to them. The second start must leave every demo connection syncable.
    from sync_pipeline.core.daily import sync_daily
    from sync_pipeline.core.sync_runner import RunContext

    s = context.settings()
    first = devstack.DevStack()
    try:
        devstack.start_platform_sandboxes(s, first)
        devstack.connect_demo_users(s, first)
    finally:
        first.stop()
    second = devstack.DevStack()
    try:
        devstack.start_platform_sandboxes(s, second)
        assert devstack.connect_demo_users(s, second) == 11
        user, _, platforms = devstack.DEMO_USERS[0]
        client = context.platform_client(s, platforms[0])
        try:
            outcome = sync_daily(client, user, RunContext(owner="second-demo"))
        finally:
            client.close()
        assert outcome.status == "succeeded", outcome.error
    finally:
        second.stop()
