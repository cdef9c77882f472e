"""Strava as a source: athletes' activities, with street progress as a companion asset."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import Field

from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import Env
from sync_pipeline.core.source import (
    Companion,
    PartitionSet,
    SweepSchedule,
    SyncSource,
    source_defs,
)
from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.strava.athletes import (
    connected_athlete_ids,
    disconnect,
    needs_reconnect_count,
)
from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.sync import SOURCE, SyncOutcome, sync_athlete

STRAVA_ACTIVITIES = dg.AssetKey("strava_activities")
STREET_PROGRESS = dg.AssetKey("strava_street_progress")


class StravaSyncOptions(dg.Config):
    """Options of a Strava sync (single athlete or sweep)."""

    full: bool = Field(default=False, description="Re-sync every activity, not only new ones.")


class StravaSyncConfig(StravaSyncOptions):
    """Options of a single-athlete sync; the push-event fields are set by the webhook sensor."""

    activity_ids: list[int] = Field(
        default_factory=list,
        description="Activities to fetch in detail after the sync (push events).",
    )
    deleted_activity_ids: list[int] = Field(
        default_factory=list,
        description="Activities deleted at Strava (push events): removed with their streets.",
    )
    deauthorized: bool = Field(
        default=False,
        description="The athlete revoked access at Strava (push event): purge their data.",
    )


def sync_partition(
    strava: StravaResource, key: str, ctx: RunContext, options: StravaSyncOptions
) -> SyncOutcome:
    """One athlete's sync, as every Dagster run calls it."""
    mode = "full" if options.full else "incremental"
    if not key.isdigit():
        outcome = SyncOutcome(key=key, mode=mode, status="failed", error_class="bad_partition")
        outcome.error = f"Partition {key!r} is not a Strava athlete id; delete the partition."
        return outcome
    athlete_id = int(key)
    if isinstance(options, StravaSyncConfig) and options.deauthorized:
        # Strava's policy: an athlete who revoked access has their data deleted.
        gone = disconnect(strava, athlete_id, revoke=False)
        outcome = SyncOutcome(key=key, mode=mode, status="skipped", athlete_id=athlete_id)
        outcome.error = "deauthorized at Strava: " + (
            "tokens, activities and streets deleted" if gone else "nothing stored"
        )
        return outcome
    single = options if isinstance(options, StravaSyncConfig) else None
    return sync_athlete(
        strava,
        athlete_id,
        mode=mode,
        owner=ctx.owner,
        run_id=ctx.run_id,
        hand_over_on_failure=ctx.hand_over_on_failure,
        owner_is_dead=ctx.owner_is_dead,
        final_attempt=ctx.final_attempt,
        activity_ids=single.activity_ids if single else None,
        deleted_activity_ids=single.deleted_activity_ids if single else None,
        requested_at=ctx.requested_at,
    )


def strava_resource(app_db: AppDatabaseResource, env: Env) -> StravaResource:
    """The Strava client from its settings (STRAVA_*)."""
    return StravaResource(
        app_db=app_db,
        client_id=env("STRAVA_CLIENT_ID"),
        client_secret=env("STRAVA_CLIENT_SECRET"),
        base_url=env("STRAVA_BASE_URL", default="https://www.strava.com"),
        time_scale=env("STRAVA_TIME_SCALE", default="1", integer=True),
        streets_file=env("STRAVA_STREETS_FILE", default=""),
    )


def _street_figures(outcome: Any) -> Mapping[str, Any] | None:
    streets = getattr(outcome, "streets", None)
    if streets is None:
        return None
    return {
        "streets_touched": streets.streets_touched,
        "streets_completed": streets.streets_completed,
        "nodes_hit": streets.nodes_hit,
        "activities_processed": outcome.activities_processed,
    }


def _recompute_streets(strava: StravaResource, key: str) -> Mapping[str, Any]:
    if not strava.streets_file:
        raise dg.Failure(
            "No street network configured: set STRAVA_STREETS_FILE to a GeoJSON file "
            "(`sync-pipeline init` writes the sandbox city's).",
            allow_retries=False,
        )
    from sync_pipeline.defs.strava.processing import refresh_progress  # numpy, scipy

    summary = refresh_progress(strava, int(key))
    assert summary is not None
    return {
        "streets_touched": summary.streets_touched,
        "streets_completed": summary.streets_completed,
        "nodes_hit": summary.nodes_hit,
    }


STRAVA = SyncSource(
    name=SOURCE,
    title="Strava",
    entity="activities",
    noun="athlete",
    description="Activities of one Strava athlete, synced from the Strava API (incremental or "
    "full), with streams matched to streets.",
    group="strava",
    kinds=frozenset({"strava", "sqlite"}),
    partitions=PartitionSet(
        strava_athletes, members=lambda db_url: map(str, connected_athlete_ids(db_url))
    ),
    sync=sync_partition,
    sweep_keys=lambda db_url: [
        str(a) for a in connected_athlete_ids(db_url, include_needs_reconnect=False)
    ],
    needs_reconnect=needs_reconnect_count,
    resource=strava_resource,
    budget=lambda strava: strava.budget_usage(),
    options=StravaSyncOptions,
    single_options=StravaSyncConfig,
    has_full_mode=True,
    schedules=(
        SweepSchedule(
            "strava_weekly_full_sync",
            "0 2 * * 1",
            "Full sync of every connected athlete, Mondays 02:00 UTC, at batch priority.",
            full=True,
        ),
        SweepSchedule(
            "strava_incremental_sync",
            "0 */6 * * *",
            "Incremental sync of every connected athlete every 6 hours (fits the daily limit).",
        ),
    ),
    companions=(
        Companion(
            dg.AssetSpec(
                STREET_PROGRESS,
                deps=[STRAVA_ACTIVITIES],
                description="Fraction of each street's nodes the athlete has passed "
                "(recomputed by the sync that processed activities).",
                group_name="strava",
                kinds={"numpy", "sqlite"},
                skippable=True,
            ),
            from_outcome=_street_figures,
            recompute=_recompute_streets,
        ),
    ),
)

strava_defs = source_defs(STRAVA)
defs = strava_defs.definitions()
