"""Strava sensors: partitions follow connected athletes; failed and parked work comes back."""

import hashlib
from collections import defaultdict

import dagster as dg

from sync_pipeline.core import priorities
from sync_pipeline.core.dagster_events import forget_partitions
from sync_pipeline.defs.strava.assets import (
    STRAVA_ACTIVITIES,
    strava_athlete_sync,
    strava_sweep_job,
)
from sync_pipeline.defs.strava.athletes import connected_athlete_ids
from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.sync import SOURCE

SWEEP_BATCH = 500


@dg.sensor(
    job=strava_athlete_sync,
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
        dynamic_partitions_requests=requests,
        run_requests=[
            dg.RunRequest(
                partition_key=key,
                run_key=f"first-sync-{key}",
                run_config={"ops": {"strava_activities": {"config": {"full": True}}}},
                tags=priorities.run_tags(priorities.NEW_USER, SOURCE, "new_athlete"),
            )
            for key in added
        ],
    )


@dg.sensor(
    job=strava_athlete_sync,
    minimum_interval_seconds=30,
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
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def strava_parked_sensor(
    context: dg.SensorEvaluationContext, strava: StravaResource
) -> dg.SensorResult | dg.SkipReason:
    """Re-requests syncs parked on a spent rate budget once its window has reset."""
    due = strava.app_db.checkpoints(SOURCE).parked_due()
    by_mode: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for st in due:
        by_mode[st.pending_mode or "incremental"].append(
            (int(st.partition_key), str(st.blocked_until))
        )
    requests = []
    for mode, items in sorted(by_mode.items()):
        items.sort()
        for i in range(0, len(items), SWEEP_BATCH):
            chunk = items[i : i + SWEEP_BATCH]
            batch = [athlete for athlete, _ in chunk]
            # Same parked work → same run key (Dagster runs it once); parked again → new key.
            digest = hashlib.sha1(repr(chunk).encode()).hexdigest()[:16]
            requests.append(
                dg.RunRequest(
                    run_key=f"parked-{mode}-{digest}",
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
    description="Queue depth, failures, dead letters and rate budget of Strava syncs, observed "
    "every minute (plot them from the asset's Plots tab).",
    kinds={"dagster"},
)


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def strava_health_sensor(
    context: dg.SensorEvaluationContext, strava: StravaResource
) -> dg.SensorResult:
    """Records queue figures as observations and evaluates the dead-letter check each minute."""
    from sync_pipeline.core.health import dead_letter_check, source_health
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
    return dg.SensorResult(
        asset_events=[
            dg.AssetObservation(asset_key=strava_sync_queue.key, metadata=health.metadata()),
            dead_letter_check(STRAVA_ACTIVITIES, DEAD_LETTER_CHECK, dead),
        ]
    )
