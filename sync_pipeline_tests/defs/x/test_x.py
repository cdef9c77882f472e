"""XResource against the X sandbox over real HTTP: paging, local days, tokens, limits, errors."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest

from sync_pipeline.core.daily import DailyActivityClient, account_for, local_day_bounds, sync_daily
from sync_pipeline.core.db import transaction
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.models import PlatformConnection
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.core.tokens import TokenSet
from sync_pipeline.defs.users.accounts import disconnect
from sync_pipeline.defs.users.scores import CONSISTENCY, CONSISTENCY_PUBLIC
from sync_pipeline.defs.x.resources import XResource
from sync_pipeline.defs.x.source import x_defs
from sync_pipeline_tests.platforms import (
    CLIENT_ID,
    CLIENT_SECRET,
    Box,
    first_sync_days,
    join,
    sandbox_days,
    stored_days,
)

TIMELINE = "GET /2/users/:id/tweets"
WINDOW = 900


@pytest.fixture
def box(boxes: Callable[..., Box]) -> Box:
    """The X sandbox with X's default limits."""
    return boxes("x")


@pytest.fixture
def make_x(clients: Callable[..., DailyActivityClient]) -> Callable[..., XResource]:
    """Build X resources pointed at a sandbox."""

    def make(box: Box, **overrides: Any) -> XResource:
        client = clients(box, **overrides)
        assert isinstance(client, XResource)
        return client

    return make


def sync(x: XResource, user_id: str) -> SyncOutcome:
    """One per-user daily sync."""
    return sync_daily(x, user_id, RunContext(owner="test"))


def rows(db_url: str, user_id: str) -> dict[dt.date, int]:
    """The user's stored days on this platform."""
    return stored_days(db_url, user_id, "x")


def truth(box: Box, account: str, tz: str, days: list[dt.date]) -> dict[dt.date, int]:
    """The sandbox's exact items per local day of `tz`, zero-filled over `days`."""
    return sandbox_days(box.state, account, tz, days)


def today(tz: str) -> dt.date:
    """The local date now."""
    return first_sync_days(tz)[-1]


def backfill_days(tz: str) -> list[dt.date]:
    """The 90 local days a first sync covers."""
    return first_sync_days(tz)


@pytest.mark.parametrize("page_size", [100, 9])
def test_pages_to_completion_with_exact_daily_counts(
    box: Box, make_x: Callable[..., XResource], page_size: int
) -> None:
    x = make_x(box, page_size=page_size)
    account = box.account(count=320, history_days=120)
    join(x, "ana", account)

    outcome = sync(x, "ana")

    assert outcome.status == "succeeded", outcome.error
    days = backfill_days("UTC")
    expected = truth(box, account, "UTC", days)
    assert rows(x.app_db.url, "ana") == expected
    in_range = sum(expected.values())
    assert 0 < in_range < 320  # the history reaches back before the 90-day window
    assert outcome.figures["items"] == in_range
    stats = box.stats()
    # Only the window's posts are requested, every page once: ceil(items / page size) calls.
    assert stats["requests_by_endpoint"][TIMELINE] == math.ceil(in_range / page_size)
    assert "429" not in stats["responses_by_status"]
    assert stats["rate_limited"] == 0


def test_local_days_follow_the_users_time_zone(box: Box, make_x: Callable[..., XResource]) -> None:
    x = make_x(box)
    account = box.account(count=200, history_days=60)
    # 20:30 UTC is the next morning in Tokyo and the same noon in Los Angeles.
    anchor = dt.datetime.combine(today("UTC") - dt.timedelta(days=5), dt.time(20, 30), dt.UTC)
    box.control(f"/accounts/{account}/items", {"count": 7, "at": anchor.timestamp()})

    found: dict[str, dict[dt.date, int]] = {}
    for user_id, tz in (("kenji", "Asia/Tokyo"), ("lena", "America/Los_Angeles")):
        join(x, user_id, account, tz)
        assert sync(x, user_id).status == "succeeded"
        found[tz] = rows(x.app_db.url, user_id)
        assert found[tz] == truth(box, account, tz, backfill_days(tz))
        disconnect(x.app_db.url, user_id, "x")  # the account moves to the next user

    tokyo, la = found["Asia/Tokyo"], found["America/Los_Angeles"]
    day = anchor.date()
    assert tokyo[day + dt.timedelta(days=1)] >= 7 and la[day] >= 7
    assert any(tokyo[d] != la[d] for d in set(tokyo) & set(la))


