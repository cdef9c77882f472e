"""Strava assets: one athlete's activities per partition, and the batch sweep job."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import dagster as dg
from pydantic import Field

from sync_pipeline.core import priorities
from sync_pipeline.core.dagster_events import (
    RETRY_POLICY,
    batch_events,
    run_is_finished,
    run_requested_at,
    single_partition_events,
)
from sync_pipeline.defs.strava.athletes import connected_athlete_ids
from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.processing import refresh_progress
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.sync import SOURCE, SyncOutcome, sync_athlete

STRAVA_ACTIVITIES = dg.AssetKey("strava_activities")
STREET_PROGRESS = dg.AssetKey("strava_street_progress")
SINGLE_RUN_MAX_RUNTIME = 1800
SWEEP_MAX_RUNTIME = 4 * 3600


class StravaSyncConfig(dg.Config):
    """Options of a single-athlete sync."""

    full: bool = Field(default=False, description="Re-sync every activity, not only new ones.")
    activity_ids: list[int] = Field(
        default_factory=list,
        description="Activities to fetch in detail after the sync (from push events).",
    )


@dg.asset(
    partitions_def=strava_athletes,
    group_name="strava",
    kinds={"strava", "sqlite"},
    retry_policy=RETRY_POLICY,
    output_required=False,
    metadata={"source": SOURCE},
)
def strava_activities(
    context: dg.AssetExecutionContext, config: StravaSyncConfig, strava: StravaResource
) -> Iterator[dg.MaterializeResult | dg.AssetObservation | dg.AssetMaterialization]:
    """Activities of one Strava athlete, synced from the Strava API (incremental or full)."""
    key = context.partition_key
    if not key.isdigit():
        raise dg.Failure(f"Partition {key!r} is not a Strava athlete id.", allow_retries=False)
    strava.app_db.check()
    strava.app_db.checkpoints(SOURCE).clear_hand_over(key)
    outcome = sync_athlete(
        strava,
        int(key),
        mode="full" if config.full else "incremental",
        owner=context.run.run_id,
        run_id=context.run.run_id,
        owner_is_dead=run_is_finished(context.instance),
        final_attempt=context.retry_number >= (RETRY_POLICY.max_retries or 0),
        activity_ids=config.activity_ids,
    )
    context.log.info(
        f"athlete {key}: {outcome.status} ({outcome.mode}), +{outcome.added} "
        f"~{outcome.updated} activities, {outcome.stats.calls} API calls"
        + (f"; {outcome.error}" if outcome.error else "")
    )
    yield from street_events(outcome)
    yield from single_partition_events(STRAVA_ACTIVITIES, outcome)


def street_events(outcome: SyncOutcome) -> Iterator[dg.AssetMaterialization]:
    """The athlete's street progress, when this sync processed activities."""
    if outcome.streets is not None:
        yield dg.AssetMaterialization(
            STREET_PROGRESS,
            partition=outcome.partition_key,
            metadata={
                "streets_touched": outcome.streets.streets_touched,
                "streets_completed": outcome.streets.streets_completed,
                "nodes_hit": outcome.streets.nodes_hit,
                "activities_processed": outcome.activities_processed,
            },
        )


@dg.asset(
    key=STREET_PROGRESS,
    partitions_def=strava_athletes,
    deps=[STRAVA_ACTIVITIES],
    group_name="strava",
    kinds={"numpy", "sqlite"},
)
def strava_street_progress(
    context: dg.AssetExecutionContext, strava: StravaResource
) -> dg.MaterializeResult:
    """Fraction of each street's nodes the athlete has passed (recomputed after processing)."""
    strava.app_db.check()
    if not strava.streets_file:
        raise dg.Failure(
            "No street network configured: set STRAVA_STREETS_FILE to a GeoJSON file "
            "(`sync-pipeline init` writes the sandbox city's).",
            allow_retries=False,
        )
    summary = refresh_progress(strava, int(context.partition_key))
    assert summary is not None
    return dg.MaterializeResult(
        metadata={
            "streets_touched": summary.streets_touched,
            "streets_completed": summary.streets_completed,
            "nodes_hit": summary.nodes_hit,
        }
    )


class StravaSweepConfig(dg.Config):
    """Which athletes a sweep run covers and how."""

    mode: Literal["incremental", "full"] = "incremental"
    shard: int = Field(default=0, ge=0, description="This run's shard of the athletes.")
    shards: int = Field(default=1, ge=1, description="Athletes are split by id modulo shards.")
    athletes: list[int] = Field(
        default_factory=list, description="Explicit athlete ids (overrides the shard)."
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="Athletes synced at once.")


@dg.op(out=dg.Out(dg.Nothing), tags={priorities.SOURCE_TAG: SOURCE})
def strava_sweep(
    context: dg.OpExecutionContext, config: StravaSweepConfig, strava: StravaResource
) -> Iterator[dg.AssetMaterialization | dg.AssetObservation | dg.Output[None]]:
    """Sync many athletes in one run; each athlete's outcome is logged on its own partition."""
    strava.app_db.check()
    if config.athletes:
        ids = sorted(set(config.athletes))
    else:
        ids = [
            a
            for a in connected_athlete_ids(strava.app_db.url, include_needs_reconnect=False)
            if a % config.shards == config.shard
        ]
    counts = {"succeeded": 0, "failed": 0, "parked": 0, "skipped": 0}
    calls = added = 0
    requested_at = run_requested_at(context)
    with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
        futures = [
            pool.submit(
                sync_athlete,
                strava,
                athlete_id,
                mode=config.mode,
                owner=context.run.run_id,
                run_id=context.run.run_id,
                hand_over_on_failure=True,
                owner_is_dead=run_is_finished(context.instance),
                requested_at=requested_at,
            )
            for athlete_id in ids
        ]
        for future in futures:
            outcome = future.result()
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            calls += outcome.stats.calls
            added += outcome.added
            if outcome.status == "failed":
                context.log.warning(f"athlete {outcome.athlete_id} failed: {outcome.error}")
            yield from street_events(outcome)
            yield from batch_events(STRAVA_ACTIVITIES, outcome)
    context.log.info(f"sweep of {len(ids)} athletes: {counts}, {calls} API calls")
    yield dg.Output(
        None,
        metadata={
            "athletes": len(ids),
            **{f"athletes_{k}": v for k, v in counts.items()},
            "activities_added": added,
            "api_calls": calls,
        },
    )


@dg.job(
    executor_def=dg.in_process_executor,
    tags={
        "dagster/max_runtime": SWEEP_MAX_RUNTIME,
        **priorities.job_tags(priorities.BATCH, SOURCE),
    },
)
def strava_sweep_job() -> None:
    """Batch sync of many Strava athletes per run (scheduled sweeps, parked work)."""
    strava_sweep()


strava_athlete_sync = dg.define_asset_job(
    "strava_athlete_sync",
    selection=[strava_activities],
    description="Sync one Strava athlete (manual syncs run at priority 10, above the batch).",
    executor_def=dg.in_process_executor,
    tags={
        **priorities.job_tags(priorities.MANUAL, SOURCE),
        "dagster/max_runtime": SINGLE_RUN_MAX_RUNTIME,
    },
)
