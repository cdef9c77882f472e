"""The shared rate budget: window arithmetic, processes sharing it, parking when spent."""

from __future__ import annotations

import datetime as dt
import math
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.synchronize import Event

import pytest
from sqlalchemy import func, select

from sync_pipeline.core.budget import RateBudget, Window
from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import RateLimitedError
from sync_pipeline.core.models import RateWindow, StravaActivity, SyncState
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.strava.resources import MAX_PER_PAGE, StravaResource
from sync_pipeline.defs.strava.sync import SOURCE, sync_athlete
from sync_pipeline_tests.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    Sandbox,
    connect,
    make_strava,
    start_sandbox,
)

T0 = 1_800_000_000.0  # a window boundary for 60 s windows (divisible by 60)


# ------------------------------------------------------------------------------- unit tests
@pytest.fixture
def budget(db_url: str) -> RateBudget:
    return RateBudget(db_url)


@pytest.mark.parametrize("limit", [1, 3, 10])
@pytest.mark.parametrize("offset_in_window", [0.0, 30.0, 58.9])
def test_try_acquire_admits_exactly_limit_per_window(
    budget: RateBudget, limit: int, offset_in_window: float
) -> None:
    w = Window("t:reads", 60, limit)
    now = T0 + offset_in_window

    admitted = [budget.try_acquire([w], now=now) for _ in range(limit)]
    refused = budget.try_acquire([w], now=now)

    assert admitted == [0] * limit
    assert refused == T0 + 60 == w.end(now)
    [usage] = budget.usage([w], now=now)
    assert (usage.used, usage.left, usage.resets_at) == (limit, 0, T0 + 60)
    # The next window starts empty.
    assert budget.try_acquire([w], now=T0 + 60) == 0


def test_calls_near_a_reset_are_charged_to_both_windows(budget: RateBudget) -> None:
    # Sent 0.5 s before the reset, a call may reach the provider after it: it counts in both.
    w = Window("t:reads", 60, 3)
    assert w.guard() == 1.0
    assert [budget.try_acquire([w], now=T0 + 59.5) for _ in range(3)] == [0, 0, 0]
    assert budget.try_acquire([w], now=T0 + 60) == T0 + 120
    assert budget.usage([w], now=T0 + 60)[0].used == 3


def test_a_full_next_window_refuses_a_call_near_the_reset(budget: RateBudget) -> None:
    w = Window("t:reads", 60, 2)
    assert budget.try_acquire([w], cost=2, now=T0 + 60) == 0
    # The current window has room, the next does not: all or nothing.
    assert budget.try_acquire([w], now=T0 + 59.5) == T0 + 120
    assert budget.usage([w], now=T0)[0].used == 0


@pytest.mark.parametrize(
    ("iso_now", "expected_start", "expected_hours"),
    [
        ("2026-03-07T12:00:00+00:00", "2026-03-07T00:00:00-08:00", 24),
        ("2026-03-08T12:00:00+00:00", "2026-03-08T00:00:00-08:00", 23),  # DST starts
        ("2026-11-01T12:00:00+00:00", "2026-11-01T00:00:00-07:00", 25),  # DST ends
        ("2026-11-23T07:59:59+00:00", "2026-11-22T00:00:00-08:00", 24),
    ],
)
def test_daily_window_in_a_time_zone_resets_at_local_midnight(
    iso_now: str, expected_start: str, expected_hours: int
) -> None:
    w = Window("youtube:quota", 86400, 10_000, tz="America/Los_Angeles")
    now = dt.datetime.fromisoformat(iso_now).timestamp()
    start = dt.datetime.fromisoformat(expected_start).timestamp()
    assert w.start(now) == start
    assert w.end(now) - w.start(now) == expected_hours * 3600


def test_cost_larger_than_room_is_refused_whole(budget: RateBudget) -> None:
    w = Window("t:reads", 60, 5)
    assert budget.try_acquire([w], cost=3, now=T0) == 0
    assert budget.try_acquire([w], cost=3, now=T0) == T0 + 60
    assert budget.usage([w], now=T0)[0].used == 3
    assert budget.try_acquire([w], cost=2, now=T0) == 0


