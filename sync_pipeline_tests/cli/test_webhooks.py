"""`sync-pipeline webhooks`: the receiver as a real process, and the push subscription commands
against the Strava sandbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values
from sqlalchemy import select

from sync_pipeline.core import db
from sync_pipeline.core.db import transaction
from sync_pipeline.core.inbox import PROCESSED_INLINE
from sync_pipeline.core.models import StravaActivity, WebhookEvent
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.webhooks import create_webhook_app
from sync_pipeline_tests.cli.conftest import (
    CliEnv,
    error_of,
    free_port,
    invoke,
    is_setting,
    run_cli,
    start_cli,
)
from sync_pipeline_tests.conftest import CLIENT_ID, CLIENT_SECRET, Sandbox, connect
from sync_pipeline_tests.serving import wait_for_server, wait_until
from sync_pipeline_tests.webhooks.test_receiver import make_event

BIN = Path(sys.executable).parent
UNSUBSCRIBE_KEY = "served-unsubscribe-key"
TOKEN = "cli-verify-token-0123"
VERIFY_ENV = "STRAVA_WEBHOOK_VERIFY_TOKEN"
STARTUP_SECONDS = 60.0


def inbox(db_url: str) -> list[tuple[str, int, str, int, int, int]]:
    """(provider, subscription, aspect, object id, owner, deliveries) of every stored event."""
    with transaction(db_url) as s:
        return [
            (e.provider, e.subscription_id, e.aspect_type, e.object_id, e.owner_id, e.deliveries)
            for e in s.scalars(select(WebhookEvent).order_by(WebhookEvent.id))
        ]


def wait_healthy(proc: subprocess.Popen[bytes] | subprocess.Popen[str], url: str) -> None:
    """Poll GET /healthz until 200; fail if the process exits or the deadline passes."""
    wait_for_server(f"{url}/healthz", proc, STARTUP_SECONDS, what="the receiver")


@dataclass
class Served:
    """A receiver process started by `sync-pipeline webhooks serve`."""

    url: str
    db_url: str
    workers: int
    proc: subprocess.Popen[bytes]


def serve_env(tmp_path: Path, app_db: AppDatabaseResource, sandbox: Sandbox) -> dict[str, str]:
    """The environment of a receiver process: app database, Strava at the sandbox (the fast
    path's client), a Dagster home, the verify token."""
    env = {k: v for k, v in os.environ.items() if not is_setting(k)}
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    env.update(
        SYNC_HOME=str(tmp_path / "sync_home"),
        SYNC_DATABASE_URL=app_db.url,
        SYNC_TOKEN_KEY=app_db.token_key,
        DAGSTER_HOME=str(dagster_home),
        STRAVA_CLIENT_ID=CLIENT_ID,
        STRAVA_CLIENT_SECRET=CLIENT_SECRET,
        STRAVA_BASE_URL=sandbox.url,
        STRAVA_WEBHOOK_VERIFY_TOKEN=TOKEN,
        OUTREACH_UNSUBSCRIBE_KEY=UNSUBSCRIBE_KEY,
    )
    return env


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def receiver(
    request: pytest.FixtureRequest, tmp_path: Path, app_db: AppDatabaseResource, sandbox: Sandbox
) -> Iterator[Served]:
    """`sync-pipeline webhooks serve` as a process of its own, serving on a free port."""
    workers: int = request.param
    port = free_port()
    env = serve_env(tmp_path, app_db, sandbox)
    db_url = app_db.url
    args = [str(BIN / "sync-pipeline"), "webhooks", "serve", "--port", str(port)]
    args += ["--log-level", "warning", *(["--workers", str(workers)] if workers > 1 else [])]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url)
        yield Served(url, db_url, workers, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_serve_stores_a_posted_event_and_stops_on_sigterm(receiver: Served) -> None:
    url, db_url, proc = receiver.url, receiver.db_url, receiver.proc
    event = make_event(object_id=10010000777, owner_id=1001)

    posted = httpx.post(f"{url}/webhooks/strava", json=event, timeout=10)
    again = httpx.post(f"{url}/webhooks/strava", json=event, timeout=10)  # a redelivery

    assert posted.status_code == 200 and posted.json() == {"status": "received"}
    assert again.status_code == 200
    assert inbox(db_url) == [("strava", event["subscription_id"], "create", 10010000777, 1001, 2)]
    # The verify token reached the receiver: Strava's validation GET is answered with it only.
    query = {"hub.mode": "subscribe", "hub.challenge": "abc"}
    good = httpx.get(f"{url}/webhooks/strava", params={**query, "hub.verify_token": TOKEN})
    bad = httpx.get(f"{url}/webhooks/strava", params={**query, "hub.verify_token": "nope"})
    assert (good.status_code, good.json()) == (200, {"hub.challenge": "abc"})
    assert bad.status_code == 403

    os.killpg(proc.pid, signal.SIGTERM)
    # It stops by itself. One worker: uvicorn shuts down, then re-raises the signal (seen as
    # -SIGTERM, or 0 when the signal lands while uvicorn is already leaving); the supervisor
    # of several workers stops them and exits 0.
    clean = {0} if receiver.workers > 1 else {0, -signal.SIGTERM}
    assert proc.wait(timeout=30) in clean
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    assert (
        f"webhook receiver on {url}/webhooks/strava (database {db.redact_url(db_url)}, "
        f"{receiver.workers} worker(s), fast path 2 thread(s)); Ctrl-C stops it"
    ) in output


def test_serve_answers_outreach_one_click_unsubscribes(receiver: Served) -> None:
    from sync_pipeline.core.models import Campaign, Prospect
    from sync_pipeline.defs.outreach.unsubscribe import unsubscribe_token

    with transaction(receiver.db_url) as s:
        s.add(Campaign(name="c", sender="s@acme.test", subject_template="Hi", body_template="."))
        s.flush()
        s.add(Prospect(id="p1", campaign="c", first_name="A", last_name="B", company="C"))
    link = f"{receiver.url}/outreach/unsubscribe/{unsubscribe_token(UNSUBSCRIBE_KEY, 'p1')}"
    forged = f"{receiver.url}/outreach/unsubscribe/{unsubscribe_token('guessed', 'p1')}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    refused = httpx.post(forged, content=b"List-Unsubscribe=One-Click", headers=form, timeout=10)
    shown = httpx.get(link, timeout=10)
    with transaction(receiver.db_url) as s:
        before = s.get(Prospect, "p1")
        assert before is not None and before.state == "new"
    done = httpx.post(link, content=b"List-Unsubscribe=One-Click", headers=form, timeout=10)

    assert (refused.status_code, shown.status_code, done.status_code) == (403, 200, 200)
    with transaction(receiver.db_url) as s:
        after = s.get(Prospect, "p1")
        assert after is not None and after.state == "unsubscribed"


@pytest.mark.parametrize("inline_workers", [2, 0], ids=["fast-path", "sensor-only"])
def test_serve_processes_an_athletes_event_inline_and_stops_on_sigterm(
    tmp_path: Path,
    strava: StravaResource,
    sandbox: Sandbox,
    inline_workers: int,
) -> None:
    athlete = connect(strava, sandbox, 2)
    [new_id] = sandbox.state.add_activities(athlete, 1)
    port = free_port()
    env = serve_env(tmp_path, strava.app_db, sandbox)
    args = [str(BIN / "sync-pipeline"), "webhooks", "serve", "--port", str(port)]
    args += ["--inline-workers", str(inline_workers)]
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    db_url = strava.app_db.url
    try:
        wait_healthy(proc, url)
        event = make_event(object_id=new_id, owner_id=athlete)
        assert httpx.post(f"{url}/webhooks/strava", json=event, timeout=10).status_code == 200

        def outcome() -> str | None:
            with transaction(db_url) as s:
                return s.scalar(select(WebhookEvent.outcome))

        if inline_workers:
            wait_until(lambda: outcome() == PROCESSED_INLINE, STARTUP_SECONDS, what="inline")
            with transaction(db_url) as s:
                row = s.get(StravaActivity, new_id)
                assert row is not None and row.processed_at is not None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM)
    if not inline_workers:
        assert outcome() is None  # left to the sensor
        assert b"fast path off" in output


