"""Street Keeper processing: streams stored, matched to streets, progress kept, deletes cascade."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from sqlalchemy import func, select

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import StravaActivity, StravaStream, StreetNodeHit, StreetProgress
from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.source import STREET_PROGRESS, strava_defs
from sync_pipeline.defs.strava.streets import load_network
from sync_pipeline.defs.strava.sync import SyncOutcome, delete_activity, sync_athlete
from sync_pipeline.sandbox.strava.city import write_streets_geojson
from sync_pipeline_tests.conftest import Sandbox, connect


@pytest.fixture(scope="module")
def streets_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sandbox city's network (seed 42, the sandbox default)."""
    return str(write_streets_geojson(tmp_path_factory.mktemp("streets") / "streets.geojson", 42))


def gps_activity(sandbox: Sandbox, athlete: int) -> int:
    """An activity of the athlete that has a GPS stream."""
    for activity_id in sandbox.state.activity_ids(athlete):
        access = sandbox.state.issue_tokens(athlete, "read,activity:read_all")["access_token"]
        token = sandbox.state.authenticate(access)
        if sandbox.state.get_streams(token, activity_id, ["latlng"]).get("latlng"):
            return activity_id
    raise AssertionError("no GPS activity")


def hits(db_url: str, athlete: int, activity: int | None = None) -> set[int]:
    with transaction(db_url) as s:
        q = select(StreetNodeHit.node_id).where(StreetNodeHit.athlete_id == athlete)
        if activity is not None:
            q = q.where(StreetNodeHit.activity_id == activity)
        return set(s.scalars(q))


def sync(strava: StravaResource, athlete: int, ids: list[int] | None = None) -> SyncOutcome:
    return sync_athlete(
        strava, athlete, mode="incremental", owner="test", run_id=None, activity_ids=ids
    )


def test_sync_processes_gps_activities_and_matches_the_streets_they_ran(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox, streets_file: str
) -> None:
    strava = strava_factory(streets_file=streets_file)
    athlete = connect(strava, sandbox, 1)
    first = sync(strava, athlete)  # a full first sync: summaries only, no streams
    assert first.mode == "full" and first.activities_processed == 0
    sandbox.state.add_activities(athlete, 6)

    outcome = sync(strava, athlete)

    assert outcome.status == "succeeded", outcome.error
    db = strava.app_db.url
    with transaction(db) as s:
        processed = s.scalar(select(func.count()).where(StravaActivity.processed_at.is_not(None)))
        streams = s.scalar(select(func.count()).select_from(StravaStream))
        progress = s.scalar(select(func.count()).select_from(StreetProgress))
    assert processed == outcome.activities_processed > 0
    assert streams == outcome.activities_processed
    assert outcome.streets is not None and progress is not None
    assert outcome.streets.streets_touched == progress > 0
    # The stored hits are exactly what the matcher finds on the sandbox's own stream.
    activity = gps_activity(sandbox, athlete)
    token = sandbox.state.authenticate(
        sandbox.state.issue_tokens(athlete, "read,activity:read_all")["access_token"]
    )
    latlng = np.asarray(sandbox.state.get_streams(token, activity, ["latlng"])["latlng"], float)
    expected = set(load_network(streets_file).match(latlng, 25.0).tolist())
    assert expected and hits(db, athlete, activity) == expected


def test_processing_again_changes_nothing_and_a_delete_takes_its_hits(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox, streets_file: str
) -> None:
    strava = strava_factory(streets_file=streets_file)
    athlete = connect(strava, sandbox, 3)
    assert sync(strava, athlete).status == "succeeded"
    db = strava.app_db.url
    activity = gps_activity(sandbox, athlete)
    assert sync(strava, athlete, [activity]).activities_processed == 1
    before = hits(db, athlete)
    assert before

    again = sync(strava, athlete, [activity])  # a redelivered or updated event
    assert again.status == "succeeded" and again.activities_processed == 1
    assert hits(db, athlete) == before

    assert delete_activity(db, athlete, activity)
    with transaction(db) as s:
        assert s.get(StravaStream, activity) is None
    assert not hits(db, athlete, activity)


def test_an_activity_deleted_before_we_fetch_it_is_skipped_with_the_reason(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox, streets_file: str
) -> None:
    strava = strava_factory(streets_file=streets_file)
    athlete = connect(strava, sandbox, 2)
    assert sync(strava, athlete).status == "succeeded"
    gone = sandbox.state.activity_ids(athlete)[0]
    sandbox.state.delete_activity(gone)

    outcome = sync(strava, athlete, [gone])

    assert outcome.status == "succeeded"
    assert outcome.activities_gone == 1
    assert outcome.metadata()["activities_gone_at_strava"] == 1


def test_a_lost_push_event_is_processed_by_the_next_incremental_sync(
    strava_factory: Callable[..., StravaResource], sandbox: Sandbox, streets_file: str
) -> None:
    strava = strava_factory(streets_file=streets_file)
    athlete = connect(strava, sandbox, 1)
    assert sync(strava, athlete).status == "succeeded"
    [new] = sandbox.state.add_activities(athlete, 1)  # no push event ever arrives

    outcome = sync(strava, athlete)

    assert outcome.added == 1
    with transaction(strava.app_db.url) as s:
        row = s.get(StravaActivity, new)
        assert row is not None
        assert row.processed_at is not None or row.trainer or row.manual


def test_the_run_logs_street_progress_on_the_athletes_partition(
    strava_factory: Callable[..., StravaResource],
    sandbox: Sandbox,
    streets_file: str,
    instance: dg.DagsterInstance,
) -> None:
    strava = strava_factory(streets_file=streets_file)
    athlete = connect(strava, sandbox, 3)
    instance.add_dynamic_partitions(strava_athletes.name or "", [str(athlete)])

    result = dg.materialize(
        [strava_defs.asset],
        partition_key=str(athlete),
        resources={"strava": strava},
        instance=instance,
        run_config={
            "ops": {
                "strava_activities": {"config": {"activity_ids": [gps_activity(sandbox, athlete)]}}
            }
        },
    )

    assert result.success
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=STREET_PROGRESS, asset_partitions=[str(athlete)]),
        limit=1,
    ).records
    md = record.asset_materialization
    assert md is not None
    touched = md.metadata["streets_touched"].value
    assert isinstance(touched, int) and touched > 0


def test_no_network_configured_stores_streams_without_matching(
    strava: StravaResource, sandbox: Sandbox, tmp_path: Path
) -> None:
    athlete = connect(strava, sandbox, 2)
    assert sync(strava, athlete).status == "succeeded"
    sandbox.state.add_activities(athlete, 2)
    outcome = sync(strava, athlete)
    assert outcome.status == "succeeded" and outcome.streets is None
    assert not hits(strava.app_db.url, athlete)
