"""InstagramResource against the Instagram sandbox over real HTTP: paging, local days, long-lived
tokens, Business Use Case limits, errors."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from sync_pipeline.core.daily import DailyActivityClient, sync_daily
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import PlatformConnection
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.core.tokens import TokenSet
from sync_pipeline.defs.instagram.resources import InstagramResource
from sync_pipeline.defs.instagram.source import instagram_defs
from sync_pipeline.defs.users.accounts import disconnect
from sync_pipeline.defs.users.scores import CONSISTENCY, CONSISTENCY_PUBLIC
from sync_pipeline_tests.platforms import Box, first_sync_days, join, sandbox_days, stored_days

MEDIA = "GET /{ig-user-id}/media"
REFRESH = "GET /refresh_access_token"
DAY = 86400
BUC_WINDOW = 3600


@pytest.fixture
def box(boxes: Callable[..., Box]) -> Box:
    """The Instagram sandbox with its default limits."""
    return boxes("instagram")


@pytest.fixture
def make_ig(clients: Callable[..., DailyActivityClient]) -> Callable[..., InstagramResource]:
    """Build Instagram resources pointed at a sandbox."""

    def make(box: Box, **overrides: Any) -> InstagramResource:
        client = clients(box, **overrides)
        assert isinstance(client, InstagramResource)
        return client

    return make


def sync(ig: InstagramResource, user_id: str) -> SyncOutcome:
    """One per-user daily sync."""
    return sync_daily(ig, user_id, RunContext(owner="test"))


def rows(db_url: str, user_id: str) -> dict[dt.date, int]:
    """The user's stored days on this platform."""
    return stored_days(db_url, user_id, "instagram")


def truth(box: Box, account: str, tz: str, days: list[dt.date]) -> dict[dt.date, int]:
    """The sandbox's exact items per local day of `tz`, zero-filled over `days`."""
    return sandbox_days(box.state, account, tz, days)


def today(tz: str) -> dt.date:
    """The local date now."""
    return first_sync_days(tz)[-1]


def backfill_days(tz: str) -> list[dt.date]:
    """The 90 local days a first sync covers."""
    return first_sync_days(tz)


def age_token(ig: InstagramResource, user_id: str, days_left: float) -> TokenSet:
    """Make our copy of the token look issued long ago: it expires in `days_left` days."""
    store = ig.app_db.tokens("instagram")
    tokens = store.get(user_id)
    assert tokens is not None
    store.save(
        user_id,
        TokenSet(tokens.access_token, None, int(time.time() + days_left * DAY), tokens.scopes),
    )
    return tokens


@pytest.mark.parametrize("shape", ["data", "flat"])
def test_connect_exchanges_for_a_long_lived_token(
    boxes: Callable[..., Box], make_ig: Callable[..., InstagramResource], shape: str
) -> None:
    box = boxes("instagram", token_response_shape=shape)
    ig = make_ig(box)
    account = box.account(count=5)
    join(ig, "ana", account)

    with transaction(ig.app_db.url) as s:
        conn = s.get(PlatformConnection, ("ana", "instagram"))
        assert conn is not None
        assert conn.handle == box.state.account(account).username
        assert conn.scopes == "instagram_business_basic"
    tokens = ig.app_db.tokens("instagram").get("ana")
    assert tokens is not None and tokens.refresh_token is None and tokens.expires_at
    assert tokens.expires_at == pytest.approx(time.time() + 60 * DAY, abs=60)
    assert box.stats()["long_lived_exchanges"] == 1


@pytest.mark.parametrize("page_size", [100, 7])
def test_pages_to_completion_with_exact_daily_counts(
    box: Box, make_ig: Callable[..., InstagramResource], page_size: int
) -> None:
    ig = make_ig(box, page_size=page_size)
    account = box.account(count=200, history_days=120)
    join(ig, "ana", account)

    outcome = sync(ig, "ana")

    assert outcome.status == "succeeded", outcome.error
    expected = truth(box, account, "UTC", backfill_days("UTC"))
    assert rows(ig.app_db.url, "ana") == expected
    in_range = sum(expected.values())
    assert 0 < in_range < 200  # the history reaches back before the 90-day window
    assert outcome.figures["items"] == in_range
    stats = box.stats()
    # since/until restrict the pages to the window: ceil(items / page size) calls.
    assert stats["requests_by_endpoint"][MEDIA] == math.ceil(in_range / page_size)
    assert stats["throttled"] == 0 and "400" not in stats["responses_by_status"]


