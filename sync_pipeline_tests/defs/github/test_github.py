"""GitHubResource against the GitHub sandbox over real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import dagster as dg
import pytest

from sync_pipeline.core.daily import sync_daily
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import PlatformConnection
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.core.tokens import TokenSet
from sync_pipeline.defs.github.resources import GitHubResource
from sync_pipeline.defs.github.source import github_defs
from sync_pipeline.defs.users.accounts import add_user, connect, disconnect
from sync_pipeline.defs.users.scores import CONSISTENCY
from sync_pipeline.sandbox.github import GitHubSandboxConfig
from sync_pipeline_tests.platforms import SlotEnv, slot_env_fixtures, stored_days

PLATFORM = "github"
CLIENT_ID = GitHubSandboxConfig.client_id
CLIENT_SECRET = GitHubSandboxConfig.client_secret
CTX = RunContext(owner="test-github")


Env = SlotEnv
EnvFactory = Callable[..., Env]
served, make_env, env = slot_env_fixtures("github", "login")


def join(client: GitHubResource, user_id: str, time_zone: str, login: str) -> None:
    """Add an app user and connect them to a sandbox account through the OAuth redirect."""
    add_user(client.app_db.url, user_id, timezone=time_zone)
    conn = connect(client, user_id, auto_approve=True, sandbox_user=login, timeout=10)
    assert conn.handle == login and conn.state == "connected"


def rows(db_url: str, user_id: str) -> dict[dt.date, int]:
    """Stored daily rows of one user on this platform."""
    return stored_days(db_url, user_id, PLATFORM)


def window(now: dt.datetime, days: int) -> list[dt.date]:
    """The days a first sync covers: GitHub's calendar days are UTC dates, whatever the
    user's zone, up to the UTC today."""
    today = now.astimezone(dt.UTC).date()
    return [today - dt.timedelta(days=k) for k in range(days - 1, -1, -1)]


def truth(env: Env, login: str, days: list[dt.date], tz: str = "UTC") -> dict[dt.date, int]:
    """The sandbox's exact contributions per day of `tz` over `days` (zeros included)."""
    counts = env.state.daily_counts(login, tz)
    return {d: counts.get(d.isoformat(), 0) for d in days}


def sync(client: GitHubResource, user_id: str, **kw: Any) -> SyncOutcome:
    """One sync_daily of a user."""
    return sync_daily(client, user_id, CTX, **kw)


def connection(db_url: str, user_id: str) -> PlatformConnection:
    """The user's GitHub connection row."""
    with transaction(db_url) as s:
        conn = s.get(PlatformConnection, (user_id, PLATFORM))
        assert conn is not None
        s.expunge(conn)
        return conn


def no_limit_errors(env: Env) -> None:
    """The sandbox never refused a request for a limit."""
    stats = env.stats()
    assert stats["rate_limited"] == 0 and stats["secondary_limited"] == 0
    assert not {"403", "429"} & set(stats["responses_by_status"])


# ------------------------------------------------------------------------------ counts


@pytest.mark.parametrize("backfill", [90, 400])
def test_counts_are_the_utc_calendar_for_users_in_any_zone(env: Env, backfill: int) -> None:
    client = env.resource()
    login = env.account("Asia/Tokyo", history_days=backfill + 30)
    now = dt.datetime.now(dt.UTC)
    per_user: dict[str, dict[dt.date, int]] = {}
    for user_id, tz in (("tokyo", "Asia/Tokyo"), ("la", "America/Los_Angeles")):
        join(client, user_id, tz, login)
        env.control.post("/_sandbox/reset-stats")
        outcome = sync(client, user_id, backfill_days=backfill, now=now)
        assert outcome.status == "succeeded", outcome.error
        days = window(now, backfill)
        expected = truth(env, login, days)
        assert rows(client.app_db.url, user_id) == expected
        assert outcome.figures["items"] == sum(expected.values()) > 0
        assert outcome.figures["days_synced"] == backfill
        # The calendar is queried to completion: one query per year of window.
        assert env.requests("POST /graphql") == math.ceil(backfill / 365)
        no_limit_errors(env)
        per_user[user_id] = rows(client.app_db.url, user_id)
        disconnect(client.app_db.url, user_id, PLATFORM)
    # Same items, same UTC buckets for both users, although their local days differ.
    common = sorted(set(per_user["tokyo"]) & set(per_user["la"]))
    assert [per_user["tokyo"][d] for d in common] == [per_user["la"][d] for d in common]
    local = [truth(env, login, common, tz) for tz in ("Asia/Tokyo", "America/Los_Angeles")]
    assert local[0] != local[1]


