"""users_sensor keeps the partition set equal to connected users; new users get first syncs."""

from __future__ import annotations

import dagster as dg

from sync_pipeline.core import priorities
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import PlatformConnection
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.users.accounts import add_user, delete_user, disconnect
from sync_pipeline.defs.users.partitions import users
from sync_pipeline.defs.users.sensors import users_sensor
from sync_pipeline_tests.defs.strava.test_sensors import apply


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
    with dg.build_sensor_context(instance=instance, resources={"app_db": app_db}) as ctx:
        result = users_sensor(ctx)
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
