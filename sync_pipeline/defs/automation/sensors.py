"""The sensors every source shares: partitions follow connected users, failed and parked work
comes back, queue figures are recorded. One sensor each, for all sources in the registry;
each only decides what runs (data changes happen in the runs it requests)."""

import json

import dagster as dg

from sync_pipeline.core import batching
from sync_pipeline.core.checkpoints import Checkpoints
from sync_pipeline.core.dagster_events import forget_partitions
from sync_pipeline.core.health import current_budget, dead_letter_check, health_events
from sync_pipeline.core.health import source_health as figures_of
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.source import (
    DEAD_LETTER_CHECK,
    first_sync_requests,
    parked_requests,
    retry_requests,
)
from sync_pipeline.sources import SOURCES, defs_of, partition_sets

JOBS = [job for name in SOURCES for job in (defs_of(name).single_job, defs_of(name).sweep_job)]


@dg.sensor(jobs=JOBS, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def partitions_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    """Keeps each dynamic partition set equal to its connected users; new ones get first syncs."""
    db_url = app_db.url
    partition_requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]
    partition_requests, run_requests, summary = [], [], []
    for pset, sources in partition_sets():
        wanted = [str(k) for k in pset.members(db_url)]  # in the members' order
        existing = set(context.instance.get_dynamic_partitions(pset.name))
        added = [k for k in wanted if k not in existing]
        removed = sorted(existing - set(wanted))
        summary.append(f"{pset.name}: {len(existing)}")
        if removed:
            # Deleting a dynamic partition keeps its materializations: forget them explicitly.
            for s in sources:
                forget_partitions(context.instance, s.asset_key, s.name, removed)
                for companion in s.companions:
                    forget_partitions(context.instance, companion.spec.key, s.name, removed)
            for asset_key, tag in pset.also_forget:
                forget_partitions(context.instance, asset_key, tag, removed)
            partition_requests.append(pset.definition.build_delete_request(removed))
        if added:
            partition_requests.append(pset.definition.build_add_request(added))
            for s in sources:
                if not s.first_sync:
                    continue
                syncable = set(s.sweep_keys(db_url))
                to_sync = [k for k in added if k in syncable]
                run_requests.extend(first_sync_requests(s, to_sync))
    if not partition_requests:
        return dg.SkipReason(f"no one connected or disconnected ({', '.join(summary)})")
    return dg.SensorResult(
        dynamic_partitions_requests=partition_requests, run_requests=run_requests
    )


@dg.sensor(jobs=JOBS, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def retry_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    """Partitions a batch run failed become single-partition runs (their own retries and
    status in the UI), at lowered priority."""
    requests = []
    for pset, sources in partition_sets():
        known = set(context.instance.get_dynamic_partitions(pset.name))
        for s in sources:
            requests.extend(retry_requests(s, app_db.url, known))
    if not requests:
        return dg.SkipReason("no failed partitions waiting for a retry")
    return dg.SensorResult(run_requests=requests)


@dg.sensor(
    jobs=JOBS,
    minimum_interval_seconds=batching.PARKED_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def parked_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    """Re-requests syncs parked on a spent rate budget just before their window resets (and
    work parked by a backoff or a schedule when it is due)."""
    requests = []
    for s in SOURCES.values():
        lead = batching.parked_lead(s.parked_lead_seconds)
        requests.extend(parked_requests(s, app_db.url, lead))
    if not requests:
        return dg.SkipReason("no parked work due")
    return dg.SensorResult(run_requests=requests)


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def health_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    """Reads every source's queue figures and dead letters each minute; records what changed.

    Per source, an observation of `<source>_sync_queue` when a figure changed since the last
    one or that one is 30 minutes old, and a dead-letter check evaluation only when its result
    changed (`health_events`; the digests live in the cursor, one entry per source). Stored
    events are never purged, so unchanged figures are not stored again.
    """
    db_url = app_db.url
    try:
        cursors = json.loads(context.cursor) if context.cursor else {}
    except ValueError:
        cursors = {}
    if not isinstance(cursors, dict):
        cursors = {}
    events: list[dg.AssetObservation | dg.AssetCheckEvaluation] = []
    for name, s in SOURCES.items():
        health = figures_of(
            context.instance,
            db_url,
            name,
            needs_reconnect=s.needs_reconnect(db_url),
            budget=current_budget(db_url, name),
        )
        result = health_events(
            cursors.get(name),
            dg.AssetObservation(asset_key=s.queue_key, metadata=health.metadata()),
            dead_letter_check(
                s.asset_key,
                DEAD_LETTER_CHECK,
                Checkpoints(db_url, name).dead_letters(),
                s.dead_items(db_url),
            ),
        )
        if isinstance(result, dg.SensorResult):
            events.extend(result.asset_events)  # type: ignore[arg-type]
            cursors[name] = result.cursor
    if not events:
        return dg.SkipReason("queue figures and dead letters unchanged for every source")
    return dg.SensorResult(asset_events=events, cursor=json.dumps(cursors, sort_keys=True))


defs = dg.Definitions(sensors=[partitions_sensor, retry_sensor, parked_sensor, health_sensor])
