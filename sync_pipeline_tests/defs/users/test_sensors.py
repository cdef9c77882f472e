"""The shared sensors on the platforms: `users` follows connected users, health, parked work."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from sqlalchemy import insert

from sync_pipeline.core import batching, priorities
from sync_pipeline.core.batching import shard_of
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import AppUser, PlatformConnection
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.source import sweep_requests
from sync_pipeline.defs.automation.sensors import health_sensor, parked_sensor, partitions_sensor
from sync_pipeline.defs.github.source import GITHUB, github_defs
from sync_pipeline.defs.users.accounts import add_user, delete_user, disconnect
from sync_pipeline.defs.users.partitions import users
from sync_pipeline_tests import sensors
from sync_pipeline_tests.sensors import apply

github_sweep_job = github_defs.sweep_job


def connect_row(db_url: str, user: str, platform: str, state: str = "connected") -> None:
    with transaction(db_url) as s:
        s.add(
            PlatformConnection(
                user_id=user,
                platform=platform,
                account_id=f"{platform}-{user}",
                state=state,
                extra={},
            )
        )


def tick(instance: dg.DagsterInstance, db_url: str) -> dg.SensorResult | dg.SkipReason:
    app_db = AppDatabaseResource(url=db_url, token_key=generate_key())
    result = sensors.tick(partitions_sensor, instance, app_db)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def test_users_become_partitions_with_one_first_sync_per_connected_platform(
    instance: dg.DagsterInstance, db_url: str
) -> None:
    add_user(db_url, "ana")
    add_user(db_url, "ben")
    add_user(db_url, "nobody")  # no connection: not a partition
    connect_row(db_url, "ana", "github")
    connect_row(db_url, "ana", "x")
    connect_row(db_url, "ben", "youtube", state="needs_reconnect")

    result = tick(instance, db_url)

    assert isinstance(result, dg.SensorResult)
    apply(instance, result)
    assert sorted(instance.get_dynamic_partitions(users.name or "")) == ["ana", "ben"]
    requests = {(r.job_name, r.partition_key): r for r in result.run_requests or []}
    assert set(requests) == {("github_user_sync", "ana"), ("x_user_sync", "ana")}
    for req in requests.values():
        assert req.tags[priorities.PRIORITY_TAG] == str(priorities.NEW_USER)
        assert req.tags[priorities.LANE_TAG] == "interactive"
    assert isinstance(tick(instance, db_url), dg.SkipReason)


def test_users_without_connections_leave_the_partition_set(
    instance: dg.DagsterInstance, db_url: str
) -> None:
    add_user(db_url, "ana")
    add_user(db_url, "ben")
    connect_row(db_url, "ana", "github")
    connect_row(db_url, "ben", "github")
    first = tick(instance, db_url)
    assert isinstance(first, dg.SensorResult)
    apply(instance, first)

    disconnect(db_url, "ana", "github")
    delete_user(db_url, "ben")
    result = tick(instance, db_url)

    assert isinstance(result, dg.SensorResult)
    apply(instance, result)
    assert instance.get_dynamic_partitions(users.name or "") == []
    assert not result.run_requests


def connect_rows(db_url: str, user_ids: list[str], platform: str) -> None:
    """Users connected to `platform`, in one statement per table (no OAuth round trips)."""
    with transaction(db_url) as s:
        s.execute(insert(AppUser), [{"id": u, "timezone": "UTC"} for u in user_ids])
        s.execute(
            insert(PlatformConnection),
            [
                {"user_id": u, "platform": platform, "account_id": f"{platform}-{u}", "extra": {}}
                for u in user_ids
            ],
        )


def test_many_new_users_of_a_platform_get_batched_first_syncs(
    instance: dg.DagsterInstance, db_url: str
) -> None:
    crowd = [f"u{i:04d}" for i in range(1_050)]
    connect_rows(db_url, crowd, "github")
    connect_row(db_url, crowd[0], "x")
    connect_row(db_url, crowd[1], "x")

    result = tick(instance, db_url)

    assert isinstance(result, dg.SensorResult)
    [add] = result.dynamic_partitions_requests or []
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert sorted(add.partition_keys or []) == crowd
    runs = result.run_requests or []
    # x, with two new users, keeps one single-user run each.
    assert sorted(
        (r.job_name, r.partition_key) for r in runs if r.job_name != "github_sweep_job"
    ) == [
        ("x_user_sync", crowd[0]),
        ("x_user_sync", crowd[1]),
    ]
    batches = [r for r in runs if r.job_name == "github_sweep_job"]
    assert len(batches) == 3
    assert {j.name for j in partitions_sensor.jobs} >= {"github_sweep_job", "x_user_sync"}
    assert {r.tags[priorities.PRIORITY_TAG] for r in batches} == {str(priorities.NEW_USER)}
    assert {r.tags[priorities.LANE_TAG] for r in batches} == {"batch"}
    assert {r.tags[priorities.SOURCE_TAG] for r in batches} == {"github"}
    covered = [u for r in batches for u in r.run_config["ops"]["github_sweep"]["config"]["keys"]]
    assert sorted(covered) == crowd  # every new user exactly once
    assert all(
        len(r.run_config["ops"]["github_sweep"]["config"]["keys"]) <= batching.SWEEP_BATCH
        for r in batches
    )
    for run in batches:
        assert dg.validate_run_config(github_sweep_job, run.run_config)

    again = tick(instance, db_url)
    assert isinstance(again, dg.SensorResult)
    assert [r.run_key for r in again.run_requests or []] == [r.run_key for r in runs]
    apply(instance, result)
    assert isinstance(tick(instance, db_url), dg.SkipReason)


@pytest.mark.parametrize("n", [1, 501, 6_001])
def test_platform_sweep_schedule_is_capped_and_covers_every_user_once(db_url: str, n: int) -> None:
    crowd = [f"u{i:05d}" for i in range(n)]
    connect_rows(db_url, crowd, "github")

    # The body of `github_sync_all` (the schedule reads its resource's database URL).
    when = dt.datetime(2026, 11, 23, 6, tzinfo=dt.UTC)
    result = sweep_requests(GITHUB, db_url, when, GITHUB.schedules[0])

    assert isinstance(result, list)
    assert len(result) == batching.sweep_shards(n) <= batching.MAX_SWEEP_RUNS
    configs = [r.run_config["ops"]["github_sweep"]["config"] for r in result]
    assert all(dg.validate_run_config(github_sweep_job, r.run_config) for r in result)
    covering = {u: [c for c in configs if shard_of(u, c["shards"]) == c["shard"]] for u in crowd}
    assert {u: len(runs) for u, runs in covering.items()} == dict.fromkeys(crowd, 1)


# ------------------------------------------------------ health sensors: only what changed


def health_tick(
    platform: str, instance: dg.DagsterInstance, app_db: AppDatabaseResource, cursor: str | None
) -> dg.SensorResult | dg.SkipReason:
    result = sensors.tick(health_sensor, instance, app_db, cursor=cursor)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def emitted(result: dg.SensorResult | dg.SkipReason, platform: str) -> list[tuple[str, str]]:
    """(event class, asset) of what a health tick emitted about `platform`; [] for none."""
    return [
        (type(e).__name__, e.asset_key.to_user_string())
        for e in sensors.of_source(result, platform)
    ]


def check_result(result: dg.SensorResult, platform: str) -> dg.AssetCheckEvaluation:
    """The platform's dead-letter check evaluation a health tick emitted (its second event)."""
    evaluation = sensors.of_source(result, platform)[1]
    assert isinstance(evaluation, dg.AssetCheckEvaluation)
    return evaluation