def test_local_days_follow_the_users_time_zone(
    box: Box, make_ig: Callable[..., InstagramResource]
) -> None:
    ig = make_ig(box)
    account = box.account(count=120, history_days=60)
    # 20:30 UTC is the next morning in Tokyo and the same noon in Los Angeles.
    anchor = dt.datetime.combine(today("UTC") - dt.timedelta(days=5), dt.time(20, 30), dt.UTC)
    box.control(f"/accounts/{account}/items", {"count": 7, "at": anchor.timestamp()})

    found: dict[str, dict[dt.date, int]] = {}
    for user_id, tz in (("kenji", "Asia/Tokyo"), ("lena", "America/Los_Angeles")):
        join(ig, user_id, account, tz)
        assert sync(ig, user_id).status == "succeeded"
        found[tz] = rows(ig.app_db.url, user_id)
        assert found[tz] == truth(box, account, tz, backfill_days(tz))
        disconnect(ig.app_db.url, user_id, "instagram")  # the account moves to the next user

    tokyo, la = found["Asia/Tokyo"], found["America/Los_Angeles"]
    day = anchor.date()
    assert tokyo[day + dt.timedelta(days=1)] >= 7 and la[day] >= 7
    assert any(tokyo[d] != la[d] for d in set(tokyo) & set(la))


def test_resync_of_trailing_window_is_idempotent_and_sees_new_media(
    box: Box, make_ig: Callable[..., InstagramResource]
) -> None:
    ig = make_ig(box)
    account = box.account(count=80, history_days=30)
    join(ig, "ana", account, "Australia/Sydney")
    assert sync(ig, "ana").status == "succeeded"
    first = rows(ig.app_db.url, "ana")

    again = sync(ig, "ana")

    assert again.status == "succeeded"
    assert again.figures["days_synced"] == 3
    assert rows(ig.app_db.url, "ana") == first

    posted = time.time() - 3600
    box.control(f"/accounts/{account}/items", {"count": 3, "at": posted})
    assert sync(ig, "ana").status == "succeeded"
    day = dt.datetime.fromtimestamp(posted, ZoneInfo("Australia/Sydney")).date()
    after = rows(ig.app_db.url, "ana")
    assert after == {**first, day: first[day] + 3}
    assert after == truth(box, account, "Australia/Sydney", sorted(after))


def test_token_due_within_margin_is_refreshed(
    box: Box, make_ig: Callable[..., InstagramResource]
) -> None:
    ig = make_ig(box)
    account = box.account(count=30, history_days=30)
    join(ig, "ana", account)
    # 55 of the token's 60 days have passed, for us and for Instagram.
    before = age_token(ig, "ana", days_left=5)
    box.control("/clock", {"advance": 55 * DAY})

    outcome = sync(ig, "ana")

    assert outcome.status == "succeeded", outcome.error
    after = ig.app_db.tokens("instagram").get("ana")
    assert after is not None and after.expires_at
    assert after.access_token != before.access_token
    assert after.expires_at == pytest.approx(time.time() + 60 * DAY, abs=60)
    assert after.scopes == before.scopes
    stats = box.stats()
    assert stats["refreshes"] == 1
    assert "400" not in stats["responses_by_status"]  # refreshed before use, never rejected


@pytest.mark.parametrize(
    ("days_left", "attempts"),
    [
        (59.5, 0),  # half a day old: Instagram would refuse, so we do not ask
        (5, None),  # our clock says 55 days old, Instagram says minutes: refused, token kept
    ],
)
def test_young_token_is_not_refreshed(
    box: Box, make_ig: Callable[..., InstagramResource], days_left: float, attempts: int | None
) -> None:
    ig = make_ig(box, token_refresh_margin_seconds=60 * DAY)  # always "due"
    account = box.account(count=30, history_days=30)
    join(ig, "ana", account)
    before = age_token(ig, "ana", days_left=days_left)

    outcome = sync(ig, "ana")

    assert outcome.status == "succeeded", outcome.error
    after = ig.app_db.tokens("instagram").get("ana")
    assert after is not None and after.access_token == before.access_token
    stats = box.stats()
    assert stats["refreshes"] == 0
    tried = stats["requests_by_endpoint"].get(REFRESH, 0)
    assert tried == 0 if attempts == 0 else tried >= 1


@pytest.mark.parametrize("how", ["revoke", "expire"])
def test_rejected_token_needs_reconnect(
    box: Box, make_ig: Callable[..., InstagramResource], how: str
) -> None:
    ig = make_ig(box)
    account = box.account(count=30, history_days=30)
    join(ig, "ana", account)
    token = ig.app_db.tokens("instagram").get("ana")
    assert token is not None
    # Code 190 arrives as HTTP 400; an expired long-lived token cannot be refreshed either.
    box.control(f"/accounts/{account}/{how}")

    outcome = sync(ig, "ana")

    assert outcome.status == "failed"
    assert outcome.error_class == "needs_reconnect"
    assert outcome.error is not None and "reconnect" in outcome.error
    assert token.access_token not in outcome.error
    with transaction(ig.app_db.url) as s:
        conn = s.get(PlatformConnection, ("ana", "instagram"))
        assert conn is not None and conn.state == "needs_reconnect"
    assert box.stats()["responses_by_status"]["400"] >= 1