def test_windows_are_independent_per_bucket(budget: RateBudget) -> None:
    a, b = Window("t:a", 60, 2), Window("t:b", 60, 2)
    assert [budget.try_acquire([a], now=T0) for _ in range(3)] == [0, 0, T0 + 60]
    assert [budget.try_acquire([b], now=T0) for _ in range(2)] == [0, 0]
    assert [u.used for u in budget.usage([a, b], now=T0)] == [2, 2]


def test_all_windows_or_none_are_charged(budget: RateBudget) -> None:
    short, daily = Window("t:15min", 60, 10), Window("t:daily", 600, 2)
    assert budget.try_acquire([short, daily], now=T0) == 0
    assert budget.try_acquire([short, daily], now=T0) == 0
    # The daily window is full: refused with the daily reset, the short window not charged.
    assert budget.try_acquire([short, daily], now=T0) == daily.end(T0) == T0 + 600
    assert [u.used for u in budget.usage([short, daily], now=T0)] == [2, 2]


@pytest.mark.parametrize(
    ("spent", "observed", "expected"),
    [
        pytest.param(2, 5, 5, id="provider-saw-more-raises"),
        pytest.param(4, 1, 4, id="provider-saw-less-keeps"),
        pytest.param(3, 3, 3, id="equal-keeps"),
    ],
)
def test_observe_only_raises_usage(
    budget: RateBudget, spent: int, observed: int, expected: int
) -> None:
    w = Window("t:reads", 60, 10)
    for _ in range(spent):
        assert budget.try_acquire([w], now=T0) == 0
    budget.observe([(w, observed, None)], now=T0 + 1)
    assert budget.usage([w], now=T0)[0].used == expected


def test_observe_adopts_the_providers_limit(budget: RateBudget) -> None:
    w = Window("t:reads", 60, 10)
    budget.observe([(w, 1, 2)], now=T0)
    assert budget.usage([w], now=T0)[0].limit == 2
    assert [budget.try_acquire([w], now=T0) for _ in range(2)] == [0, T0 + 60]


def test_exhaust_spends_the_current_window_only(budget: RateBudget) -> None:
    w, other = Window("t:reads", 60, 10), Window("t:other", 60, 10)
    budget.exhaust(w, now=T0 + 5)
    assert budget.try_acquire([w], now=T0 + 5) == T0 + 60
    assert budget.try_acquire([other], now=T0 + 5) == 0
    assert budget.try_acquire([w], now=T0 + 60) == 0


def test_acquire_waits_for_a_reset_within_max_wait(budget: RateBudget) -> None:
    w = Window("t:short", 1, 1)
    now = time.time()
    budget.exhaust(w, now=now)
    reset = w.end(now)  # the window exhausted, even if the clock has moved on since
    asked = time.time()
    waited = budget.acquire([w], max_wait=5.0)
    assert time.time() >= reset
    assert waited <= 2.0
    assert waited > 0 or asked >= reset  # no wait only if the window had ended already


def test_acquire_raises_with_the_reset_when_it_is_too_far(budget: RateBudget) -> None:
    w = Window("t:long", 3600, 1)
    budget.exhaust(w)
    now = time.time()
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as info:
        budget.acquire([w], max_wait=1.0)
    assert time.monotonic() - started < 1.0  # no waiting for a reset it cannot reach
    assert info.value.retry_at in (w.end(now), w.end(time.time()))


# ----------------------------------------------------------------- processes sharing it
TIME_SCALE = 100  # a 15-minute window lasts 9 s
READ_LIMIT = 8
# Activities per athlete: single pages, exact page multiples and multi-page histories.
ACTIVITY_COUNTS = [1, 37, 150, 199, 200, 201, 350, 401, 5, 88, 120, 600]
PROCESSES = 3
WORKER_TIMEOUT = 180.0


