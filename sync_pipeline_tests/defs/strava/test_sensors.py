"""Strava sensors and schedules, evaluated as functions against a test instance."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import insert

from sync_pipeline.core import batching, priorities
from sync_pipeline.core.batching import shard_of
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Athlete, utcnow
from sync_pipeline.core.source import DEAD_LETTER_CHECK
from sync_pipeline.defs.automation.sensors import (
    health_sensor,
    parked_sensor,
    partitions_sensor,
    retry_sensor,
)
from sync_pipeline.defs.strava.athletes import disconnect
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.source import STRAVA_ACTIVITIES, strava_defs
from sync_pipeline.defs.strava.sync import SOURCE, sync_athlete
from sync_pipeline_tests import sensors
from sync_pipeline_tests.conftest import Sandbox, connect
from sync_pipeline_tests.sensors import apply

strava_athlete_sync = strava_defs.single_job
strava_sweep_job = strava_defs.sweep_job
weekly_full_sync, incremental_sync = strava_defs.schedules


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, strava: StravaResource) -> Any:
    return sensors.tick(sensor, instance, strava.app_db, strava=strava)


def insert_athletes(db_url: str, athlete_ids: list[int]) -> None:
    """Connected athlete rows in one statement (the partition sensor reads nothing else)."""
    rows = [
        {"id": a, "scopes": "read,activity:read_all", "state": "connected"} for a in athlete_ids
    ]
    with transaction(db_url) as s:
        s.execute(insert(Athlete), rows)


def spread_ids(n: int) -> list[int]:
    """`n` athlete ids of several digit counts (string order differs from numeric order)."""
    return [37 * i + 5 for i in range(n)]


def test_partition_sensor_adds_and_removes_athletes(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    a, b = connect(strava, sandbox, 2), connect(strava, sandbox, 0)

    result = tick(partitions_sensor, instance, strava)

    assert isinstance(result, dg.SensorResult)
    [add] = result.dynamic_partitions_requests or []
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert list(add.partition_keys) == [str(a), str(b)]
    assert [(r.partition_key, r.run_key) for r in result.run_requests or []] == [
        (str(a), f"first-sync-strava-{a}"),
        (str(b), f"first-sync-strava-{b}"),
    ]
    first = (result.run_requests or [])[0]
    assert first.tags[priorities.PRIORITY_TAG] == str(priorities.NEW_USER)
    assert first.run_config["ops"]["strava_activities"]["config"]["full"] is True
    apply(instance, result)

    assert isinstance(tick(partitions_sensor, instance, strava), dg.SkipReason)

    # `a` was synced by a single-partition run; disconnecting removes the partition and
    # what Dagster remembers of it.
    from sync_pipeline_tests.defs.strava.test_assets import materialize

    assert materialize(instance, strava, a).success
    assert disconnect(strava, a)
    result = tick(partitions_sensor, instance, strava)
    assert isinstance(result, dg.SensorResult)
    [delete] = result.dynamic_partitions_requests or []
    assert isinstance(delete, dg.DeleteDynamicPartitionsRequest)
    assert list(delete.partition_keys) == [str(a)]
    assert not result.run_requests
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=STRAVA_ACTIVITIES, asset_partitions=[str(a)]), limit=10
    ).records
    assert records == []
    apply(instance, result)
    assert instance.get_dynamic_partitions("strava_athletes") == [str(b)]


@pytest.mark.parametrize("joining", [3, batching.SINGLE_FIRST_SYNC_MAX])
def test_a_few_new_athletes_get_one_first_sync_run_each(
    instance: dg.DagsterInstance, strava: StravaResource, joining: int
) -> None:
    ids = spread_ids(joining)
    insert_athletes(strava.app_db.url, ids)

    result = tick(partitions_sensor, instance, strava)

    assert isinstance(result, dg.SensorResult)
    assert [(r.job_name, r.partition_key, r.run_key) for r in result.run_requests or []] == [
        (strava_athlete_sync.name, str(a), f"first-sync-strava-{a}") for a in ids
    ]


def test_many_new_athletes_get_batched_first_syncs(
    instance: dg.DagsterInstance, strava: StravaResource
) -> None:
    ids = spread_ids(1_050)
    insert_athletes(strava.app_db.url, ids)

    result = tick(partitions_sensor, instance, strava)

    assert isinstance(result, dg.SensorResult)
    [add] = result.dynamic_partitions_requests or []
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert sorted(add.partition_keys or [], key=int) == [str(a) for a in ids]
    runs = result.run_requests or []
    assert len(runs) == 3
    assert {r.job_name for r in runs} == {strava_sweep_job.name}
    assert {j.name for j in partitions_sensor.jobs} >= {
        strava_athlete_sync.name,
        strava_sweep_job.name,
    }
    assert {r.tags[priorities.PRIORITY_TAG] for r in runs} == {str(priorities.NEW_USER)}
    # Long bulk first syncs stay out of the slots reserved for manual and webhook runs.
    assert {r.tags[priorities.LANE_TAG] for r in runs} == {"batch"}
    assert {r.tags[priorities.SOURCE_LANE_TAG] for r in runs} == {"strava/batch"}
    configs = [r.run_config["ops"]["strava_sweep"]["config"] for r in runs]
    assert {c["full"] for c in configs} == {True}
    covered = [int(a) for c in configs for a in c["keys"]]
    assert sorted(covered) == ids  # every new athlete exactly once
    assert all(len(c["keys"]) <= batching.SWEEP_BATCH for c in configs)
    for run in runs:
        assert dg.validate_run_config(strava_sweep_job, run.run_config)
    assert len({r.run_key for r in runs}) == 3

    # Evaluated again before the daemon applied anything: the same run keys (Dagster skips
    # run keys it has seen); once the partitions exist, nothing is requested at all.
    again = tick(partitions_sensor, instance, strava)
    assert isinstance(again, dg.SensorResult)
    assert [r.run_key for r in again.run_requests or []] == [r.run_key for r in runs]
    apply(instance, result)
    assert isinstance(tick(partitions_sensor, instance, strava), dg.SkipReason)


def test_sweep_isolates_failures_and_hands_them_to_retry_sensor(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    good1, bad, good2 = (connect(strava, sandbox, n) for n in (3, 4, 5))
    apply(instance, tick(partitions_sensor, instance, strava))
    sandbox.state.inject_fault("revoked", athlete_id=bad)

    result = strava_sweep_job.execute_in_process(
        run_config={"ops": {"strava_sweep": {"config": {"full": True}}}},
        resources={"strava": strava},
        instance=instance,
    )

    assert result.success  # one athlete failing never fails the others
    mats = result.asset_materializations_for_node("strava_sweep")
    assert sorted(m.partition for m in mats if m.partition) == sorted([str(good1), str(good2)])
    obs = [
        e.event_specific_data.asset_observation  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert [o.partition for o in obs] == [str(bad)]
    assert obs[0].metadata["error_class"].value == "needs_reconnect"

    retry = tick(retry_sensor, instance, strava)
    assert isinstance(retry, dg.SensorResult)
    [req] = retry.run_requests or []
    assert req.partition_key == str(bad)
    assert req.run_key == f"retry-strava-{bad}-1"
    assert req.tags[priorities.PRIORITY_TAG] == str(priorities.RETRY)

    # The sweep skips athletes who must reconnect: no API call for them next time.
    sandbox.state.reset_stats()
    strava_sweep_job.execute_in_process(resources={"strava": strava}, instance=instance)
    assert (
        sandbox.state.stats()["requests_by_endpoint"].get("GET /api/v3/athlete/activities", 0) == 2
    )


@pytest.mark.parametrize(
    ("synced_after_request", "first", "second", "skipped"),
    [
        (True, "full", "full", True),
        (True, "full", "incremental", True),
        (True, "incremental", "full", False),  # an incremental sync is no full one
        (False, "full", "full", False),
    ],
)
def test_batch_sync_skips_an_athlete_another_run_synced_after_it_was_requested(
    strava: StravaResource,
    sandbox: Sandbox,
    synced_after_request: bool,
    first: str,
    second: str,
    skipped: bool,
) -> None:
    # Two parked-work runs listing the same athlete: the second must not sync it again.
    athlete = connect(strava, sandbox, 3)
    if first == "incremental":
        sync_athlete(strava, athlete, mode="full", owner="run-0", run_id="run-0")
    before = utcnow()
    sync_athlete(strava, athlete, mode=first, owner="run-1", run_id="run-1")
    requested_at = before if synced_after_request else utcnow()
    sandbox.state.reset_stats()

    outcome = sync_athlete(
        strava, athlete, mode=second, owner="run-2", run_id="run-2", requested_at=requested_at
    )

    calls = sandbox.state.stats()["requests_by_endpoint"].get("GET /api/v3/athlete/activities", 0)
    if skipped:
        assert (outcome.status, calls) == ("skipped", 0)
        assert outcome.error is not None and "already synced" in outcome.error
    else:
        assert (outcome.status, calls) == ("succeeded", 1)
    state = strava.app_db.checkpoints(SOURCE).get(str(athlete))
    assert state is not None and state.lease_owner is None  # the lease is given back


def test_parked_sensor_requests_due_work(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    a, b, c = (connect(strava, sandbox, 1) for _ in range(3))
    cp = strava.app_db.checkpoints(SOURCE)
    for key in (a, b, c):
        cp.claim(str(key), "t", dt.timedelta(minutes=1))
        cp.release(str(key), "t")
    assert strava.max_inline_wait_seconds == 20
    cp.park(str(a), until=utcnow() - dt.timedelta(seconds=1), reason="budget", mode="full")
    cp.park(str(b), until=utcnow() + dt.timedelta(minutes=10), reason="budget", mode="full")
    # Resets within the inline wait: requested now, so the run is waiting when it comes.
    cp.park(str(c), until=utcnow() + dt.timedelta(seconds=10), reason="budget", mode="full")

    result = tick(parked_sensor, instance, strava)

    assert isinstance(result, dg.SensorResult)
    [req] = result.run_requests or []
    assert req.run_config["ops"]["strava_sweep"]["config"] == {
        "full": True,
        "keys": sorted([str(a), str(c)]),
    }
    again = tick(parked_sensor, instance, strava)
    assert isinstance(again, dg.SensorResult)
    assert (again.run_requests or [])[0].run_key == req.run_key  # deduplicated by Dagster


@pytest.mark.parametrize(("athletes", "batch", "shards"), [(0, 500, 0), (3, 500, 1), (5, 2, 3)])
def test_sweep_schedules_shard_athletes(
    instance: dg.DagsterInstance,
    strava: StravaResource,
    sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    athletes: int,
    batch: int,
    shards: int,
) -> None:
    for _ in range(athletes):
        connect(strava, sandbox, 0)
    monkeypatch.setattr(batching, "SWEEP_BATCH", batch)
    when = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources={"strava": strava}
    ) as ctx:
        result = weekly_full_sync(ctx)

    if shards == 0:
        assert isinstance(result, dg.SkipReason)
        return
    assert isinstance(result, list)
    assert [r.run_config["ops"]["strava_sweep"]["config"] for r in result] == [
        {"full": True, "shard": i, "shards": shards} for i in range(shards)
    ]
    assert {r.tags[priorities.PRIORITY_TAG] for r in result} == {str(priorities.BATCH)}
    assert len({r.run_key for r in result}) == shards


@pytest.mark.parametrize("athletes", [1, 501, 6_001])
def test_sweep_schedule_runs_cover_every_athlete_once(
    instance: dg.DagsterInstance, strava: StravaResource, athletes: int
) -> None:
    ids = spread_ids(athletes)
    insert_athletes(strava.app_db.url, ids)
    when = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, resources={"strava": strava}
    ) as ctx:
        result = incremental_sync(ctx)

    assert isinstance(result, list)
    assert len(result) == batching.sweep_shards(athletes) <= batching.MAX_SWEEP_RUNS
    configs = [r.run_config["ops"]["strava_sweep"]["config"] for r in result]
    covering = {a: [c for c in configs if shard_of(str(a), c["shards"]) == c["shard"]] for a in ids}
    assert {a: len(runs) for a, runs in covering.items()} == dict.fromkeys(ids, 1)


def test_schedule_cadences() -> None:
    assert weekly_full_sync.name == "strava_weekly_full_sync"
    assert weekly_full_sync.cron_schedule == "0 2 * * 1"
    assert weekly_full_sync.execution_timezone == "UTC"
    assert incremental_sync.name == "strava_incremental_sync"
    assert incremental_sync.cron_schedule == "0 */6 * * *"


def test_dead_letter_recorded_checked_and_observed(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    from sync_pipeline_tests.defs.strava.test_assets import materialize

    ok, revoked = connect(strava, sandbox, 2), connect(strava, sandbox, 2)
    assert materialize(instance, strava, ok).success
    sandbox.state.inject_fault("revoked", athlete_id=revoked)
    assert not materialize(instance, strava, revoked).success

    [dead] = strava.app_db.checkpoints(SOURCE).dead_letters()
    assert dead.partition_key == str(revoked)
    assert dead.last_error_class == "needs_reconnect"
    assert dead.first_failure_at is not None

    result = tick(health_sensor, instance, strava)
    assert isinstance(result, dg.SensorResult)
    observation, check = sensors.of_source(result, "strava")
    assert isinstance(observation, dg.AssetObservation)
    assert observation.metadata["dead_letters"].value == 1
    assert observation.metadata["needs_reconnect"].value == 1
    assert observation.metadata["partitions_succeeded"].value == 1
    assert isinstance(check, dg.AssetCheckEvaluation)
    assert check.check_name == DEAD_LETTER_CHECK and not check.passed
    assert str(revoked) in str(check.metadata["list"].value)

    # Reconnecting and a successful sync clear the dead letter.
    from sync_pipeline.defs.strava.athletes import connect_via_oauth

    sandbox.state.reset_stats()
    connect_via_oauth(strava, auto_approve=True, sandbox_athlete_id=revoked)
    assert materialize(instance, strava, revoked).success
    assert strava.app_db.checkpoints(SOURCE).dead_letters() == []


# ------------------------------------------------------ health sensor: only what changed


def health_tick(
    instance: dg.DagsterInstance, strava: StravaResource, cursor: str | None = None
) -> dg.SensorResult | dg.SkipReason:
    result = sensors.tick(health_sensor, instance, strava.app_db, cursor=cursor, strava=strava)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def event_kinds(result: dg.SensorResult | dg.SkipReason) -> list[str]:
    """Class names of the Strava events a health tick emitted ([] for a skip)."""
    return [type(e).__name__ for e in sensors.of_source(result, "strava")]


def aged(cursor: str | None, seconds: float) -> str:
    """A health sensor's cursor as it reads `seconds` after its last observation."""
    import json

    state = json.loads(cursor or "{}")
    strava = json.loads(state["strava"])
    strava["observed_at"] -= seconds
    state["strava"] = json.dumps(strava)
    return json.dumps(state)


