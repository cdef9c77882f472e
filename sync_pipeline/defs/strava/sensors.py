"""Strava sensors: partitions follow connected athletes; failed and parked work comes back."""

from collections import defaultdict

import dagster as dg

from sync_pipeline.core import batching, priorities

# Re-exported: the CLI and benchmarks import SWEEP_BATCH from here.
from sync_pipeline.core.batching import SWEEP_BATCH as SWEEP_BATCH
from sync_pipeline.core.dagster_events import forget_partitions
from sync_pipeline.defs.strava.assets import (
    STRAVA_ACTIVITIES,
    STREET_PROGRESS,
    strava_athlete_sync,
    strava_sweep_job,
)
from sync_pipeline.defs.strava.athletes import connected_athlete_ids
from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.sync import SOURCE


@dg.sensor(
    jobs=[strava_athlete_sync, strava_sweep_job],
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def strava_athletes_sensor(
    context: dg.SensorEvaluationContext, strava: StravaResource
) -> dg.SensorResult | dg.SkipReason:
    """Keeps strava_athletes equal to connected athletes; new ones get a first full sync."""
    wanted = {str(a) for a in connected_athlete_ids(strava.app_db.url)}
    existing = set(context.instance.get_dynamic_partitions(strava_athletes.name or ""))
    added = sorted(wanted - existing, key=int)
    removed = sorted(existing - wanted)
    if not added and not removed:
        return dg.SkipReason(f"{len(existing)} athletes, none connected or disconnected")
    if removed:
        # Deleting a dynamic partition keeps its materializations: forget them explicitly.
        forget_partitions(context.instance, STRAVA_ACTIVITIES, SOURCE, removed)
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(strava_athletes.build_add_request(added))
    if removed:
        requests.append(strava_athletes.build_delete_request(removed))
    return dg.SensorResult(
        dynamic_partitions_requests=requests, run_requests=first_sync_requests(added)
    )


def first_sync_requests(added: list[str]) -> list[dg.RunRequest]:
    """A single-athlete run per new athlete, or batch sweep runs when many join at once."""
    if len(added) <= batching.SINGLE_FIRST_SYNC_MAX:
        return [
            dg.RunRequest(
                job_name=strava_athlete_sync.name,
                partition_key=key,
                run_key=f"first-sync-{key}",
                run_config={"ops": {"strava_activities": {"config": {"full": True}}}},
                tags=priorities.run_tags(priorities.NEW_USER, SOURCE, "new_athlete"),
            )
            for key in added
        ]
    # Each athlete's outcome still lands on its own partition; failures go to the retry sensor.
    return [
        dg.RunRequest(
            job_name=strava_sweep_job.name,
            run_key=batching.batch_run_key("first-sync-batch", chunk),
            run_config={"ops": {"strava_sweep": {"config": {"mode": "full", "athletes": chunk}}}},
            tags=priorities.run_tags(
                priorities.NEW_USER, SOURCE, "new_athletes", lane_name="batch"
            ),
        )
        for chunk in batching.chunked([int(key) for key in added], batching.SWEEP_BATCH)
    ]


@dg.sensor(
    job=strava_athlete_sync,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def strava_retry_sensor(
    context: dg.SensorEvaluationContext, strava: StravaResource
) -> dg.SensorResult | dg.SkipReason:
    """Turns athletes a sweep failed into single-athlete runs (own retries, status on the
    partition), at lowered priority."""
    failed = strava.app_db.checkpoints(SOURCE).handed_over()
    known = set(context.instance.get_dynamic_partitions(strava_athletes.name or ""))
    requests = [
        dg.RunRequest(
            partition_key=st.partition_key,
            run_key=f"retry-{st.partition_key}-{st.failure_seq}",
            run_config={
                "ops": {"strava_activities": {"config": {"full": st.pending_mode == "full"}}}
            },
            tags=priorities.run_tags(priorities.RETRY, SOURCE, "retry"),
        )
        for st in failed
        if st.partition_key in known
    ]
    if not requests:
        return dg.SkipReason("no failed athletes waiting for a retry")
    return dg.SensorResult(run_requests=requests)


@dg.sensor(
    job=strava_sweep_job,
    minimum_interval_seconds=batching.PARKED_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def strava_parked_sensor(
    context: dg.SensorEvaluationContext, strava: StravaResource
) -> dg.SensorResult | dg.SkipReason:
    """Re-requests syncs parked on a spent rate budget just before their window resets."""
    due = strava.app_db.checkpoints(SOURCE).parked_due(
        lead=batching.parked_lead(strava.max_inline_wait_seconds)
    )
    by_mode: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for st in due:
        by_mode[st.pending_mode or "incremental"].append(
            (int(st.partition_key), str(st.blocked_until))
        )
    requests = []
    for mode, items in sorted(by_mode.items()):
        items.sort()
        for chunk in batching.chunked(items, batching.SWEEP_BATCH):
            batch = [athlete for athlete, _ in chunk]
            # Same parked work → same run key (Dagster runs it once); parked again → new key.
            requests.append(
                dg.RunRequest(
                    run_key=batching.batch_run_key(f"parked-{mode}", chunk),
                    run_config={
                        "ops": {"strava_sweep": {"config": {"mode": mode, "athletes": batch}}}
                    },
                    tags=priorities.run_tags(priorities.BATCH, SOURCE, "parked"),
                )
            )
    if not requests:
        return dg.SkipReason("no parked work due")
    return dg.SensorResult(run_requests=requests)


strava_sync_queue = dg.AssetSpec(
    "strava_sync_queue",
    group_name="strava",
    description="Queue depth, failures, dead letters and rate budget of Strava syncs, checked "
    "every minute and observed when a figure changes, else every 30 minutes (plot them from the "
    "asset's Plots tab).",
    kinds={"dagster"},
)


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def strava_health_sensor(
    context: dg.SensorEvaluationContext, strava: StravaResource
) -> dg.SensorResult | dg.SkipReason:
    """Reads the queue figures and dead letters each minute and records what changed.

    The figures become an observation of strava_sync_queue when one of them changed since the
    last observation, or when that one is 30 minutes old; the dead-letter check is evaluated
    (an evaluation stored) only when its result changed. Digests of both live in the cursor.
    Stored events are never purged: an observation and an evaluation every minute cost
    ~100 MB a week per source of identical figures on an idle deployment (benchmarks/
    footprint.py measured 3 MB an hour for the five sources).
    """
    from sync_pipeline.core.health import dead_letter_check, health_events, source_health
    from sync_pipeline.defs.strava.athletes import needs_reconnect_count
    from sync_pipeline.defs.strava.checks import DEAD_LETTER_CHECK

    health = source_health(
        context.instance,
        strava.app_db.url,
        SOURCE,
        needs_reconnect=needs_reconnect_count(strava.app_db.url),
        budget=strava.budget_usage(),
    )
    dead = strava.app_db.checkpoints(SOURCE).dead_letters()
    return health_events(
        context.cursor,
        dg.AssetObservation(asset_key=strava_sync_queue.key, metadata=health.metadata()),
        dead_letter_check(STRAVA_ACTIVITIES, DEAD_LETTER_CHECK, dead),
    )


@dg.sensor(
    job=strava_athlete_sync,
    # Event → processed p95 ≤ 10 s: the wait for a tick (≤ 5 s) + the dequeue interval (≤ 1 s)
    # + a run's start-up (~2 s) + the work (< 1 s). The sensor daemon loops every 5 s, so this
    # ticks on every loop; an interval of exactly 5 s would skip every other loop whose start
    # came a few ms early (measured: event latency p95 10.9 s with 5, see benchmarks/latency.py).
    # A tick without events is one indexed query.
    minimum_interval_seconds=2,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def strava_webhook_sensor(
    context: dg.SensorEvaluationContext, strava: StravaResource
) -> dg.SensorResult | dg.SkipReason:
    """Turns stored Strava push events into work: one run per athlete per tick; deletions and
    deauthorizations are applied at once."""
    from sync_pipeline.core.inbox import events_after, mark_handled, set_outcomes
    from sync_pipeline.defs.strava.athletes import disconnect
    from sync_pipeline.defs.strava.processing import refresh_progress
    from sync_pipeline.defs.strava.sync import delete_activity

    db_url = strava.app_db.url
    cursor = int(context.cursor or 0)
    # Events up to the cursor were committed together with their run requests: handled.
    mark_handled(db_url, "strava", cursor)
    events = events_after(db_url, "strava", cursor, limit=2000)
    if not events:
        return dg.SkipReason("no new push events")
    connected = {str(a) for a in connected_athlete_ids(db_url)}
    wanted: dict[str, set[int]] = defaultdict(set)
    last_event: dict[str, int] = {}
    outcomes: dict[int, tuple[str, str | None]] = {}
    deauthorized: list[str] = []
    progress_stale: set[int] = set()
    for ev in events:
        owner = str(ev.owner_id)
        if owner not in connected:
            outcomes[ev.id] = ("unknown_athlete", None)
        elif ev.object_type == "athlete":
            if str((ev.updates or {}).get("authorized", "")).lower() == "false":
                disconnect(strava, ev.owner_id, revoke=False)  # Strava's policy: purge data
                connected.discard(owner)
                wanted.pop(owner, None)
                deauthorized.append(owner)
                outcomes[ev.id] = ("deauthorized", None)
            else:
                outcomes[ev.id] = ("ignored", None)
        elif ev.aspect_type == "delete":
            if delete_activity(db_url, ev.owner_id, ev.object_id):
                progress_stale.add(ev.owner_id)
            wanted[owner].discard(ev.object_id)
            outcomes[ev.id] = ("deleted", None)
        else:
            wanted[owner].add(ev.object_id)
            last_event[owner] = ev.id
    requests = []
    for owner, ids in sorted(wanted.items()):
        if owner not in last_event:
            continue
        run_key = f"webhook-{owner}-{last_event[owner]}"
        requests.append(
            dg.RunRequest(
                partition_key=owner,
                run_key=run_key,
                run_config={
                    "ops": {
                        "strava_activities": {
                            "config": {"full": False, "activity_ids": sorted(ids)}
                        }
                    }
                },
                tags=priorities.run_tags(priorities.WEBHOOK, SOURCE, "webhook"),
            )
        )
        for ev in events:
            if str(ev.owner_id) == owner and ev.id not in outcomes:
                outcomes[ev.id] = ("run_requested", run_key)
    set_outcomes(db_url, outcomes)
    partition_requests = []
    if deauthorized:
        forget_partitions(context.instance, STRAVA_ACTIVITIES, SOURCE, deauthorized)
        existing = set(context.instance.get_dynamic_partitions(strava_athletes.name or ""))
        gone = [k for k in deauthorized if k in existing]
        if gone:
            partition_requests.append(strava_athletes.build_delete_request(gone))
    # A deleted activity takes its street hits with it (cascade): progress is recomputed now.
    progress_events = []
    for athlete_id in sorted(progress_stale - {int(k) for k in deauthorized}):
        summary = refresh_progress(strava, athlete_id)
        if summary is not None:
            progress_events.append(
                dg.AssetMaterialization(
                    STREET_PROGRESS,
                    partition=str(athlete_id),
                    metadata={
                        "streets_touched": summary.streets_touched,
                        "streets_completed": summary.streets_completed,
                        "nodes_hit": summary.nodes_hit,
                    },
                )
            )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partition_requests,
        asset_events=progress_events,
        cursor=str(events[-1].id),
    )