@dataclass(frozen=True)
class SyncSettings:
    """Picklable settings a child process builds its own StravaResource from."""

    db_url: str
    token_key: str
    base_url: str

    def resource(self) -> StravaResource:
        return StravaResource(
            app_db=AppDatabaseResource(url=self.db_url, token_key=self.token_key),
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            base_url=self.base_url,
            timeout_seconds=10.0,
            connect_timeout_seconds=5.0,
            time_scale=TIME_SCALE,
            read_limit_15min=READ_LIMIT,
            max_inline_wait_seconds=30.0,
        )


@dataclass(frozen=True)
class SyncReport:
    """One athlete's outcome, as a child process reports it."""

    athlete_id: int
    status: str
    added: int
    calls: int
    waited: float
    error: str | None


def _sync_worker(
    settings: SyncSettings, athlete_ids: list[int], go: Event, results: mp.Queue
) -> None:
    strava = settings.resource()
    reports: list[SyncReport] = []
    try:
        if not go.wait(WORKER_TIMEOUT):
            raise TimeoutError("never told to start")
        owner = f"proc-{os.getpid()}"
        for athlete_id in athlete_ids:
            o = sync_athlete(strava, athlete_id, mode="full", owner=owner, run_id=None)
            reports.append(
                SyncReport(
                    athlete_id,
                    o.status,
                    o.added,
                    o.stats.calls,
                    o.stats.rate_wait_seconds,
                    o.error,
                )
            )
    except BaseException as exc:
        reports.append(SyncReport(-1, "crashed", 0, 0, 0.0, f"{type(exc).__name__}: {exc}"))
    finally:
        strava.close()
        results.put(reports)


@pytest.fixture
def scaled_sandbox() -> Iterator[Sandbox]:
    """A sandbox with compressed time and a small 15-minute read limit."""
    server, box = start_sandbox(time_scale=TIME_SCALE, read_limit_15min=READ_LIMIT)
    yield box
    server.stop()


def _stored_counts(db_url: str) -> dict[int, int]:
    with transaction(db_url) as s:
        rows = s.execute(
            select(StravaActivity.athlete_id, func.count()).group_by(StravaActivity.athlete_id)
        ).all()
    return {int(a): int(n) for a, n in rows}


def test_processes_share_the_budget_without_a_single_429(
    app_db: AppDatabaseResource, scaled_sandbox: Sandbox
) -> None:
    connector = make_strava(app_db, scaled_sandbox, time_scale=TIME_SCALE)
    try:
        athletes = [connect(connector, scaled_sandbox, n) for n in ACTIVITY_COUNTS]
    finally:
        connector.close()
    expected_calls = sum(n // MAX_PER_PAGE + 1 for n in ACTIVITY_COUNTS)
    assert expected_calls > 2 * READ_LIMIT  # at least two resets are needed
    scaled_sandbox.state.reset_stats()
    settings = SyncSettings(app_db.url, app_db.token_key, scaled_sandbox.url)

    ctx = mp.get_context("spawn")
    go = ctx.Event()
    results: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_sync_worker, args=(settings, athletes[i::PROCESSES], go, results))
        for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    go.set()
    try:
        reports = [r for _ in procs for r in results.get(timeout=WORKER_TIMEOUT)]
    except queue.Empty:
        pytest.fail("a sync worker did not report within the deadline")
    finally:
        for p in procs:
            p.join(WORKER_TIMEOUT)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        results.join_thread()

    stats = scaled_sandbox.state.stats()
    assert stats["rate_limited"] == 0, stats["responses_by_status"]
    assert [r for r in reports if r.status != "succeeded"] == []
    assert sorted(r.athlete_id for r in reports) == sorted(athletes)
    # Every athlete synced exactly, with the minimal number of calls.
    assert _stored_counts(app_db.url) == {
        a: len(scaled_sandbox.state.activity_ids(a)) for a in athletes
    }
    assert {r.athlete_id: r.added for r in reports} == dict(
        zip(athletes, ACTIVITY_COUNTS, strict=True)
    )
    assert stats["requests_by_endpoint"]["GET /api/v3/athlete/activities"] == expected_calls
    assert sum(r.calls for r in reports) == expected_calls
    assert sum(r.waited for r in reports) > 0  # the processes did wait for resets
    # No window was overspent, and the calls spread over several windows.
    with transaction(app_db.url) as s:
        windows = list(s.scalars(select(RateWindow).where(RateWindow.bucket.like("%:read:15min"))))
    assert [(w.window_start, w.used) for w in windows if w.used > w.limit] == []
    assert all(w.limit == READ_LIMIT for w in windows)
    assert len([w for w in windows if w.used]) >= math.ceil(expected_calls / READ_LIMIT)


