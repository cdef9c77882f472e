"""YouTubeResource against the YouTube sandbox over real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from sync_pipeline.core.daily import sync_daily
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import PlatformConnection
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.core.tokens import TokenSet
from sync_pipeline.defs.users.accounts import add_user, connect, disconnect
from sync_pipeline.defs.users.scores import CONSISTENCY
from sync_pipeline.defs.youtube.resources import YouTubeResource
from sync_pipeline.defs.youtube.source import youtube_defs
from sync_pipeline.sandbox.youtube import YouTubeSandboxConfig
from sync_pipeline_tests.platforms import SlotEnv, slot_env_fixtures, stored_days

PLATFORM = "youtube"
CLIENT_ID = YouTubeSandboxConfig.client_id
CLIENT_SECRET = YouTubeSandboxConfig.client_secret
CTX = RunContext(owner="test-youtube")
ITEMS = "GET /youtube/v3/playlistItems"
CHANNELS = "GET /youtube/v3/channels"


Env = SlotEnv
EnvFactory = Callable[..., Env]
served, make_env, env = slot_env_fixtures("youtube", "channel_id")


def join(client: YouTubeResource, user_id: str, time_zone: str, channel_id: str) -> None:
    """Add an app user and connect them to a sandbox channel through the OAuth redirect."""
    add_user(client.app_db.url, user_id, timezone=time_zone)
    conn = connect(client, user_id, auto_approve=True, sandbox_user=channel_id, timeout=10)
    assert conn.account_id == channel_id and conn.state == "connected"
    assert conn.extra["uploads_playlist_id"] == "UU" + channel_id[2:]


def rows(db_url: str, user_id: str) -> dict[dt.date, int]:
    """Stored daily rows of one user on this platform."""
    return stored_days(db_url, user_id, PLATFORM)


def window(now: dt.datetime, time_zone: str, days: int) -> list[dt.date]:
    """The local days a first sync covers."""
    today = now.astimezone(ZoneInfo(time_zone)).date()
    return [today - dt.timedelta(days=k) for k in range(days - 1, -1, -1)]


def truth(env: Env, channel_id: str, days: list[dt.date], tz: str) -> dict[dt.date, int]:
    """The sandbox's exact uploads per local day of `tz` over `days` (zeros included)."""
    counts = env.state.daily_counts(channel_id, tz)
    return {d: counts.get(d.isoformat(), 0) for d in days}


def sync(client: YouTubeResource, user_id: str, **kw: Any) -> SyncOutcome:
    """One sync_daily of a user."""
    return sync_daily(client, user_id, CTX, **kw)


def connection(db_url: str, user_id: str) -> PlatformConnection:
    """The user's YouTube connection row."""
    with transaction(db_url) as s:
        conn = s.get(PlatformConnection, (user_id, PLATFORM))
        assert conn is not None
        s.expunge(conn)
        return conn


def no_limit_errors(env: Env) -> None:
    """The sandbox never refused a request for quota or rate."""
    stats = env.stats()
    assert stats["quota_exceeded"] == 0
    assert not {"403", "429"} & set(stats["responses_by_status"])


def playlist_requests_needed(env: Env, channel_id: str, since: dt.datetime, size: int) -> int:
    """Pages until the first item older than `since` (or the end of the playlist)."""
    ids = env.state.video_ids(channel_id)
    channel = env.state.channel(channel_id)
    published = {v.id: v.published_at for v in channel.videos}
    newer = sum(1 for i in ids if published[i] >= since.timestamp())
    if newer == len(ids):
        return max(1, math.ceil(len(ids) / size))
    return newer // size + 1


# ------------------------------------------------------------------------------ counts