@pytest.mark.parametrize(("kind", "delay"), [("5xx", 0.0), ("timeout", 0.1)])
def test_transient_faults_are_retried(
    box: Box, make_ig: Callable[..., InstagramResource], kind: str, delay: float
) -> None:
    ig = make_ig(box)
    account = box.account(count=50, history_days=30)
    join(ig, "ana", account)
    box.control("/faults", {"kind": kind, "count": 1, "path_contains": "/media", "delay": delay})

    outcome = sync(ig, "ana")

    assert outcome.status == "succeeded", outcome.error
    assert outcome.stats.retries == 1
    assert box.stats()["faults_fired"] == 1
    assert rows(ig.app_db.url, "ana") == truth(box, account, "UTC", backfill_days("UTC"))


def test_usage_header_parks_before_instagram_throttles(
    boxes: Callable[..., Box], make_ig: Callable[..., InstagramResource]
) -> None:
    box = boxes("instagram", buc_call_limit=4)  # far below the 200 calls the client assumes
    ig = make_ig(box, page_size=5, max_inline_wait_seconds=1.0)
    account = box.account(count=60, history_days=30)
    join(ig, "ana", account)

    outcome = sync(ig, "ana")

    assert outcome.status == "parked"
    stats = box.stats()
    # The connect's /me call counts too: 4 calls fill Instagram's window, none is refused.
    assert stats["requests_by_endpoint"][MEDIA] + stats["requests_by_endpoint"]["GET /me"] == 4
    assert stats["throttled"] == 0 and "400" not in stats["responses_by_status"]
    reset = math.ceil(time.time() / BUC_WINDOW) * BUC_WINDOW
    assert outcome.retry_at is not None and abs(outcome.retry_at - reset) <= 1
    (window,) = ig.budget_usage("ana")
    assert window.used == window.limit == 200


@pytest.mark.parametrize("status", [400, 429])
def test_throttling_parks_until_access_is_regained(
    boxes: Callable[..., Box], make_ig: Callable[..., InstagramResource], status: int
) -> None:
    box = boxes("instagram", throttle_http_status=status)
    ig = make_ig(box)
    account = box.account(count=50, history_days=30)
    join(ig, "ana", account)
    box.control("/exhaust", {"account": account})

    outcome = sync(ig, "ana")

    assert outcome.status == "parked"
    assert outcome.error_class == "rate_limited"
    assert outcome.error is not None and "80002" in outcome.error
    # The rolling hour just filled: estimated_time_to_regain_access is 60 minutes.
    assert outcome.retry_at == pytest.approx(time.time() + BUC_WINDOW, abs=30)
    stats = box.stats()
    assert stats["throttled"] == 1
    assert stats["responses_by_status"][str(status)] == 1
    (window,) = ig.budget_usage("ana")
    assert window.used == window.limit  # marked spent: other runs wait too


def test_materialize_partition_end_to_end(
    box: Box, make_ig: Callable[..., InstagramResource], instance: dg.DagsterInstance
) -> None:
    ig = make_ig(box)
    account = box.account(count=90, history_days=60)
    join(ig, "ana", account, "America/New_York")
    instance.add_dynamic_partitions("users", ["ana"])

    result = dg.materialize(
        [instagram_defs.asset],
        resources={"instagram": ig},
        partition_key="ana",
        instance=instance,
    )

    assert result.success
    events = {e.asset_key: e for e in result.get_asset_materialization_events()}
    assert set(events) == {instagram_defs.asset.key, CONSISTENCY, CONSISTENCY_PUBLIC}
    own = events[instagram_defs.asset.key].materialization
    md: dict[str, Any] = {k: v.value for k, v in own.metadata.items()}
    expected = truth(box, account, "America/New_York", backfill_days("America/New_York"))
    assert md["status"] == "succeeded"
    assert md["days_synced"] == 90
    assert md["items"] == sum(expected.values())
    assert md["active_days"] == sum(1 for n in expected.values() if n)
    assert md["api_calls"] >= 1
    assert rows(ig.app_db.url, "ana") == expected
    assert events[CONSISTENCY].partition == "ana"
    score = instance.get_latest_materialization_event(CONSISTENCY)
    assert score is not None and score.asset_materialization is not None
    assert score.asset_materialization.partition == "ana"
