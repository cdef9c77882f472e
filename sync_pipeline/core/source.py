"""One shape for every source: a `SyncSource` declaration and the builder of its definitions.

A source declares what is its own: the partition set it syncs, its client resource, the
per-partition sync function, its options, its sweep schedules and optional companion assets
(produced by the same sync). `source_defs` turns any declaration into the same objects:

- `<source>_<entity>`: the asset partitioned by user; a single-partition run syncs one user,
  with the RetryPolicy, and the partition shows the reason when it fails;
- `<source>_<noun>_sync`: the single-partition job (manual, new-user, webhook and retry runs);
- `<source>_sweep_job`: the batch job; each partition's outcome is logged on its own
  partition, failures are handed over to single-partition retry runs;
- the sweep schedules, the dead-letter check and the `<source>_sync_queue` asset the health
  sensor observes.

The sensors shared by all sources (partitions, retries, parked work, health) live in
`sync_pipeline/defs/automation/` and read the registry (`sync_pipeline/sources.py`).
"""

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

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
from sync_pipeline.core.health import ItemDeadLetters, dead_letter_check
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import Env
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome

SINGLE_RUN_MAX_RUNTIME = 1800
SWEEP_MAX_RUNTIME = 4 * 3600
DEAD_LETTER_CHECK = "no_dead_letters"
SWEEP_CONCURRENCY = 4  # partitions a sweep run syncs at once (threads), unless configured

#: (client, partition key, who runs it, options) -> the recorded outcome; never raises.
SyncFn = Callable[[Any, str, RunContext, Any], SyncOutcome]
Events = Iterator[dg.AssetMaterialization]


class NoOptions(dg.Config):
    """This source's syncs take no options."""


@dataclass(frozen=True)
class PartitionSet:
    """A dynamic partition set and who belongs in it (one or more sources sync it)."""

    definition: dg.DynamicPartitionsDefinition
    #: Partition keys that should exist now (connected users, including those who must
    #: reconnect: their failures stay visible).
    members: Callable[[str], Iterable[str]]
    #: Other partitioned assets on this set whose partitions are forgotten with the user,
    #: as (asset key, value of their runs' source tag).
    also_forget: tuple[tuple[dg.AssetKey, str], ...] = ()

    @property
    def name(self) -> str:
        """The partitions definition's name."""
        return self.definition.name or ""


@dataclass(frozen=True)
class SweepSchedule:
    """A cron that syncs every partition of the source in batch runs."""

    name: str
    cron: str
    description: str
    full: bool = False
    #: Whether the schedule runs as soon as it is deployed (else it is started in the UI).
    running: bool = True


@dataclass(frozen=True)
class Companion:
    """An asset the source's sync produces next to its main asset (same op, same run)."""

    spec: dg.AssetSpec
    #: Metadata of the companion's materialization after a sync, or None if untouched.
    from_outcome: Callable[[SyncOutcome], Mapping[str, Any] | None]
    #: Recompute the companion alone (it is selected without the main asset).
    recompute: Callable[[Any, str], Mapping[str, Any]]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per source
