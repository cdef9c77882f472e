"""strava_activities against the sandbox over real HTTP: full, incremental, resume, faults."""

from __future__ import annotations

import math
from collections.abc import Callable

import dagster as dg
import pytest
from sqlalchemy import func, select

from sync_pipeline.core import priorities
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Athlete, OAuthToken, StravaActivity, SyncState
from sync_pipeline.core.tokens import forget_cached_tokens
from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.source import STRAVA_ACTIVITIES, strava_defs
from sync_pipeline_tests.conftest import Sandbox, connect


def materialize(
    instance: dg.DagsterInstance, strava: StravaResource, athlete_id: int, *, full: bool = False
) -> dg.ExecuteInProcessResult:
    """Materialize one athlete's partition as a user would (partition must exist)."""
    if not instance.has_dynamic_partition("strava_athletes", str(athlete_id)):
        instance.add_dynamic_partitions(strava_athletes.name or "", [str(athlete_id)])
    return dg.materialize(
        [strava_defs.asset],
        partition_key=str(athlete_id),
        resources={"strava": strava},
        instance=instance,
        run_config={"ops": {"strava_activities": {"config": {"full": full}}}},
        tags=priorities.run_tags(priorities.MANUAL, "strava", "test"),
        raise_on_error=False,
    )


def stored(db_url: str, athlete_id: int) -> list[tuple[int, str | None]]:
    """(id, name) of the athlete's stored activities, newest first."""
    with transaction(db_url) as s:
        rows = s.execute(
            select(StravaActivity.id, StravaActivity.name)
            .where(StravaActivity.athlete_id == athlete_id)
            .order_by(StravaActivity.start_epoch.desc())
        )
        return [(int(i), name) for i, name in rows]


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    """Metadata values of the run's materialization of strava_activities."""
    [mat] = [
        m
        for m in result.asset_materializations_for_node("strava_activities")
        if m.asset_key == STRAVA_ACTIVITIES
    ]
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The error message of the run's (first) step failure."""
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert error is not None
    return error.message


def api_list_calls(sandbox: Sandbox) -> int:
    """GET /athlete/activities calls the sandbox answered."""
    return sum(
        n
        for endpoint, n in sandbox.state.stats()["requests_by_endpoint"].items()
        if "athlete/activities" in endpoint
    )


@pytest.mark.parametrize("n", [0, 1, 200, 201, 2500])
def test_full_sync_is_exact_and_minimal(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox, n: int
) -> None:
    athlete = connect(strava, sandbox, n)
    sandbox.state.reset_stats()

    result = materialize(instance, strava, athlete)

    assert result.success
    rows = stored(strava.app_db.url, athlete)
    expected = sandbox.state.activity_ids(athlete)
    assert sorted(i for i, _ in rows) == sorted(expected)
    assert len(rows) == n
    calls = api_list_calls(sandbox)
    assert calls <= math.ceil(n / 200) + 1
    md = metadata(result)
    assert md["activities_added"] == n
    assert md["api_calls"] == calls
    assert md["mode"] == "full"


def test_full_sync_content_matches_api(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 5)
    assert materialize(instance, strava, athlete).success
    with transaction(strava.app_db.url) as s:
        acts = {a.id: a for a in s.scalars(select(StravaActivity))}
    for activity_id in sandbox.state.activity_ids(athlete):
        row = acts[activity_id]
        assert row.raw["id"] == activity_id
        assert row.name == row.raw["name"]
        assert row.distance_m == row.raw["distance"]
        assert row.sport_type == row.raw["sport_type"]
        assert row.start_epoch == int(row.start_date.timestamp())


def test_incremental_fetches_only_new(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 450)
    assert materialize(instance, strava, athlete).success
    new_ids = sandbox.state.add_activities(athlete, 3)
    sandbox.state.reset_stats()

    result = materialize(instance, strava, athlete)

    assert result.success
    md = metadata(result)
    assert md["mode"] == "incremental"
    assert md["activities_added"] == 3
    assert md["activities_updated"] == 0
    assert api_list_calls(sandbox) == 1
    assert {i for i, _ in stored(strava.app_db.url, athlete)} >= set(new_ids)
    assert len(stored(strava.app_db.url, athlete)) == 453


def test_repeated_full_sync_never_duplicates_and_drops_deleted(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 250)
    assert materialize(instance, strava, athlete).success
    gone = sandbox.state.activity_ids(athlete)[7]
    sandbox.state.delete_activity(gone)

    result = materialize(instance, strava, athlete, full=True)

    md = metadata(result)
    assert md["activities_added"] == 0
    assert md["activities_updated"] == 249
    assert md["activities_deleted"] == 1
    assert len(stored(strava.app_db.url, athlete)) == 249