def test_serve_without_the_verify_token_names_the_variable(cli_env: CliEnv) -> None:
    result = invoke("webhooks", "serve", "--port", str(free_port()), exit_code=1)

    assert error_of(result).startswith(f"Error: {VERIFY_ENV} is not set: choose a random string")
    assert "the receiver and `webhooks subscribe` must use the same one." in error_of(result)


def test_serve_without_the_verify_token_fails_as_a_process(tmp_path: Path, db_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not is_setting(k)}
    env.update(SYNC_DATABASE_URL=db_url, SYNC_HOME=str(tmp_path))

    done = subprocess.run(
        [str(BIN / "sync-pipeline"), "webhooks", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: {VERIFY_ENV} is not set")
    assert done.stdout == ""


def test_serve_refuses_malformed_subscription_ids(
    cli_env: CliEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VERIFY_ENV, TOKEN)
    monkeypatch.setenv("STRAVA_WEBHOOK_SUBSCRIPTION_IDS", "12,abc")

    result = invoke("webhooks", "serve", "--port", str(free_port()), exit_code=1)

    assert error_of(result) == (
        "Error: STRAVA_WEBHOOK_SUBSCRIPTION_IDS must be comma-separated integers, got '12,abc'"
    )
    assert result.stdout == ""


def test_serve_refuses_an_out_of_date_schema(
    cli_env: CliEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = f"sqlite:///{tmp_path / 'old.db'}"
    db.upgrade(old, "0004")
    monkeypatch.setenv(VERIFY_ENV, TOKEN)
    monkeypatch.setenv("SYNC_DATABASE_URL", old)

    result = invoke("webhooks", "serve", "--port", str(free_port()), exit_code=1)

    assert error_of(result) == (
        f"Error: The app database at {old} is at schema revision '0004', the code needs "
        f"'{db.head_revision()}'. Run `sync-pipeline db upgrade` first."
    )
    assert result.stdout == ""


@pytest.fixture
def callback(
    cli_env: CliEnv, strava_env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A receiver in this process on the test database (the verify token set); its URL."""
    monkeypatch.setenv(VERIFY_ENV, TOKEN)
    server = SandboxServer(create_webhook_app(cli_env.db_url, TOKEN, None)).start()
    yield f"{server.url}/webhooks/strava"
    server.stop()


def test_subscribe_list_and_unsubscribe_at_the_sandbox(
    callback: str, strava_env: Sandbox, cli_env: CliEnv
) -> None:
    assert invoke("webhooks", "list").stdout == "no push subscription\n"

    out = invoke("webhooks", "subscribe", "--callback-url", callback).stdout

    [sub] = httpx.get(
        f"{strava_env.url}/api/v3/push_subscriptions",
        params={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
    ).json()
    assert out == (
        f"subscribed: id {sub['id']} -> {callback}\n"
        f"(optional) restrict the receiver to it: STRAVA_WEBHOOK_SUBSCRIPTION_IDS={sub['id']}\n"
    )
    listed = invoke("webhooks", "list").stdout
    assert listed == f"{sub['id']}  {callback}  created {sub['created_at']}\n"
    again = invoke("webhooks", "subscribe", "--callback-url", callback, exit_code=1)
    assert error_of(again) == (
        "Error: Strava answered 400 to POST /api/v3/push_subscriptions: "
        "Bad Request; PushSubscription already exists"
    )
    # The sandbox now pushes a connected athlete's new activity to the receiver.
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect", "--sandbox-athlete", str(athlete))
    [activity] = strava_env.state.add_activities(athlete, 1)
    wait_until(lambda: inbox(cli_env.db_url), 10, what="the pushed event in the inbox")
    assert inbox(cli_env.db_url) == [("strava", sub["id"], "create", activity, athlete, 1)]

    gone = invoke("webhooks", "unsubscribe", str(sub["id"])).stdout

    assert gone == f"deleted push subscription {sub['id']}\n"
    assert invoke("webhooks", "list").stdout == "no push subscription\n"
    missing = invoke("webhooks", "unsubscribe", str(sub["id"]), exit_code=1)
    assert error_of(missing).startswith(
        f"Error: Strava answered 404 to DELETE /api/v3/push_subscriptions/{sub['id']}: "
    )


def test_subscription_commands_need_credentials_and_a_reachable_api(
    cli_env: CliEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VERIFY_ENV, TOKEN)
    result = invoke("webhooks", "list", exit_code=1)
    assert error_of(result) == (
        "Error: STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET not set: put them in .env (see README) "
        "or run `sync-pipeline init` for the sandbox defaults."
    )

    monkeypatch.setenv("STRAVA_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("STRAVA_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("STRAVA_BASE_URL", f"http://127.0.0.1:{free_port()}")
    result = invoke("webhooks", "list", exit_code=1)
    assert error_of(result).startswith(
        "Error: GET http://127.0.0.1:"
    ) and "/api/v3/push_subscriptions failed: " in error_of(result)


def test_serve_runs_with_only_the_env_init_wrote(tmp_path: Path) -> None:
    init = run_cli(tmp_path, "init", "--sandbox-port", str(free_port()))
    assert init.returncode == 0, init.stderr
    token = dotenv_values(tmp_path / ".env")[VERIFY_ENV]
    port = free_port()
    proc = start_cli(tmp_path, "webhooks", "serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url)
        query = {"hub.mode": "subscribe", "hub.challenge": "abc", "hub.verify_token": token}
        answer = httpx.get(f"{url}/webhooks/strava", params=query, timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"hub.challenge": "abc"})
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