class SyncSource:
    """Everything that differs between sources; `source_defs` builds the rest."""

    name: str  # run tag, checkpoint and budget namespace, resource key, name prefix
    title: str  # display name
    entity: str  # asset name suffix: <name>_<entity>
    noun: str  # what a partition is: single job <name>_<noun>_sync, log lines
    description: str  # the asset's one-line description
    group: str
    kinds: frozenset[str]
    partitions: PartitionSet
    sync: SyncFn
    #: Partitions sweeps and first syncs cover (connected, not waiting to reconnect).
    sweep_keys: Callable[[str], list[str]]
    needs_reconnect: Callable[[str], int]
    #: The client resource, bound to the app database, with settings from `env`.
    resource: Callable[[AppDatabaseResource, Env], Any]
    options: type[dg.Config] = NoOptions  # options of sweeps and single runs
    single_options: type[dg.Config] | None = None  # single runs, when they take more
    #: Whether the source knows full syncs (options.full); parked and failed work keeps it.
    has_full_mode: bool = False
    schedules: tuple[SweepSchedule, ...] = ()
    companions: tuple[Companion, ...] = ()
    #: Events of assets downstream of a sync (recomputed in the same run) for these keys.
    after_sync: Callable[[Any, list[str]], Events] | None = None
    queue_description: str = ""
    #: Whether newly connected partitions get a first sync (later stages of a pipeline of
    #: sources, e.g. outreach replies, wait for their own trigger).
    first_sync: bool = True
    #: How long before its reset parked work is re-requested: what a run may wait inline
    #: (default: the clients' `max_inline_wait_seconds`, 20 s). 0 for work parked on a
    #: schedule (backoff, business hours) that the run re-checks.
    parked_lead_seconds: float = 20.0
    #: Dagster concurrency pool of the main asset's step (limits it across all runs).
    pool: str | None = None
    #: Assets run after the main asset in its single-partition job, each its own step (own
    #: pool, own retries): later stages of a staged sync, e.g. Promidata's products and
    #: images after its catalog. Sweeps run the main asset only; the stages find their
    #: pending work in the app DB, so the next single run catches up.
    downstream: tuple[dg.AssetsDefinition, ...] = ()
    #: The main asset's name when it is not `<name>_<entity>` (sources sharing a partition
    #: set whose assets are named after what they hold, e.g. outreach's `prospect_email`).
    asset_name: str = ""
    #: Sync many partitions at once (one batched API call); sweeps use it instead of `sync`
    #: per partition. Each outcome is still its own partition's.
    sync_many: Callable[[Any, list[str], RunContext, Any], list[SyncOutcome]] | None = None
    #: Dead letters below the partition (items the sync retries on its own, e.g. Promidata's
    #: families and images): listed, checked and redriven with the partitions' dead letters.
    item_dead_letters: ItemDeadLetters | None = None
    #: (app DB URL, run id) -> the progress rows a run wrote, for `sync-pipeline runs show`
    #: (each with partition, stage, state, step, done, total, percent).
    run_progress: Callable[[str, str], list[dict[str, Any]]] | None = None

    @property
    def asset_key(self) -> dg.AssetKey:
        """Key of the main asset."""
        return dg.AssetKey(self.asset_name or f"{self.name}_{self.entity}")

    @property
    def single_job_name(self) -> str:
        """Name of the single-partition job."""
        return f"{self.name}_{self.noun}_sync"

    @property
    def sweep_job_name(self) -> str:
        """Name of the batch job."""
        return f"{self.name}_sweep_job"

    @property
    def sweep_op_name(self) -> str:
        """Name of the batch job's op (run config key)."""
        return f"{self.name}_sweep"

    @property
    def queue_key(self) -> dg.AssetKey:
        """Key of the queue figures asset."""
        return dg.AssetKey(f"{self.name}_sync_queue")

    def _options(self, full: bool, extra: Mapping[str, Any]) -> dict[str, Any]:
        options = dict(extra)
        if full:
            if not self.has_full_mode:
                raise ValueError(f"{self.title} syncs have no full mode")
            options["full"] = True
        return options

    def single_run_config(self, *, full: bool = False, **extra: Any) -> dict[str, Any]:
        """Run config of a single-partition run (empty when every option is the default)."""
        options = self._options(full, extra)
        (self.single_options or self.options)(**options)  # validates names and values now
        return {"ops": {self.asset_key.path[-1]: {"config": options}}} if options else {}

    def sweep_run_config(
        self,
        *,
        keys: Sequence[str] = (),
        shard: int = 0,
        shards: int = 1,
        full: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """Run config of a batch run: explicit keys, or one shard of the sweep keys."""
        config: dict[str, Any] = self._options(full, extra)
        if keys:
            config["keys"] = [str(k) for k in keys]
        else:
            config.update(shard=shard, shards=shards)
        self.options(**self._options(full, extra))
        return {"ops": {self.sweep_op_name: {"config": config}}}

    def dead_items(self, db_url: str) -> list[dict[str, Any]]:
        """Rows of the dead items below the partitions (none for most sources)."""
        return self.item_dead_letters.rows(db_url) if self.item_dead_letters else []

    def progress_of(self, db_url: str, run_id: str) -> list[dict[str, Any]]:
        """Progress rows a run of this source wrote (none for most sources)."""
        return self.run_progress(db_url, run_id) if self.run_progress else []

    def client(self, resources: Any) -> Any:
        """This source's client resource from a context's resources, its database checked."""
        client = getattr(resources, self.name)
        app_db: AppDatabaseResource = client.app_db
        app_db.check()
        return client


@dataclass(frozen=True)
class SourceDefs:
    """The definitions built for one source."""

    source: SyncSource
    asset: dg.AssetsDefinition
    single_job: Any  # an unresolved asset job (define_asset_job)
    sweep_job: dg.JobDefinition
    schedules: tuple[dg.ScheduleDefinition, ...]
    check: dg.AssetChecksDefinition
    queue: dg.AssetSpec

    def definitions(self) -> dg.Definitions:
        """As a Definitions object (what a defs module exposes)."""
        return dg.Definitions(
            assets=[self.asset, *self.source.downstream, self.queue],
            jobs=[self.single_job, self.sweep_job],
            schedules=list(self.schedules),
            asset_checks=[self.check],
        )


def _sweep_config(source: SyncSource) -> type[dg.Config]:
    """The sweep op's config: the source's options plus which partitions the run covers."""
    config_cls = type(
        f"{source.title.replace(' ', '')}SweepConfig",
        (source.options,),
        {
            "__doc__": f"Which {source.noun}s a {source.title} sweep run covers, and how.",
            "__annotations__": {
                "keys": list[str],
                "shard": int,
                "shards": int,
                "concurrency": int,
            },
            "keys": Field(
                default_factory=list, description="Explicit partition keys (override the shard)."
            ),
            "shard": Field(default=0, ge=0, description="This run's shard of the partitions."),
            "shards": Field(default=1, ge=1, description="Partitions split by key hash."),
            "concurrency": Field(
                default=SWEEP_CONCURRENCY, ge=1, le=64, description="Partitions synced at once."
            ),
        },
    )
    return cast(type[dg.Config], config_cls)


def _options_of(source: SyncSource, config: dg.Config) -> dg.Config:
    """The source's own options out of a sweep config."""
    names = set(source.options.model_fields)
    return source.options(**{k: v for k, v in config.model_dump().items() if k in names})


def sweep_requests(
    source: SyncSource, db_url: str, when: dt.datetime, schedule: SweepSchedule
) -> list[dg.RunRequest] | dg.SkipReason:
    """A sweep schedule's runs: `sweep_shards` batch runs over the source's sweep keys."""
    n = len(source.sweep_keys(db_url))
    if n == 0:
        return dg.SkipReason(f"no {source.noun}s connected to {source.title}")
    shards = batching.sweep_shards(n)
    stamp = when.strftime("%Y%m%dT%H%M")
    mode = "full" if schedule.full else "incremental"
    return [
        dg.RunRequest(
            run_key=f"{source.name}-{mode}-{stamp}-{shard}of{shards}",
            run_config=source.sweep_run_config(shard=shard, shards=shards, full=schedule.full),
            tags=priorities.run_tags(priorities.BATCH, source.name, f"schedule_{mode}"),
        )
        for shard in range(shards)
    ]


def first_sync_requests(source: SyncSource, keys: list[str]) -> list[dg.RunRequest]:
    """First syncs of newly connected partitions: one single-partition run each, or batch
    runs when many join at once (an import, a launch day)."""
    if len(keys) <= batching.SINGLE_FIRST_SYNC_MAX:
        return [
            dg.RunRequest(
                job_name=source.single_job_name,
                partition_key=key,
                run_key=f"first-sync-{source.name}-{key}",
                run_config=source.single_run_config(full=source.has_full_mode),
                tags=priorities.run_tags(priorities.NEW_USER, source.name, f"new_{source.noun}"),
            )
            for key in keys
        ]
    # Each partition's outcome still lands on its own partition; failures go to retries.
    return [
        dg.RunRequest(
            job_name=source.sweep_job_name,
            run_key=batching.batch_run_key(f"first-sync-batch-{source.name}", chunk),
            run_config=source.sweep_run_config(keys=chunk, full=source.has_full_mode),
            tags=priorities.run_tags(
                priorities.NEW_USER, source.name, f"new_{source.noun}s", lane_name="batch"
            ),
        )
        for chunk in batching.chunked(keys, batching.SWEEP_BATCH)
    ]


def retry_requests(source: SyncSource, db_url: str, known: set[str]) -> list[dg.RunRequest]:
    """Single-partition runs, at lowered priority, for partitions a batch run failed."""
    return [
        dg.RunRequest(
            job_name=source.single_job_name,
            partition_key=st.partition_key,
            run_key=f"retry-{source.name}-{st.partition_key}-{st.failure_seq}",
            run_config=source.single_run_config(
                full=source.has_full_mode and st.pending_mode == "full"
            ),
            tags=priorities.run_tags(priorities.RETRY, source.name, "retry"),
        )
        for st in Checkpoints(db_url, source.name).handed_over()
        if st.partition_key in known
    ]


def parked_requests(source: SyncSource, db_url: str, lead: dt.timedelta) -> list[dg.RunRequest]:
    """Batch runs for work parked on a spent rate budget whose reset is within `lead`."""
    by_mode: dict[bool, list[tuple[str, str]]] = {}
    for st in Checkpoints(db_url, source.name).parked_due(lead=lead):
        full = source.has_full_mode and st.pending_mode == "full"
        by_mode.setdefault(full, []).append((st.partition_key, str(st.blocked_until)))
    requests = []
    for full, items in sorted(by_mode.items()):
        items.sort()
        mode = "full" if full else "incremental"
        for chunk in batching.chunked(items, batching.SWEEP_BATCH):
            # Same parked work → same run key (Dagster runs it once); parked again → new key.
            requests.append(
                dg.RunRequest(
                    job_name=source.sweep_job_name,
                    run_key=batching.batch_run_key(f"parked-{source.name}-{mode}", chunk),
                    run_config=source.sweep_run_config(keys=[k for k, _ in chunk], full=full),
                    tags=priorities.run_tags(priorities.BATCH, source.name, "parked"),
                )
            )
    return requests


def _companion_events(
    source: SyncSource, outcome: SyncOutcome
) -> Iterator[tuple[dg.AssetKey, Mapping[str, Any]]]:
    for companion in source.companions:
        md = companion.from_outcome(outcome)
        if md is not None:
            yield companion.spec.key, md


def runless_materializations(
    source: SyncSource, outcome: SyncOutcome
) -> list[dg.AssetMaterialization]:
    """What a single-partition run would materialize for a succeeded sync (the main asset with
    the sync's figures, then the companions it touched), as events reported outside a run."""
    if outcome.status != "succeeded":
        return []
    key = outcome.partition_key
    return [
        dg.AssetMaterialization(source.asset_key, partition=key, metadata=outcome.metadata()),
        *(
            dg.AssetMaterialization(asset_key, partition=key, metadata=dict(md))
            for asset_key, md in _companion_events(source, outcome)
        ),
    ]


@functools.cache
def source_defs(source: SyncSource) -> SourceDefs:
    """Build the asset, jobs, schedules, check and queue asset of a source (once)."""
    name, title = source.name, source.title
    single_options = source.single_options or source.options
    main = dg.AssetSpec(
        source.asset_key,
        description=source.description,
        group_name=source.group,
        kinds=set(source.kinds),
        metadata={"source": name},
        skippable=True,
    )
    specs = [main, *(c.spec for c in source.companions)]
    companion_keys = {c.spec.key: c for c in source.companions}

    @dg.multi_asset(
        name=source.asset_key.path[-1],
        specs=specs,
        partitions_def=source.partitions.definition,
        retry_policy=RETRY_POLICY,
        required_resource_keys={name},
        can_subset=bool(source.companions),
        op_tags={priorities.SOURCE_TAG: name},
        pool=source.pool,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: single_options,  # type: ignore[valid-type]
    ) -> Iterator[dg.MaterializeResult | dg.AssetObservation | dg.AssetMaterialization]:
        client = source.client(context.resources)
        key = context.partition_key
        selected = context.selected_asset_keys
        if source.asset_key not in selected:
            # A companion alone: recompute it from what is stored, no API call.
            for asset_key in sorted(selected, key=lambda k: k.to_user_string()):
                md = companion_keys[asset_key].recompute(client, key)
                yield dg.MaterializeResult(asset_key=asset_key, metadata=dict(md))
            return
        client.app_db.checkpoints(name).clear_hand_over(key)
        outcome = source.sync(
            client,
            key,
            RunContext(
                owner=context.run.run_id,
                run_id=context.run.run_id,
                owner_is_dead=run_is_finished(context.instance),
                final_attempt=context.retry_number >= (RETRY_POLICY.max_retries or 0),
            ),
            config,
        )
        context.log.info(
            f"{source.noun} {key} on {title}: {outcome.status} ({outcome.mode}), "
            f"{outcome.stats.calls} API calls" + (f"; {outcome.error}" if outcome.error else "")
        )
        # The main asset first (multi-assets yield in dependency order); raises on failure.
        final = context.retry_number >= (RETRY_POLICY.max_retries or 0)
        for event in list(single_partition_events(source.asset_key, outcome, final_attempt=final)):
            if isinstance(event, dg.MaterializeResult):
                yield dg.MaterializeResult(asset_key=source.asset_key, metadata=event.metadata)
            else:
                yield event
        for asset_key, md in _companion_events(source, outcome):
            if asset_key in selected:
                yield dg.MaterializeResult(asset_key=asset_key, metadata=dict(md))
        if outcome.status == "succeeded" and source.after_sync is not None:
            yield from source.after_sync(client, [key])

    _asset.__doc__ = source.description

    single_job = dg.define_asset_job(
        source.single_job_name,
        # The dead-letter check is evaluated by health_sensor when its result changes, not
        # by a step in every run (~0.3 s each).
        selection=dg.AssetSelection.assets(
            *[spec.key for spec in specs], *[key for a in source.downstream for key in a.keys]
        ).without_checks(),
        description=f"Sync one {source.noun} from {title} (manual priority; the UI, "
        "`dagster job launch`, retries and first syncs use it).",
        executor_def=dg.in_process_executor,
        tags={
            **priorities.job_tags(priorities.MANUAL, name),
            "dagster/max_runtime": SINGLE_RUN_MAX_RUNTIME,
        },
    )

    sweep_config = _sweep_config(source)

    @dg.op(
        name=source.sweep_op_name,
        out=dg.Out(dg.Nothing),
        required_resource_keys={name},
        tags={priorities.SOURCE_TAG: name},
        description=f"Sync many {source.noun}s from {title} in one run; each outcome is "
        "logged on its own partition.",
    )
    def _sweep(
        context: dg.OpExecutionContext,
        config: sweep_config,  # type: ignore[valid-type]
    ) -> Iterator[dg.AssetMaterialization | dg.AssetObservation | dg.Output[None]]:
        client = source.client(context.resources)
        cfg: Any = config
        if cfg.keys:
            keys = sorted(set(cfg.keys))
        else:
            keys = [
                k
                for k in source.sweep_keys(client.app_db.url)
                if batching.shard_of(k, cfg.shards) == cfg.shard
            ]
        options = _options_of(source, cfg)
        ctx = RunContext(
            owner=context.run.run_id,
            run_id=context.run.run_id,
            owner_is_dead=run_is_finished(context.instance),
            hand_over_on_failure=True,
            requested_at=run_requested_at(context),
        )
        counts: dict[str, int] = {}
        calls = 0
        totals: dict[str, float] = {}
        done: list[str] = []
        with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
            outcomes: Iterable[SyncOutcome]
            if source.sync_many is not None:
                outcomes = source.sync_many(client, keys, ctx, options)
            else:
                futures = [pool.submit(source.sync, client, key, ctx, options) for key in keys]
                outcomes = (future.result() for future in futures)
            for outcome in outcomes:
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
                calls += outcome.stats.calls
                for figure, value in outcome.figures.items():
                    totals[figure] = totals.get(figure, 0) + value
                if outcome.status == "succeeded":
                    done.append(outcome.key)
                elif outcome.status == "failed":
                    context.log.warning(f"{source.noun} {outcome.key} failed: {outcome.error}")
                for asset_key, md in _companion_events(source, outcome):
                    yield dg.AssetMaterialization(asset_key, partition=outcome.key, metadata=md)
                yield from batch_events(source.asset_key, outcome)
        if source.after_sync is not None and done:
            yield from source.after_sync(client, done)
        context.log.info(f"{title} sweep of {len(keys)} {source.noun}s: {counts}, {calls} calls")
        yield dg.Output(
            None,
            metadata={
                f"{source.noun}s": len(keys),
                **{f"{source.noun}s_{k}": v for k, v in sorted(counts.items())},
                **{k: v for k, v in sorted(totals.items())},
                "api_calls": calls,
            },
        )

    @dg.job(
        name=source.sweep_job_name,
        executor_def=dg.in_process_executor,
        tags={
            "dagster/max_runtime": SWEEP_MAX_RUNTIME,
            **priorities.job_tags(priorities.BATCH, name),
        },
        description=f"Batch sync of many {source.noun}s from {title} per run (sweeps, parked "
        "work, bulk first syncs, redrives).",
    )
    def sweep_job() -> None:
        _sweep()

    schedules = tuple(_schedule(source, sweep_job, s) for s in source.schedules)

    @dg.asset_check(
        asset=source.asset_key,
        name=DEAD_LETTER_CHECK,
        required_resource_keys={name},
        description=f"Fails while {title} syncs have dead letters (permanent failure or "
        "retries exhausted); redrive with `sync-pipeline dead-letters redrive`.",
    )
    def _no_dead_letters(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        client = source.client(context.resources)
        db = client.app_db
        evaluation = dead_letter_check(
            source.asset_key,
            DEAD_LETTER_CHECK,
            db.checkpoints(name).dead_letters(),
            source.dead_items(db.url),
        )
        return dg.AssetCheckResult(
            passed=evaluation.passed,
            metadata=evaluation.metadata,
            severity=evaluation.severity,
            description=evaluation.description,
        )

    queue = dg.AssetSpec(
        source.queue_key,
        group_name=source.group,
        description=source.queue_description
        or f"Queue depth, failures, dead letters and rate budget of {title} syncs: observed by "
        "health_sensor when a figure changes (else every 30 minutes); plot them from the Plots "
        "tab. Figures, not data: nothing materializes it.",
        kinds={"dagster"},
    )
    return SourceDefs(source, _asset, single_job, sweep_job, schedules, _no_dead_letters, queue)


def _schedule(
    source: SyncSource, job: dg.JobDefinition, schedule: SweepSchedule
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=schedule.name,
        job=job,
        cron_schedule=schedule.cron,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if schedule.running
            else dg.DefaultScheduleStatus.STOPPED
        ),
        required_resource_keys={source.name},
        description=schedule.description,
    )
    def _sweep_schedule(
        context: dg.ScheduleEvaluationContext, **_invoked_with: object
    ) -> list[dg.RunRequest] | dg.SkipReason:
        client = getattr(context.resources, source.name)
        return sweep_requests(source, client.app_db.url, context.scheduled_execution_time, schedule)

    return _sweep_schedule