@pytest.mark.parametrize(
    ("status", "emitted"),
    [
        (None, []),
        ("failed", ["AssetObservation"]),
        ("dead", ["AssetObservation", "AssetCheckEvaluation"]),
    ],
)
def test_health_sensor_records_only_what_changed(
    instance: dg.DagsterInstance, strava: StravaResource, status: str | None, emitted: list[str]
) -> None:
    from sync_pipeline.core.models import SyncState

    first = health_tick(instance, strava)
    # No cursor (a new deployment, a reset sensor): both, so the UI has current values.
    assert event_kinds(first) == ["AssetObservation", "AssetCheckEvaluation"]
    assert isinstance(first, dg.SensorResult)
    if status is not None:
        with transaction(strava.app_db.url) as s:
            s.add(SyncState(source=SOURCE, partition_key="7", status=status))

    second = health_tick(instance, strava, first.cursor)

    assert event_kinds(second) == emitted
    if isinstance(second, dg.SensorResult):
        figures = sensors.of_source(second, "strava")[0].metadata
        assert figures[f"partitions_{status}"].value == 1
        if status == "dead":
            check = sensors.of_source(second, "strava")[1]
            assert isinstance(check, dg.AssetCheckEvaluation) and not check.passed
        # What was emitted is remembered: the tick after has nothing new to say.
        assert event_kinds(health_tick(instance, strava, second.cursor)) == []


@pytest.mark.parametrize(("minutes", "emitted"), [(29, []), (30, ["AssetObservation"])])
def test_health_sensor_observes_unchanged_figures_every_30_minutes(
    instance: dg.DagsterInstance, strava: StravaResource, minutes: int, emitted: list[str]
) -> None:
    first = health_tick(instance, strava)
    assert isinstance(first, dg.SensorResult)

    later = health_tick(instance, strava, aged(first.cursor, minutes * 60))

    assert event_kinds(later) == emitted
    if isinstance(later, dg.SensorResult):
        # The new observation restarts the 30 minutes.
        assert event_kinds(health_tick(instance, strava, later.cursor)) == []