def test_resync_is_idempotent_polls_events_with_etag_and_sees_new_items(env: Env) -> None:
    client = env.resource()
    login = env.account("Europe/Berlin")
    join(client, "ada", "Europe/Berlin", login)
    db = client.app_db.url
    first = sync(client, "ada")
    assert first.status == "succeeded" and first.stats.not_modified == 0
    etag = connection(db, "ada").extra["events_etag"]
    before = rows(db, "ada")

    again = sync(client, "ada")
    assert again.status == "succeeded"
    assert rows(db, "ada") == before
    assert again.stats.not_modified == 1  # the events feed did not change: a free 304
    assert env.stats()["not_modified"] == 1
    github_id = str(env.state.user(login).id)
    core = client.budget_usage("ada", "GET", f"/users/{login}/events")[0]
    assert core.bucket == f"github:core:user:{github_id}"
    # GitHub counted /user at connect and the first poll; the 304 cost nothing, and the
    # shared budget reserved nothing for it either.
    assert env.stats()["usage"][f"user:{github_id}"]["core"]["used"] == 2
    assert core.used == 2

    now = env.state.time()
    env.control.post(
        f"/_sandbox/accounts/{login}/items", json={"count": 2, "at": now - 86400, "commits": 3}
    )
    env.control.post(f"/_sandbox/accounts/{login}/items", json={"count": 1, "commits": 2})
    third = sync(client, "ada")
    assert third.status == "succeeded" and third.stats.not_modified == 0
    after = rows(db, "ada")
    assert set(after) == set(before)
    assert after == truth(env, login, sorted(after))
    assert sum(after.values()) == sum(before.values()) + 8
    assert connection(db, "ada").extra["events_etag"] != etag
    no_limit_errors(env)


# ------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize("how", ["rejected", "due"])
def test_expired_token_is_refreshed_and_rotated(env: Env, how: str) -> None:
    client = env.resource()
    login = env.account("UTC")
    join(client, "grace", "UTC", login)
    store = client.app_db.tokens(PLATFORM)
    old = store.get("grace")
    assert old is not None and old.refresh_token and old.expires_at
    if how == "rejected":  # GitHub says the token is dead; our copy thinks it is fine
        assert env.control.post(f"/_sandbox/accounts/{login}/expire").json() == {"expired": 1}
    else:  # our copy says it expires within the margin: refreshed before the call
        store.save("grace", TokenSet(old.access_token, old.refresh_token, 0, old.scopes))

    outcome = sync(client, "grace")

    assert outcome.status == "succeeded", outcome.error
    new = store.get("grace")
    assert new is not None and new.expires_at and new.expires_at > 0
    assert new.access_token != old.access_token
    assert new.refresh_token and new.refresh_token != old.refresh_token
    assert env.stats()["refreshes"] == 1
    # Rotation: the old refresh token is dead, the stored one works.
    form = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    dead = env.control.post(
        "/login/oauth/access_token",
        data={**form, "grant_type": "refresh_token", "refresh_token": old.refresh_token},
        headers={"Accept": "application/json"},
    ).json()
    assert dead["error"] == "bad_refresh_token"


def test_revoked_grant_needs_reconnect(env: Env) -> None:
    client = env.resource()
    login = env.account("UTC")
    join(client, "linus", "UTC", login)
    tokens = client.app_db.tokens(PLATFORM).get("linus")
    assert tokens is not None and tokens.refresh_token
    env.control.post(f"/_sandbox/accounts/{login}/revoke")

    outcome = sync(client, "linus")

    assert outcome.status == "failed" and outcome.error_class == "needs_reconnect"
    assert outcome.error and "reconnect" in outcome.error
    assert tokens.access_token not in outcome.error and tokens.refresh_token not in outcome.error
    conn = connection(client.app_db.url, "linus")
    assert conn.state == "needs_reconnect" and conn.state_reason
    refused = sync(client, "linus")
    assert refused.status == "failed" and "needs reconnecting" in (refused.error or "")


# ------------------------------------------------------------------------------ limits


