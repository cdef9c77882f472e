"""Daily retention: old runs and their event logs go, partition status stays."""

import dagster as dg
from pydantic import Field

from sync_pipeline.core import priorities
from sync_pipeline.core.cleanup import cleanup_runs, parse_age
from sync_pipeline.core.resources import AppDatabaseResource


class CleanupConfig(dg.Config):
    """How old a finished run must be to go."""

    older_than: str = Field(default="7d", description="Age such as 7d, 12h, 30m.")
    dry_run: bool = Field(default=False, description="Report what would go, delete nothing.")


@dg.op(tags={priorities.SOURCE_TAG: "operations"})
def cleanup_old_runs(
    context: dg.OpExecutionContext, config: CleanupConfig, app_db: AppDatabaseResource
) -> dg.Output[None]:
    """Delete finished runs older than the configured age, keeping latest materializations
    and the runs behind current failures."""
    try:
        age = parse_age(config.older_than)
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    report = cleanup_runs(context.instance, app_db.url, older_than=age, dry_run=config.dry_run)
    context.log.info(
        f"cleanup before {report.cutoff}: examined {report.examined}, "
        f"{'would delete' if config.dry_run else 'deleted'} {len(report.deleted)}"
    )
    figures = report.as_dict()
    figures.pop("deleted_run_ids")
    return dg.Output(None, metadata=figures)


@dg.job(
    executor_def=dg.in_process_executor,
    tags=priorities.run_tags(priorities.BATCH, "operations", "schedule"),
)
def cleanup_job() -> None:
    """Run retention (default: 7 days, as the seeds' queues kept jobs)."""
    cleanup_old_runs()


cleanup_daily = dg.ScheduleDefinition(
    name="cleanup_daily",
    job=cleanup_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="03:30 UTC daily: delete runs older than 7 days without regressing partitions.",
)


defs = dg.Definitions(jobs=[cleanup_job], schedules=[cleanup_daily])