def test_interrupted_sync_resumes_from_checkpoint(
    instance: dg.DagsterInstance, strava_factory: Callable[..., StravaResource], sandbox: Sandbox
) -> None:
    # No in-process retries, and the RetryPolicy's retries fail too: the run ends failed
    # after page 2, with its checkpoint committed.
    strava = strava_factory(transient_retries=0)
    athlete = connect(strava, sandbox, 1000)
    sandbox.state.reset_stats()
    calls = {"n": 0}
    original = strava.list_activities

    class Crash(Exception):
        pass

    def crashing(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash("worker died mid-sync")
        return original(*args, **kwargs)  # type: ignore[arg-type]

    object.__setattr__(strava, "list_activities", crashing)
    from sync_pipeline.defs.strava.sync import sync_athlete

    first = sync_athlete(strava, athlete, mode="full", owner="run-1", run_id="run-1")
    assert first.status == "failed"
    assert len(stored(strava.app_db.url, athlete)) == 400
    with transaction(strava.app_db.url) as s:
        st = s.get(SyncState, ("strava", str(athlete)))
        assert st is not None and st.pages_done == 2 and st.cursor_before is not None

    object.__setattr__(strava, "list_activities", original)
    sandbox.state.reset_stats()
    result = materialize(instance, strava, athlete)

    assert result.success
    md = metadata(result)
    assert md["resumed_from_checkpoint"] is True
    assert md["activities_added"] == 600
    assert api_list_calls(sandbox) == 4  # pages 3, 4, 5 and the empty one: none repeated
    rows = stored(strava.app_db.url, athlete)
    assert len(rows) == 1000 == len({i for i, _ in rows})


def test_5xx_burst_is_retried_and_succeeds(
    instance: dg.DagsterInstance, strava_factory: Callable[..., StravaResource], sandbox: Sandbox
) -> None:
    strava = strava_factory(transient_retries=3)
    athlete = connect(strava, sandbox, 30)
    sandbox.state.inject_fault("5xx", count=2, path_contains="/athlete/activities")

    result = materialize(instance, strava, athlete)

    assert result.success
    md = metadata(result)
    assert md["api_retries"] == 2
    assert len(stored(strava.app_db.url, athlete)) == 30


def test_revoked_athlete_needs_reconnect_and_is_not_retried(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 10)
    sandbox.state.inject_fault("revoked", athlete_id=athlete)
    sandbox.state.reset_stats()

    result = materialize(instance, strava, athlete)

    assert not result.success
    events = result.all_events
    assert not any(e.event_type_value == "STEP_RESTARTED" for e in events)
    assert "reconnect" in failure_message(result).lower()
    with transaction(strava.app_db.url) as s:
        a = s.get(Athlete, athlete)
        assert a is not None and a.state == "needs_reconnect"
    # A second attempt makes no API call at all.
    sandbox.state.reset_stats()
    assert not materialize(instance, strava, athlete).success
    assert sandbox.state.stats()["requests_total"] == 0


def test_expired_token_is_refreshed_and_rotation_persisted(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 3)
    store = strava.app_db.tokens("strava")
    before = store.get(str(athlete))
    assert before is not None
    with transaction(strava.app_db.url) as s:
        row = s.get(OAuthToken, ("strava", str(athlete)))
        assert row is not None
        row.expires_at = 0  # expired
    forget_cached_tokens()
    result = materialize(instance, strava, athlete)
    assert result.success
    after = store.get(str(athlete))
    assert after is not None
    assert after.refresh_token != before.refresh_token
    assert sandbox.state.stats()["refreshes"] == 1


def test_tokens_are_encrypted_and_never_in_metadata(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    athlete = connect(strava, sandbox, 3)
    tokens = strava.app_db.tokens("strava").get(str(athlete))
    assert tokens is not None
    with transaction(strava.app_db.url) as s:
        raw = s.execute(select(OAuthToken.access_token_enc, OAuthToken.refresh_token_enc)).one()
    assert tokens.access_token.encode() not in raw[0]
    assert tokens.refresh_token is not None and raw[1] is not None
    assert tokens.refresh_token.encode() not in raw[1]
    result = materialize(instance, strava, athlete)
    text = " ".join(str(e) for e in result.all_events)
    assert tokens.access_token not in text and tokens.refresh_token not in text


def test_unknown_partition_fails_clearly(
    instance: dg.DagsterInstance, strava: StravaResource
) -> None:
    result = materialize(instance, strava, 999999)
    assert not result.success
    assert "not connected" in failure_message(result)


def test_athletes_table_counts(strava: StravaResource, sandbox: Sandbox) -> None:
    connect(strava, sandbox, 0)
    connect(strava, sandbox, 0)
    with transaction(strava.app_db.url) as s:
        assert s.scalar(select(func.count()).select_from(Athlete)) == 2
