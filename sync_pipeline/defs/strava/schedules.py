"""Strava schedules: the weekly full sweep and the incremental sweep, sharded into batch runs."""

import dagster as dg

from sync_pipeline.core import priorities
from sync_pipeline.core.batching import sweep_shards
from sync_pipeline.defs.strava.assets import strava_sweep_job
from sync_pipeline.defs.strava.athletes import connected_athlete_ids
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.sync import SOURCE


def sweep_requests(
    context: dg.ScheduleEvaluationContext, strava: StravaResource, mode: str
) -> list[dg.RunRequest] | dg.SkipReason:
    """`sweep_shards` batch runs over the connected athletes (athletes split by id modulo)."""
    n = len(connected_athlete_ids(strava.app_db.url, include_needs_reconnect=False))
    if n == 0:
        return dg.SkipReason("no connected athletes")
    shards = sweep_shards(n)
    stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
    return [
        dg.RunRequest(
            run_key=f"{mode}-{stamp}-{shard}of{shards}",
            run_config={
                "ops": {
                    "strava_sweep": {"config": {"mode": mode, "shard": shard, "shards": shards}}
                }
            },
            tags=priorities.run_tags(priorities.BATCH, SOURCE, f"schedule_{mode}"),
        )
        for shard in range(shards)
    ]


@dg.schedule(
    job=strava_sweep_job,
    cron_schedule="0 2 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def strava_weekly_full_sync(
    context: dg.ScheduleEvaluationContext, strava: StravaResource
) -> list[dg.RunRequest] | dg.SkipReason:
    """Full sync of every connected athlete, Mondays 02:00 UTC, at batch priority."""
    return sweep_requests(context, strava, "full")


@dg.schedule(
    job=strava_sweep_job,
    cron_schedule="0 */6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def strava_incremental_sync(
    context: dg.ScheduleEvaluationContext, strava: StravaResource
) -> list[dg.RunRequest] | dg.SkipReason:
    """Incremental sync of every connected athlete every 6 hours (fits the daily read limit)."""
    return sweep_requests(context, strava, "incremental")