@pytest.mark.parametrize("page_size", [50, 7])
def test_uploads_per_local_day_for_users_in_two_zones(env: Env, page_size: int) -> None:
    client = env.resource(page_size=page_size)
    channel_id = env.account("Europe/Berlin", history_days=400)
    now = dt.datetime.now(dt.UTC)
    found: dict[str, dict[dt.date, int]] = {}
    for user_id, tz in (("tokyo", "Asia/Tokyo"), ("la", "America/Los_Angeles")):
        join(client, user_id, tz, channel_id)
        env.control.post("/_sandbox/reset-stats")
        outcome = sync(client, user_id, now=now)
        assert outcome.status == "succeeded", outcome.error
        days = window(now, tz, 90)
        expected = truth(env, channel_id, days, tz)
        assert rows(client.app_db.url, user_id) == expected
        assert outcome.figures["items"] == sum(expected.values()) > 0
        # Paged until the items got older than the window, not through the whole history.
        since = dt.datetime.combine(days[0], dt.time(), ZoneInfo(tz))
        pages = playlist_requests_needed(env, channel_id, since, page_size)
        assert env.requests(ITEMS) == pages == outcome.stats.calls
        assert pages < math.ceil(len(env.state.video_ids(channel_id)) / page_size)
        no_limit_errors(env)
        found[user_id] = rows(client.app_db.url, user_id)
        disconnect(client.app_db.url, user_id, PLATFORM)
    # The same uploads fall on different local days in Tokyo and in Los Angeles.
    common = sorted(set(found["tokyo"]) & set(found["la"]))
    assert [found["tokyo"][d] for d in common] != [found["la"][d] for d in common]


def test_resync_is_idempotent_and_sees_new_uploads(env: Env) -> None:
    client = env.resource()
    channel_id = env.account("UTC")
    join(client, "ada", "Asia/Tokyo", channel_id)
    db = client.app_db.url
    assert sync(client, "ada").status == "succeeded"
    before = rows(db, "ada")

    again = sync(client, "ada")
    assert again.status == "succeeded"
    assert rows(db, "ada") == before
    assert again.figures["days_synced"] == 3  # the trailing window only

    now = env.state.time()
    env.control.post(f"/_sandbox/accounts/{channel_id}/items", json={"count": 2, "at": now - 86400})
    env.control.post(f"/_sandbox/accounts/{channel_id}/items", json={"count": 1})
    third = sync(client, "ada")
    assert third.status == "succeeded"
    after = rows(db, "ada")
    assert set(after) == set(before)
    assert after == truth(env, channel_id, sorted(after), "Asia/Tokyo")
    assert sum(after.values()) == sum(before.values()) + 3
    no_limit_errors(env)


def test_missing_uploads_playlist_id_is_looked_up_again(env: Env) -> None:
    client = env.resource()
    channel_id = env.account("UTC")
    join(client, "grace", "UTC", channel_id)
    with transaction(client.app_db.url) as s:
        conn = s.get(PlatformConnection, ("grace", PLATFORM))
        assert conn is not None
        conn.extra = {}
    env.control.post("/_sandbox/reset-stats")

    outcome = sync(client, "grace")

    assert outcome.status == "succeeded", outcome.error
    assert env.requests(CHANNELS) == 1
    assert connection(client.app_db.url, "grace").extra["uploads_playlist_id"] == (
        "UU" + channel_id[2:]
    )


# ------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize("how", ["rejected", "due"])
def test_expired_token_is_refreshed_and_refresh_token_kept(env: Env, how: str) -> None:
    client = env.resource()
    channel_id = env.account("UTC")
    join(client, "linus", "UTC", channel_id)
    store = client.app_db.tokens(PLATFORM)
    old = store.get("linus")
    assert old is not None and old.refresh_token and old.expires_at
    if how == "rejected":  # Google says 401; our copy thinks the token is fine
        assert env.control.post(f"/_sandbox/accounts/{channel_id}/expire").json() == {"expired": 1}
    else:  # our copy says it expires within the margin: refreshed before the call
        store.save("linus", TokenSet(old.access_token, old.refresh_token, 0, old.scopes))

    outcome = sync(client, "linus")

    assert outcome.status == "succeeded", outcome.error
    new = store.get("linus")
    assert new is not None and new.expires_at and new.expires_at > 0
    assert new.access_token != old.access_token
    assert new.refresh_token == old.refresh_token  # Google does not rotate
    assert new.scopes == old.scopes
    assert env.stats()["refreshes"] == 1
    reused = env.control.post(
        "/token",
        data={
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "grant_type": "refresh_token",
            "refresh_token": old.refresh_token,
        },
    )
    assert reused.status_code == 200