def test_resync_of_trailing_window_is_idempotent_and_sees_new_posts(
    box: Box, make_x: Callable[..., XResource]
) -> None:
    x = make_x(box)
    account = box.account(count=150, history_days=30)
    join(x, "ana", account, "Europe/Berlin")
    assert sync(x, "ana").status == "succeeded"
    first = rows(x.app_db.url, "ana")

    again = sync(x, "ana")

    assert again.status == "succeeded"
    assert again.figures["days_synced"] == 3
    assert rows(x.app_db.url, "ana") == first

    posted = time.time() - 3600
    box.control(f"/accounts/{account}/items", {"count": 4, "at": posted})
    assert sync(x, "ana").status == "succeeded"
    day = dt.datetime.fromtimestamp(posted, ZoneInfo("Europe/Berlin")).date()
    after = rows(x.app_db.url, "ana")
    assert after == {**first, day: first[day] + 4}
    assert after == truth(box, account, "Europe/Berlin", sorted(after))


@pytest.mark.parametrize("how", ["rejected", "due"])
def test_token_refresh_rotates_and_persists(
    box: Box, make_x: Callable[..., XResource], how: str
) -> None:
    x = make_x(box)
    account = box.account(count=40, history_days=30)
    join(x, "ana", account)
    store = x.app_db.tokens("x")
    before = store.get("ana")
    assert before is not None and before.refresh_token
    if how == "rejected":
        box.control(f"/accounts/{account}/expire")  # X answers 401 to the stored token
    else:  # our clock says the token expires within the margin: refreshed before the call
        store.save("ana", TokenSet(before.access_token, before.refresh_token, int(time.time())))

    outcome = sync(x, "ana")

    assert outcome.status == "succeeded", outcome.error
    after = store.get("ana")
    assert after is not None and after.refresh_token and after.expires_at
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token
    assert after.expires_at > time.time() + 7000
    stats = box.stats()
    assert stats["refreshes"] == 1
    assert ("401" in stats["responses_by_status"]) == (how == "rejected")
    # Rotation: the old refresh token is dead, the stored one works.
    old = httpx.post(
        f"{box.url}/2/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": before.refresh_token},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert old.status_code == 400
    box.control(f"/accounts/{account}/expire")
    assert sync(x, "ana").status == "succeeded"


def test_revoked_token_needs_reconnect(box: Box, make_x: Callable[..., XResource]) -> None:
    x = make_x(box)
    account = box.account(count=40, history_days=30)
    join(x, "ana", account)
    token = x.app_db.tokens("x").get("ana")
    assert token is not None
    box.control(f"/accounts/{account}/revoke")

    outcome = sync(x, "ana")

    assert outcome.status == "failed"
    assert outcome.error_class == "needs_reconnect"
    assert outcome.error is not None and "reconnect" in outcome.error
    assert token.access_token not in outcome.error and str(token.refresh_token) not in outcome.error
    with transaction(x.app_db.url) as s:
        conn = s.get(PlatformConnection, ("ana", "x"))
        assert conn is not None and conn.state == "needs_reconnect"
    calls = box.stats()["requests_total"]
    later = sync(x, "ana")
    assert later.status == "failed" and "users connect ana x" in (later.error or "")
    assert box.stats()["requests_total"] == calls  # no API call for a disconnected account


@pytest.mark.parametrize(("kind", "delay"), [("5xx", 0.0), ("timeout", 0.1)])
def test_transient_faults_are_retried(
    box: Box, make_x: Callable[..., XResource], kind: str, delay: float
) -> None:
    x = make_x(box)
    account = box.account(count=60, history_days=30)
    join(x, "ana", account)
    box.control("/faults", {"kind": kind, "count": 1, "path_contains": "/tweets", "delay": delay})

    outcome = sync(x, "ana")

    assert outcome.status == "succeeded", outcome.error
    assert outcome.stats.retries == 1
    assert box.stats()["faults_fired"] == 1
    assert rows(x.app_db.url, "ana") == truth(box, account, "UTC", backfill_days("UTC"))


def test_budget_learned_from_headers_parks_before_x_refuses(
    boxes: Callable[..., Box], make_x: Callable[..., XResource]
) -> None:
    box = boxes("x", timeline_user_limit=4)  # a lower access tier than the configured 900
    x = make_x(box, page_size=5, max_inline_wait_seconds=1.0)
    account = box.account(count=60, history_days=30)
    join(x, "ana", account)

    outcome = sync(x, "ana")

    assert outcome.status == "parked"
    stats = box.stats()
    assert stats["requests_by_endpoint"][TIMELINE] == 4
    assert stats["rate_limited"] == 0 and "429" not in stats["responses_by_status"]
    reset = math.ceil(time.time() / WINDOW) * WINDOW
    assert outcome.retry_at is not None and abs(outcome.retry_at - reset) <= 1
    user_window = x.budget_usage("ana", "GET", f"/2/users/{account}/tweets")[0]
    assert (user_window.used, user_window.limit) == (4, 4)


