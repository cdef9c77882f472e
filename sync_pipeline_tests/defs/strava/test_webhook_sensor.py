"""From stored push events to runs: coalesced per athlete, deletions and deauthorization done
by the runs (the sensor only decides), crash safety."""

from __future__ import annotations

from typing import Any

import dagster as dg
from sqlalchemy import select

from sync_pipeline.core import priorities
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Athlete, OAuthToken, StravaActivity, WebhookEvent
from sync_pipeline.defs.automation.sensors import partitions_sensor
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.sensors import strava_webhook_sensor
from sync_pipeline.defs.strava.source import strava_defs
from sync_pipeline.webhooks.app import StravaEvent, store_event
from sync_pipeline_tests import sensors
from sync_pipeline_tests.conftest import Sandbox, connect
from sync_pipeline_tests.defs.strava.test_assets import materialize, metadata
from sync_pipeline_tests.sensors import apply


def event(owner: int, object_id: int, aspect: str, t: int, **updates: str) -> StravaEvent:
    kind = "athlete" if object_id == owner else "activity"
    return StravaEvent(kind, object_id, aspect, owner, 1, t, dict(updates))


def tick(instance: dg.DagsterInstance, strava: StravaResource, cursor: str | None) -> Any:
    return sensors.tick(strava_webhook_sensor, instance, strava.app_db, cursor=cursor)


def run(instance: dg.DagsterInstance, strava: StravaResource, req: dg.RunRequest) -> Any:
    """Execute a requested single-athlete run in-process, as the run worker would."""
    return dg.materialize(
        [strava_defs.asset],
        partition_key=req.partition_key,
        resources={"strava": strava},
        instance=instance,
        run_config=req.run_config,
        tags=req.tags,
    )


def test_events_become_one_run_per_athlete_and_are_applied(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    a, b = connect(strava, sandbox, 3), connect(strava, sandbox, 3)
    apply(instance, sensors.tick(partitions_sensor, instance, strava.app_db, strava=strava))
    assert materialize(instance, strava, a).success and materialize(instance, strava, b).success
    new_ids = sandbox.state.add_activities(a, 2)
    renamed = sandbox.state.activity_ids(a)[-1]
    sandbox.state.update_activity(renamed, name="Renamed by webhook", private=True)
    removed = sandbox.state.activity_ids(b)[0]
    sandbox.state.delete_activity(removed)  # deleted at Strava: its push event follows
    db = strava.app_db.url
    for ev in (
        event(a, new_ids[0], "create", 1),
        event(a, new_ids[1], "create", 2),
        event(a, renamed, "update", 3, title="Renamed by webhook", private="true"),
        event(b, removed, "delete", 4),
        event(999, 5, "create", 5),  # not one of ours
    ):
        store_event(db, ev)
    store_event(db, event(a, new_ids[0], "create", 1))  # a redelivery: stored once

    result = tick(instance, strava, None)

    assert isinstance(result, dg.SensorResult)
    req, req_b = result.run_requests or []  # three events for `a` coalesce into one run
    assert (req.partition_key, req_b.partition_key) == (str(a), str(b))
    assert req.tags[priorities.PRIORITY_TAG] == str(priorities.WEBHOOK)
    config = req.run_config["ops"]["strava_activities"]["config"]
    assert config["activity_ids"] == sorted([*new_ids, renamed])
    assert req_b.run_config["ops"]["strava_activities"]["config"]["deleted_activity_ids"] == [
        removed
    ]
    with transaction(db) as s:  # the sensor only decided: nothing was changed yet
        assert s.get(StravaActivity, removed) is not None
        assert s.scalar(select(WebhookEvent.handled_at).limit(1)) is None  # not yet handled

    # The runs fetch the new and changed activities in detail, and apply the deletion.
    md = metadata(run(instance, strava, req))
    assert md["details_fetched"] == 3
    assert metadata(run(instance, strava, req_b))["activities_gone_at_strava"] == 1
    with transaction(db) as s:
        assert s.get(StravaActivity, removed) is None
        row = s.get(StravaActivity, renamed)
        assert row is not None and row.name == "Renamed by webhook" and row.private is True

    # Next tick (cursor committed by the daemon) marks the events handled; no new runs.
    again = tick(instance, strava, result.cursor)
    assert isinstance(again, dg.SkipReason)
    with transaction(db) as s:
        assert all(e.handled_at is not None for e in s.scalars(select(WebhookEvent)))


def test_crash_before_cursor_commit_loses_nothing(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    a = connect(strava, sandbox, 1)
    [new] = sandbox.state.add_activities(a, 1)
    store_event(strava.app_db.url, event(a, new, "create", 1))

    first = tick(instance, strava, None)
    # The daemon died before committing `first` (cursor and runs): the next tick from the old
    # cursor asks for the same run again, with the same run key, so it runs exactly once.
    second = tick(instance, strava, None)

    assert isinstance(first, dg.SensorResult) and isinstance(second, dg.SensorResult)
    assert [r.run_key for r in first.run_requests or []] == [
        r.run_key for r in second.run_requests or []
    ]
    with transaction(strava.app_db.url) as s:
        assert s.scalar(select(WebhookEvent.handled_at)) is None


def test_deauthorization_purges_the_athlete_in_its_run(
    instance: dg.DagsterInstance, strava: StravaResource, sandbox: Sandbox
) -> None:
    a = connect(strava, sandbox, 4)
    apply(instance, sensors.tick(partitions_sensor, instance, strava.app_db, strava=strava))
    assert materialize(instance, strava, a).success
    store_event(strava.app_db.url, event(a, a, "update", 9, authorized="false"))

    result = tick(instance, strava, None)

    assert isinstance(result, dg.SensorResult)
    [req] = result.run_requests or []
    assert req.run_config["ops"]["strava_activities"]["config"] == {"deauthorized": True}
    with transaction(strava.app_db.url) as s:  # decided, not done
        assert s.get(Athlete, a) is not None

    assert run(instance, strava, req).success
    removal = sensors.tick(partitions_sensor, instance, strava.app_db, strava=strava)
    [delete] = removal.dynamic_partitions_requests or []
    assert list(delete.partition_keys) == [str(a)]
    with transaction(strava.app_db.url) as s:
        assert s.get(Athlete, a) is None
        assert s.get(OAuthToken, ("strava", str(a))) is None
        assert s.scalars(select(StravaActivity).where(StravaActivity.athlete_id == a)).all() == []
