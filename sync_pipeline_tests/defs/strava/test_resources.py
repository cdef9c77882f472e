"""StravaResource against the sandbox over HTTP: Strava's limits, 429s, tokens and errors, as
declared on the shared ProviderClient request loop."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sync_pipeline.core.errors import (
    AuthRevokedError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.tokens import TokenSet
from sync_pipeline.defs.strava.resources import PROVIDER, StravaResource
from sync_pipeline_tests.conftest import Sandbox, connect

LIST = "GET /api/v3/athlete/activities"


def list_calls(sandbox: Sandbox) -> int:
    return int(sandbox.state.stats()["requests_by_endpoint"].get(LIST, 0))


def answered_429_once(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox, **overrides: object
) -> tuple[StravaResource, int]:
    """A connected athlete whose next activities call Strava answers with a 429."""
    strava = strava_factory(**overrides)
    athlete = connect(strava, sandbox, 5)
    sandbox.state.inject_fault("429", path_contains="/athlete/activities")
    return strava, athlete


def test_usage_headers_correct_the_shared_budget(strava: StravaResource, sandbox: Sandbox) -> None:
    athlete = connect(strava, sandbox, 5)
    # Calls made elsewhere (another deployment with the same app) show only in the headers.
    for _ in range(7):
        sandbox.state.count_api_request(True)
    assert len(strava.list_activities(athlete)) == 5
    seen = sandbox.state.usage()
    assert seen["read_15min"] >= 8
    ours = {u.bucket.split(":", 2)[2].replace(":", "_"): u.used for u in strava.budget_usage()}
    assert ours == seen


def test_a_429_spends_the_window_and_parks_until_its_reset(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox
) -> None:
    strava, athlete = answered_429_once(strava_factory, sandbox, max_inline_wait_seconds=0.0)
    before = time.time()
    with pytest.raises(RateLimitedError) as info:
        strava.list_activities(athlete)
    short = strava.read_windows()[0]
    assert info.value.retry_at in {short.end(before), short.end(time.time())}
    assert "429" in str(info.value) and "15-minute" in str(info.value)
    assert list_calls(sandbox) == 1
    # The window is now spent for every process: the next call does not reach Strava.
    spent = strava.budget_usage()[0]
    assert spent.used >= spent.limit
    with pytest.raises(RateLimitedError):
        strava.list_activities(athlete)
    assert list_calls(sandbox) == 1


def test_a_429_near_its_reset_waits_for_it_and_the_call_succeeds(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox
) -> None:
    # Windows of 2 s: the reset is always within the 20 s inline wait.
    strava, athlete = answered_429_once(strava_factory, sandbox, time_scale=450)
    started = time.time()
    assert len(strava.list_activities(athlete, stats=CallStats())) == 5
    assert list_calls(sandbox) == 2
    # The retry went out only once the window of the refused call had ended.
    assert time.time() >= strava.read_windows()[0].end(started)


def test_a_rejected_access_token_is_refreshed_once_and_the_call_retried(
    strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 3)
    store = strava.app_db.tokens(PROVIDER)
    real = store.get(str(athlete))
    assert real is not None
    # Not expired by its date, but Strava no longer accepts it.
    store.save(str(athlete), TokenSet("no-longer-valid", real.refresh_token, real.expires_at))
    sandbox.state.reset_stats()
    assert len(strava.list_activities(athlete)) == 3
    assert sandbox.state.stats()["refreshes"] == 1
    after = store.get(str(athlete))
    assert after is not None and after.refresh_token != real.refresh_token  # Strava rotates


def test_a_missing_scope_is_permanent_and_costs_no_refresh(
    strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = sandbox.state.add_athlete(3)
    grant = sandbox.state.issue_tokens(athlete, "read")  # consent without activity:read_all
    strava.app_db.tokens(PROVIDER).save(
        str(athlete),
        TokenSet(grant["access_token"], grant["refresh_token"], int(grant["expires_at"]), "read"),
    )
    with pytest.raises(PermanentError) as info:
        strava.list_activities(athlete)
    assert not isinstance(info.value, AuthRevokedError)
    assert "activity:read_all" in str(info.value)
    assert sandbox.state.stats()["refreshes"] == 0


def test_revoked_access_needs_a_reconnect(strava: StravaResource, sandbox: Sandbox) -> None:
    athlete = connect(strava, sandbox, 3)
    sandbox.state.inject_fault("revoked", athlete_id=athlete)
    with pytest.raises(AuthRevokedError, match="reconnect"):
        strava.list_activities(athlete)


def test_an_unknown_activity_is_not_found(strava: StravaResource, sandbox: Sandbox) -> None:
    athlete = connect(strava, sandbox, 1)
    with pytest.raises(NotFoundError, match="not found"):
        strava.get_activity(athlete, 999_999_999)


def test_server_errors_beyond_the_retries_are_transient(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox
) -> None:
    strava = strava_factory(transient_retries=1)
    athlete = connect(strava, sandbox, 1)
    sandbox.state.inject_fault("5xx", count=5, path_contains="/athlete/activities", status=503)
    with pytest.raises(TransientError):
        strava.list_activities(athlete)
    assert list_calls(sandbox) == 2  # the call and its one retry