@pytest.mark.parametrize("platform", ["github", "youtube", "x", "instagram"])
def test_platform_health_sensor_records_changes_and_check_results_once(
    instance: dg.DagsterInstance, app_db: AppDatabaseResource, platform: str
) -> None:
    from sqlalchemy import update

    from sync_pipeline.core.models import SyncState

    queue, activity = f"{platform}_sync_queue", f"{platform}_daily_activity"
    both = [("AssetObservation", queue), ("AssetCheckEvaluation", activity)]
    first = health_tick(platform, instance, app_db, None)
    assert emitted(first, platform) == both
    assert isinstance(first, dg.SensorResult)
    assert emitted(health_tick(platform, instance, app_db, first.cursor), platform) == []

    with transaction(app_db.url) as s:  # a dead letter appears...
        s.add(SyncState(source=platform, partition_key="ana", status="dead"))
    failing = health_tick(platform, instance, app_db, first.cursor)
    assert emitted(failing, platform) == both
    assert isinstance(failing, dg.SensorResult)
    assert not check_result(failing, platform).passed
    assert emitted(health_tick(platform, instance, app_db, failing.cursor), platform) == []

    with transaction(app_db.url) as s:  # ...and is redriven successfully
        s.execute(update(SyncState).where(SyncState.source == platform).values(status="succeeded"))
    passing = health_tick(platform, instance, app_db, failing.cursor)
    assert emitted(passing, platform) == both
    assert isinstance(passing, dg.SensorResult)
    assert check_result(passing, platform).passed
    # Another platform's dead letters are not this sensor's news.
    with transaction(app_db.url) as s:
        s.add(SyncState(source="strava", partition_key="9", status="dead"))
    assert emitted(health_tick(platform, instance, app_db, passing.cursor), platform) == []


# ------------------------------------------------------ parked work: just before the reset


@pytest.mark.parametrize("platform", ["github", "youtube", "x", "instagram"])
def test_platform_parked_sensor_requests_work_whose_reset_is_within_the_inline_wait(
    instance: dg.DagsterInstance, app_db: AppDatabaseResource, platform: str
) -> None:
    cp = app_db.checkpoints(platform)
    now = dt.datetime.now(dt.UTC)
    for user, reset_in in [("ana", -1), ("ben", 15), ("cy", 25), ("dan", 600)]:
        cp.claim(user, "t", dt.timedelta(minutes=1))
        cp.release(user, "t")
        cp.park(user, until=now + dt.timedelta(seconds=reset_in), reason="budget", mode="x")

    result = sensors.tick(parked_sensor, instance, app_db)

    [req] = sensors.of_source(result, platform)
    # Past resets and those the run can wait for in-process (20 s); not the others.
    assert req.run_config["ops"][f"{platform}_sweep"]["config"] == {"keys": ["ana", "ben"]}
    assert req.tags[priorities.PRIORITY_TAG] == str(priorities.BATCH)
