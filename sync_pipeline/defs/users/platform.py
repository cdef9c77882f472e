"""Dagster definitions of one consistency-tracker platform, built the same way for each.

Per platform (`github`, `youtube`, `x`, `instagram`), bound to the resource of that name:
- `<platform>_daily_activity`: asset partitioned by user (one user's daily counts);
- `<platform>_user_sync`: single-user job at manual priority (UI, CLI, retries);
- `<platform>_sweep_job`: batch run over many users, each user's outcome logged on its own
  partition, failures handed over to single-user retry runs at lowered priority;
- the 6-hourly sweep schedule, the retry and parked sensors, and a dead-letter check.
Every run carries `sync_pipeline/source=<platform>`, which dagster.yaml limits per platform,
so one platform's backlog never takes every slot.
"""

import datetime as dt
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from sync_pipeline.core import batching, priorities
from sync_pipeline.core.checkpoints import Checkpoints
from sync_pipeline.core.dagster_events import (
    RETRY_POLICY,
    batch_events,
    run_is_finished,
    run_requested_at,
    single_partition_events,
)
from sync_pipeline.core.daily import DEFAULT_TRAILING_DAYS, DailyActivityClient, sync_daily
from sync_pipeline.core.health import (
    current_budget,
    dead_letter_check,
    health_events,
    needs_reconnect_connections,
    source_health,
)
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.defs.users.accounts import connected_user_ids
from sync_pipeline.defs.users.partitions import users
from sync_pipeline.defs.users.scores import CONSISTENCY, refresh_scores

SINGLE_RUN_MAX_RUNTIME = 1800
SWEEP_MAX_RUNTIME = 4 * 3600
DEAD_LETTER_CHECK = "no_dead_letters"


class UserSyncConfig(dg.Config):
    """Options of a single-user platform sync."""

    trailing_days: int = Field(
        default=DEFAULT_TRAILING_DAYS, ge=1, le=366, description="Days re-synced before today."
    )


class SweepConfig(dg.Config):
    """Which users a platform sweep covers."""

    shard: int = Field(default=0, ge=0, description="This run's shard of the users.")
    shards: int = Field(default=1, ge=1, description="Users are split by hash modulo shards.")
    users: list[str] = Field(default_factory=list, description="Explicit user ids.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Users synced at once.")
    trailing_days: int = Field(default=DEFAULT_TRAILING_DAYS, ge=1, le=366)


def shard_of(user_id: str, shards: int) -> int:
    """Stable shard of a user id."""
    return int(hashlib.sha1(user_id.encode()).hexdigest()[:8], 16) % shards


def sweep_requests(
    platform: str, title: str, db_url: str, when: dt.datetime
) -> list[dg.RunRequest] | dg.SkipReason:
    """The sweep schedule's runs: `sweep_shards` runs over the users connected to `platform`."""
    n = len(connected_user_ids(db_url, platform))
    if n == 0:
        return dg.SkipReason(f"no users connected to {title}")
    shards = batching.sweep_shards(n)
    stamp = when.strftime("%Y%m%dT%H%M")
    return [
        dg.RunRequest(
            run_key=f"{platform}-{stamp}-{shard}of{shards}",
            run_config={
                "ops": {f"{platform}_sweep": {"config": {"shard": shard, "shards": shards}}}
            },
            tags=priorities.run_tags(priorities.BATCH, platform, "schedule"),
        )
        for shard in range(shards)
    ]


@dataclass(frozen=True)
class PlatformDefs:
    """Everything one platform contributes to the code location."""

    asset: dg.AssetsDefinition
    user_job: Any
    sweep_job: dg.JobDefinition
    schedule: dg.ScheduleDefinition
    retry_sensor: dg.SensorDefinition
    parked_sensor: dg.SensorDefinition
    check: dg.AssetChecksDefinition
    queue: dg.AssetSpec
    health_sensor: dg.SensorDefinition