def clear_of_window_end(box: Box, margin: float = 30.0) -> None:
    """Move the sandbox into its next 15-minute window when the current one ends within
    `margin` seconds, so that "far from the reset" holds however the test is timed."""
    now = box.state.time()
    left = math.ceil(now / WINDOW) * WINDOW - now
    if left < margin:
        box.state.advance_clock(left + 1.0)


@pytest.mark.parametrize(("scope", "bucket"), [("user", 0), ("app", 1)])
def test_limit_forced_far_from_reset_parks_until_reset(
    box: Box, make_x: Callable[..., XResource], scope: str, bucket: int
) -> None:
    x = make_x(box, max_inline_wait_seconds=1.0)
    account = box.account(count=60, history_days=30)
    join(x, "ana", account)
    clear_of_window_end(box)
    spent = box.control("/exhaust", {"endpoint": "tweets", "account": account, "scope": scope})

    outcome = sync(x, "ana")

    assert outcome.status == "parked"
    assert outcome.error_class == "rate_limited"
    assert outcome.retry_at == pytest.approx(spent["reset"], abs=1)
    assert box.stats()["rate_limited"] == 1
    windows = x.budget_usage("ana", "GET", f"/2/users/{account}/tweets")
    assert windows[bucket].used == windows[bucket].limit  # the spent window is marked
    assert windows[bucket].bucket.split(":")[2] == scope
    state = x.app_db.checkpoints("x").get("ana")
    assert state is not None and state.status == "parked"


def test_limit_near_reset_waits_inline(
    boxes: Callable[..., Box], make_x: Callable[..., XResource]
) -> None:
    # Time compressed 300x: 15-minute windows last 3 s.
    box = boxes("x", time_scale=300, auth_code_seconds=3000)
    x = make_x(box, time_scale=300, max_inline_wait_seconds=10.0)
    account = box.account(count=60, history_days=30)
    join(x, "ana", account)
    box.control("/faults", {"kind": "429", "count": 1, "path_contains": "/tweets"})

    outcome = sync(x, "ana")

    assert outcome.status == "succeeded", outcome.error  # waited inline, not parked
    # The wait is what was left of the window when the 429 came: at most one window (3 s),
    # 0 when the window had already reset by the time the answer was read.
    assert 0 <= outcome.stats.rate_wait_seconds <= 3.5
    assert box.stats()["responses_by_status"]["429"] == 1
    assert rows(x.app_db.url, "ana") == truth(box, account, "UTC", backfill_days("UTC"))


def test_materialize_partition_end_to_end(
    box: Box, make_x: Callable[..., XResource], instance: dg.DagsterInstance
) -> None:
    x = make_x(box)
    account = box.account(count=120, history_days=60)
    join(x, "ana", account, "Asia/Kolkata")
    instance.add_dynamic_partitions("users", ["ana"])

    result = dg.materialize(
        [x_defs.asset], resources={"x": x}, partition_key="ana", instance=instance
    )

    assert result.success
    events = {e.asset_key: e for e in result.get_asset_materialization_events()}
    assert set(events) == {x_defs.asset.key, CONSISTENCY, CONSISTENCY_PUBLIC}
    own = events[x_defs.asset.key].materialization
    md: dict[str, Any] = {k: v.value for k, v in own.metadata.items()}
    expected = truth(box, account, "Asia/Kolkata", backfill_days("Asia/Kolkata"))
    assert md["status"] == "succeeded"
    assert md["days_synced"] == 90
    assert md["items"] == sum(expected.values())
    assert md["active_days"] == sum(1 for n in expected.values() if n)
    assert md["api_calls"] >= 1
    assert rows(x.app_db.url, "ana") == expected
    score = instance.get_latest_materialization_event(CONSISTENCY)
    assert score is not None and score.asset_materialization is not None
    assert score.asset_materialization.partition == "ana"
    assert events[CONSISTENCY].partition == "ana"


def test_request_covers_only_the_local_days(box: Box, make_x: Callable[..., XResource]) -> None:
    # The UTC bounds of two local days in Tokyo: items just outside are not counted.
    tz = ZoneInfo("Asia/Tokyo")
    start = today("Asia/Tokyo") - dt.timedelta(days=10)
    lo, hi = local_day_bounds(start, start + dt.timedelta(days=1), tz)
    account = box.account(count=1, history_days=1)
    for at in (lo.timestamp() - 1, lo.timestamp(), hi.timestamp() - 1, hi.timestamp()):
        box.control(f"/accounts/{account}/items", {"count": 1, "at": at})
    x = make_x(box)
    join(x, "ana", account, "Asia/Tokyo")
    acct, why = account_for(x.app_db.url, "ana", "x")
    assert acct is not None, why

    counts = x.daily_counts(acct, start, start + dt.timedelta(days=1), CallStats())

    assert counts == {start: 1, start + dt.timedelta(days=1): 1}