def test_revoked_grant_needs_reconnect(env: Env) -> None:
    client = env.resource()
    channel_id = env.account("UTC")
    join(client, "ken", "UTC", channel_id)
    tokens = client.app_db.tokens(PLATFORM).get("ken")
    assert tokens is not None and tokens.refresh_token
    env.control.post(f"/_sandbox/accounts/{channel_id}/revoke")

    outcome = sync(client, "ken")

    assert outcome.status == "failed" and outcome.error_class == "needs_reconnect"
    assert outcome.error and "invalid_grant" in outcome.error and "reconnect" in outcome.error
    assert tokens.access_token not in outcome.error and tokens.refresh_token not in outcome.error
    conn = connection(client.app_db.url, "ken")
    assert conn.state == "needs_reconnect" and conn.state_reason
    refused = sync(client, "ken")
    assert refused.status == "failed" and "needs reconnecting" in (refused.error or "")


# ------------------------------------------------------------------------------ quota


def test_quota_exceeded_parks_until_pacific_midnight(env: Env) -> None:
    client = env.resource()
    channel_id = env.account("UTC")
    join(client, "barbara", "UTC", channel_id)
    env.control.post("/_sandbox/exhaust", json={"remaining": 0})
    env.control.post("/_sandbox/reset-stats")
    reset = env.state.quota()["next_reset"]

    outcome = sync(client, "barbara")

    assert outcome.status == "parked", outcome.error
    assert outcome.retry_at == reset
    local = dt.datetime.fromtimestamp(reset, ZoneInfo("America/Los_Angeles"))
    assert (local.hour, local.minute) == (0, 0)
    assert env.stats()["quota_exceeded"] == 1  # asked once, no retry storm
    # The shared budget is marked spent: the next sync parks without calling YouTube.
    second = sync(client, "barbara")
    assert second.status == "parked" and second.retry_at == reset
    assert env.stats()["requests_total"] == 1
    [usage] = client.budget_usage("barbara")
    assert usage.left == 0 and usage.resets_at == reset


def test_own_quota_budget_parks_before_youtube_refuses(env: Env) -> None:
    client = env.resource(daily_quota=3, page_size=5)
    channel_id = env.account("UTC", history_days=200)
    join(client, "dennis", "UTC", channel_id)  # channels.list at connect: 1 unit

    outcome = sync(client, "dennis")

    assert outcome.status == "parked", outcome.error
    assert outcome.retry_at == env.state.quota()["next_reset"]
    assert env.requests(ITEMS) == 2  # the 2 units left, then the budget said no
    no_limit_errors(env)


def test_short_rate_limit_is_waited_out(env: Env) -> None:
    client = env.resource(rate_limit_backoff_seconds=0.3)
    channel_id = env.account("UTC")
    join(client, "frances", "UTC", channel_id)
    env.control.post("/_sandbox/faults", json={"kind": "429", "path_contains": "playlistItems"})

    outcome = sync(client, "frances")

    assert outcome.status == "succeeded", outcome.error
    assert outcome.stats.rate_wait_seconds == pytest.approx(0.3, abs=0.1)
    assert rows(client.app_db.url, "frances")


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_is_retried(env: Env, status: int) -> None:
    client = env.resource()
    channel_id = env.account("UTC")
    join(client, "guido", "UTC", channel_id)
    env.control.post("/_sandbox/reset-stats")
    env.control.post(
        "/_sandbox/faults", json={"kind": "5xx", "status": status, "path_contains": "playlistItems"}
    )

    outcome = sync(client, "guido")

    assert outcome.status == "succeeded", outcome.error
    assert outcome.stats.retries == 1
    assert env.stats()["responses_by_status"][str(status)] == 1


# ------------------------------------------------------------------------------ Dagster


def test_materialize_partition_end_to_end(env: Env) -> None:
    client = env.resource()
    channel_id = env.account("Australia/Sydney")
    join(client, "radia", "Australia/Sydney", channel_id)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("users", ["radia"])
        result = dg.materialize(
            [youtube_defs.asset],
            resources={"youtube": client},
            partition_key="radia",
            instance=instance,
        )
        assert result.success
        mats = result.asset_materializations_for_node("youtube_daily_activity")
        [mat] = [m for m in mats if m.asset_key == youtube_defs.asset.key]
        md: dict[str, Any] = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        stored = rows(client.app_db.url, "radia")
        assert md["status"] == "succeeded"
        assert md["days_synced"] == len(stored) == 90
        assert md["items"] == sum(stored.values()) > 0
        assert md["api_calls"] >= 1
        assert instance.get_materialized_partitions(CONSISTENCY) == {"radia"}
    no_limit_errors(env)