@pytest.mark.parametrize("kind", ["primary", "secondary"])
def test_far_limit_parks_until_the_reset(env: Env, kind: str) -> None:
    client = env.resource()
    login = env.account("UTC")
    join(client, "ken", "UTC", login)
    env.control.post("/_sandbox/reset-stats")
    if kind == "primary":
        budgets = env.control.post(
            "/_sandbox/exhaust", json={"account": login, "resource": "graphql"}
        ).json()
        expected = float(budgets[0]["reset"])
    else:
        env.control.post("/_sandbox/faults", json={"kind": "secondary", "path_contains": "graphql"})
        expected = env.state.time() + env.state.config.secondary_retry_after

    outcome = sync(client, "ken")

    assert outcome.status == "parked", outcome.error
    assert outcome.retry_at is not None and abs(outcome.retry_at - expected) <= 2
    assert env.requests("POST /graphql") == 1  # asked once, no retry storm
    if kind == "primary":
        # The shared budget now knows: the next sync parks without asking GitHub, until
        # the end of its window (aligned a few seconds before GitHub's reset).
        second = sync(client, "ken")
        assert second.status == "parked" and second.retry_at is not None
        assert expected - 6 <= second.retry_at <= expected
        assert env.requests("POST /graphql") == 1


@pytest.mark.parametrize("kind", ["primary", "secondary"])
def test_near_limit_is_waited_out_inline(make_env: EnvFactory, kind: str) -> None:
    # time_scale 900: GitHub's hour is 4 s in the sandbox and in the client's windows.
    scale = 900 if kind == "primary" else 1
    env = make_env(time_scale=scale, secondary_retry_after=1)
    client = env.resource(time_scale=scale)
    login = env.account("UTC")
    join(client, "barbara", "UTC", login)
    if kind == "primary":
        env.control.post("/_sandbox/exhaust", json={"account": login, "resource": "graphql"})
    else:
        env.control.post("/_sandbox/faults", json={"kind": "secondary", "path_contains": "graphql"})

    outcome = sync(client, "barbara")

    assert outcome.status == "succeeded", outcome.error  # waited inline, not parked
    # At most one window (4 s) plus the secondary limit's Retry-After; 0 when the window
    # had already reset by the time the answer was read (a loaded machine).
    assert 0 <= outcome.stats.rate_wait_seconds <= 5
    assert rows(client.app_db.url, "barbara")
    assert env.requests("POST /graphql") == 2


def test_spent_core_budget_skips_the_events_poll_only(env: Env) -> None:
    client = env.resource()
    login = env.account("UTC")
    join(client, "dennis", "UTC", login)
    env.control.post("/_sandbox/exhaust", json={"account": login, "resource": "core"})
    env.control.post("/_sandbox/reset-stats")

    first = sync(client, "dennis")
    second = sync(client, "dennis")

    assert first.status == second.status == "succeeded"
    assert rows(client.app_db.url, "dennis")
    # One refused poll marked the core window spent; the second sync did not poll at all.
    assert env.requests("GET /users/{username}/events") == 1
    assert env.stats()["rate_limited"] == 1
    assert env.requests("POST /graphql") == 2


@pytest.mark.parametrize("status", [502, 503])
def test_server_error_is_retried(env: Env, status: int) -> None:
    client = env.resource()
    login = env.account("UTC")
    join(client, "frances", "UTC", login)
    env.control.post("/_sandbox/reset-stats")
    env.control.post(
        "/_sandbox/faults", json={"kind": "5xx", "status": status, "path_contains": "/graphql"}
    )

    outcome = sync(client, "frances")

    assert outcome.status == "succeeded", outcome.error
    assert outcome.stats.retries == 1
    assert env.stats()["responses_by_status"][str(status)] == 1
    assert env.requests("POST /graphql") == 2


# ------------------------------------------------------------------------------ Dagster


def test_materialize_partition_end_to_end(env: Env) -> None:
    client = env.resource()
    login = env.account("America/New_York")
    join(client, "guido", "America/New_York", login)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("users", ["guido"])
        result = dg.materialize(
            [github_defs.asset],
            resources={"github": client},
            partition_key="guido",
            instance=instance,
        )
        assert result.success
        mats = result.asset_materializations_for_node("github_daily_activity")
        [mat] = [m for m in mats if m.asset_key == github_defs.asset.key]
        md: dict[str, Any] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        stored = rows(client.app_db.url, "guido")
        assert md["status"] == "succeeded"
        assert md["days_synced"] == len(stored) == 90
        assert md["items"] == sum(stored.values()) > 0
        assert md["api_calls"] == 2  # one calendar query, one events poll
        assert instance.get_latest_materialization_event(CONSISTENCY) is not None
        consistency = instance.get_materialized_partitions(CONSISTENCY)
        assert consistency == {"guido"}
    no_limit_errors(env)