def build_platform(platform: str, title: str) -> PlatformDefs:
    """Definitions of one platform; `title` is its display name."""
    asset_key = dg.AssetKey(f"{platform}_daily_activity")
    op_name = f"{platform}_daily_activity"

    def client_of(context: Any) -> DailyActivityClient:
        client: DailyActivityClient = getattr(context.resources, platform)
        client.app_db.check()
        return client

    @dg.asset(
        name=op_name,
        partitions_def=users,
        group_name="consistency",
        kinds={platform},
        retry_policy=RETRY_POLICY,
        output_required=False,
        required_resource_keys={platform},
        metadata={"source": platform},
        description=f"Items per local day of one user on {title} (trailing days re-synced).",
    )
    def daily_activity(
        context: dg.AssetExecutionContext, config: UserSyncConfig
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation | dg.AssetMaterialization]:
        client = client_of(context)
        key = context.partition_key
        client.app_db.checkpoints(platform).clear_hand_over(key)
        outcome = sync_daily(
            client,
            key,
            RunContext(
                owner=context.run.run_id,
                run_id=context.run.run_id,
                owner_is_dead=run_is_finished(context.instance),
                final_attempt=context.retry_number >= (RETRY_POLICY.max_retries or 0),
            ),
            trailing_days=config.trailing_days,
        )
        context.log.info(f"user {key} on {title}: {outcome.status} {outcome.figures}")
        if outcome.status == "succeeded":
            yield from refresh_scores(client.app_db.url, [key])
        yield from single_partition_events(asset_key, outcome)

    user_job = dg.define_asset_job(
        f"{platform}_user_sync",
        selection=[daily_activity],
        description=f"Sync one user's {title} activity (manual priority).",
        executor_def=dg.in_process_executor,
        tags={
            **priorities.job_tags(priorities.MANUAL, platform),
            "dagster/max_runtime": SINGLE_RUN_MAX_RUNTIME,
        },
    )

    @dg.op(
        name=f"{platform}_sweep",
        out=dg.Out(dg.Nothing),
        required_resource_keys={platform},
        tags={priorities.SOURCE_TAG: platform},
    )
    def sweep(
        context: dg.OpExecutionContext, config: SweepConfig
    ) -> Iterator[dg.AssetMaterialization | dg.AssetObservation | dg.Output[None]]:
        client = client_of(context)
        if config.users:
            keys = sorted(set(config.users))
        else:
            keys = [
                u
                for u in connected_user_ids(client.app_db.url, platform)
                if shard_of(u, config.shards) == config.shard
            ]
        ctx = RunContext(
            owner=context.run.run_id,
            run_id=context.run.run_id,
            owner_is_dead=run_is_finished(context.instance),
            hand_over_on_failure=True,
            requested_at=run_requested_at(context),
        )
        counts: dict[str, int] = {}
        calls = items = 0
        done: list[str] = []
        with ThreadPoolExecutor(max_workers=config.concurrency) as pool:
            futures = [
                pool.submit(sync_daily, client, key, ctx, trailing_days=config.trailing_days)
                for key in keys
            ]
            for future in futures:
                outcome: SyncOutcome = future.result()
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
                calls += outcome.stats.calls
                items += int(outcome.figures.get("items", 0))
                if outcome.status == "succeeded":
                    done.append(outcome.key)
                elif outcome.status == "failed":
                    context.log.warning(f"user {outcome.key} failed: {outcome.error}")
                yield from batch_events(asset_key, outcome)
        yield from refresh_scores(client.app_db.url, done)
        context.log.info(f"{title} sweep of {len(keys)} users: {counts}, {calls} API calls")
        yield dg.Output(
            None,
            metadata={
                "users": len(keys),
                **{f"users_{k}": v for k, v in sorted(counts.items())},
                "items": items,
                "api_calls": calls,
            },
        )

    @dg.job(
        name=f"{platform}_sweep_job",
        executor_def=dg.in_process_executor,
        tags={
            "dagster/max_runtime": SWEEP_MAX_RUNTIME,
            **priorities.job_tags(priorities.BATCH, platform),
        },
        description=f"Batch sync of many users' {title} activity per run.",
    )
    def sweep_job() -> None:
        sweep()

    def sweep_config(**config: Any) -> dict[str, Any]:
        return {"ops": {f"{platform}_sweep": {"config": config}}}

    @dg.schedule(
        name=f"{platform}_sync_all",
        job=sweep_job,
        cron_schedule="0 */6 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        required_resource_keys={platform},
        description=f"Every 6 hours: sync every user connected to {title}, in batches.",
    )
    def sync_all(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        client: DailyActivityClient = getattr(context.resources, platform)
        return sweep_requests(platform, title, client.app_db.url, context.scheduled_execution_time)

    # The client resource is named after the platform, so these sensors declare it in
    # `required_resource_keys` and read `context.resources`. Called directly (tests), Dagster
    # also passes it as a keyword argument: `**_invoked_with` takes it.
    @dg.sensor(
        name=f"{platform}_retry_sensor",
        job=user_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={platform},
        description=f"Users a {title} sweep failed become single-user runs at lowered priority.",
    )
    def retry_sensor(
        context: dg.SensorEvaluationContext, **_invoked_with: object
    ) -> dg.SensorResult | dg.SkipReason:
        client: DailyActivityClient = getattr(context.resources, platform)
        failed = client.app_db.checkpoints(platform).handed_over()
        known = set(context.instance.get_dynamic_partitions(users.name or ""))
        requests = [
            dg.RunRequest(
                partition_key=st.partition_key,
                run_key=f"retry-{platform}-{st.partition_key}-{st.failure_seq}",
                tags=priorities.run_tags(priorities.RETRY, platform, "retry"),
            )
            for st in failed
            if st.partition_key in known
        ]
        if not requests:
            return dg.SkipReason(f"no failed {title} users waiting for a retry")
        return dg.SensorResult(run_requests=requests)

    @dg.sensor(
        name=f"{platform}_parked_sensor",
        job=sweep_job,
        minimum_interval_seconds=batching.PARKED_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={platform},
        description=f"Re-requests {title} syncs parked on a spent budget just before the reset.",
    )
    def parked_sensor(
        context: dg.SensorEvaluationContext, **_invoked_with: object
    ) -> dg.SensorResult | dg.SkipReason:
        client: DailyActivityClient = getattr(context.resources, platform)
        due = sorted(
            (st.partition_key, str(st.blocked_until))
            for st in client.app_db.checkpoints(platform).parked_due(
                lead=batching.parked_lead(client.max_inline_wait_seconds)
            )
        )
        requests = [
            dg.RunRequest(
                run_key=batching.batch_run_key(f"parked-{platform}", chunk),
                run_config=sweep_config(users=[key for key, _ in chunk]),
                tags=priorities.run_tags(priorities.BATCH, platform, "parked"),
            )
            for chunk in batching.chunked(due, batching.SWEEP_BATCH)
        ]
        if not requests:
            return dg.SkipReason(f"no parked {title} work due")
        return dg.SensorResult(run_requests=requests)

    @dg.asset_check(
        asset=daily_activity,
        name=DEAD_LETTER_CHECK,
        required_resource_keys={platform},
        description=f"Fails while {title} syncs have dead letters.",
    )
    def no_dead_letters(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        client: DailyActivityClient = getattr(context.resources, platform)
        evaluation = dead_letter_check(
            asset_key, DEAD_LETTER_CHECK, client.app_db.checkpoints(platform).dead_letters()
        )
        return dg.AssetCheckResult(
            passed=evaluation.passed,
            metadata=evaluation.metadata,
            severity=evaluation.severity,
            description=evaluation.description,
        )

    queue_spec = dg.AssetSpec(
        f"{platform}_sync_queue",
        group_name="consistency",
        description=f"Queue depth, failures, dead letters and rate budget of {title} syncs, "
        "checked every minute and observed when a figure changes, else every 30 minutes (plot "
        "them from the asset's Plots tab).",
        kinds={"dagster"},
    )

    @dg.sensor(
        name=f"{platform}_health_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records {title} queue figures when one changed (else every 30 minutes) "
        "and evaluates its dead-letter check when the result changed.",
    )
    def health_sensor(
        context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
    ) -> dg.SensorResult | dg.SkipReason:
        """Reads the queue figures and dead letters each minute and records what changed.

        An observation of the queue asset when a figure changed since the last one or that is
        30 minutes old; a dead-letter check evaluation only when its result changed. Digests
        of both live in the cursor (see `health_events`): stored events are never purged.
        """
        db_url = app_db.url
        health = source_health(
            context.instance,
            db_url,
            platform,
            needs_reconnect=needs_reconnect_connections(db_url, platform),
            budget=current_budget(db_url, platform),
        )
        dead = Checkpoints(db_url, platform).dead_letters()
        return health_events(
            context.cursor,
            dg.AssetObservation(asset_key=queue_spec.key, metadata=health.metadata()),
            dead_letter_check(asset_key, DEAD_LETTER_CHECK, dead),
        )

    return PlatformDefs(
        daily_activity,
        user_job,
        sweep_job,
        sync_all,
        retry_sensor,
        parked_sensor,
        no_dead_letters,
        queue_spec,
        health_sensor,
    )


__all__ = ["CONSISTENCY", "PlatformDefs", "build_platform"]