# ------------------------------------------------------------------------------- parking
def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def test_spent_budget_beyond_max_inline_wait_parks_the_work(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox
) -> None:
    strava = strava_factory(max_inline_wait_seconds=1.0)
    athlete = connect(strava, sandbox, 20)
    short = strava.read_windows()[0]
    budget = strava.app_db.budget()
    before = time.time()
    # Spend this window and the next, so a reset due within the inline wait parks too.
    budget.exhaust(short, now=before)
    budget.exhaust(short, now=before + short.seconds)
    sandbox.state.reset_stats()

    outcome = sync_athlete(strava, athlete, mode="full", owner="test", run_id=None)
    after = time.time()

    assert outcome.status == "parked", outcome.error
    assert outcome.error_class == "rate_limited"
    ends = {short.end(before), short.end(after)}
    assert outcome.retry_at in ends
    with transaction(strava.app_db.url) as s:
        st = s.get(SyncState, (SOURCE, str(athlete)))
        assert st is not None
        assert st.status == "parked"
        assert st.pending_mode == "full"
        assert st.lease_owner is None
        blocked = _aware(st.blocked_until)
    assert blocked is not None and blocked.timestamp() == outcome.retry_at
    stats = sandbox.state.stats()
    assert stats["rate_limited"] == 0
    assert not any(k.startswith("GET /api/v3") for k in stats["requests_by_endpoint"])
    assert strava.app_db.checkpoints(SOURCE).parked_due() == []


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (dt.datetime(2026, 12, 3, 13, 0), dt.datetime(2026, 12, 1), dt.datetime(2027, 1, 1)),
        (dt.datetime(2026, 2, 28, 23, 59), dt.datetime(2026, 2, 1), dt.datetime(2026, 3, 1)),
    ],
)
def test_monthly_windows_follow_calendar_months(
    budget: RateBudget, now: dt.datetime, start: dt.datetime, end: dt.datetime
) -> None:
    w = Window("t:credits", 31 * 86400, 2, monthly=True)
    t = now.replace(tzinfo=dt.UTC).timestamp()
    assert (w.start(t), w.end(t)) == (
        start.replace(tzinfo=dt.UTC).timestamp(),
        end.replace(tzinfo=dt.UTC).timestamp(),
    )
    assert [budget.try_acquire([w], now=t) for _ in range(3)] == [0, 0, w.end(t)]
    assert budget.try_acquire([w], now=w.end(t)) == 0  # a new month, a new allowance


def test_refund_gives_back_an_unused_charge(budget: RateBudget) -> None:
    w = Window("t:credits", 60, 1)
    assert budget.try_acquire([w], now=T0) == 0
    budget.refund([w], now=T0)
    assert budget.try_acquire([w], now=T0) == 0
    assert budget.try_acquire([w], now=T0) == T0 + 60


@pytest.mark.parametrize(("offset", "charged"), [(0.70, [T0]), (0.80, [T0, T0 + 1])])
def test_a_longer_guard_charges_late_calls_to_the_next_window_too(
    offset: float, charged: list[float]
) -> None:
    w = Window("t:second", 1, 15, guard_seconds=0.25)
    assert w.starts(T0 + offset) == charged
