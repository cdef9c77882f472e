"""Strava push events become runs: the webhook receiver stores them, this sensor decides."""

from collections import defaultdict

import dagster as dg

from sync_pipeline.core import priorities
from sync_pipeline.core.inbox import (
    PROCESSED_INLINE,
    apply_activity_event,
    events_after,
    inline_claim_is_live,
    mark_handled,
    set_outcomes,
)
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.strava.athletes import connected_athlete_ids
from sync_pipeline.defs.strava.source import STRAVA, strava_defs


@dg.sensor(
    job=strava_defs.single_job,
    # Event → processed p95 ≤ 10 s: the wait for a tick (≤ 5 s) + the dequeue interval (≤ 1 s)
    # + a run's start-up (~2 s) + the work (< 1 s). The sensor daemon loops every 5 s, so this
    # ticks on every loop; an interval of exactly 5 s would skip every other loop whose start
    # came a few ms early (measured: event latency p95 10.9 s with 5, see benchmarks/latency.py).
    # A tick without events is one indexed query.
    minimum_interval_seconds=2,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def strava_webhook_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    """Turns stored Strava push events into runs: one per athlete per tick, carrying the
    activities to fetch, the ones deleted at Strava, or the athlete's deauthorization."""
    db_url = app_db.url
    cursor = int(context.cursor or 0)
    # Events up to the cursor were committed together with their run requests: handled.
    mark_handled(db_url, "strava", cursor)
    events = events_after(db_url, "strava", cursor, limit=2000)
    # The receiver's fast path is processing some events itself: stop before the first of
    # them (the next tick sees whether it completed them or gave them back), and skip the
    # ones it completed (no second run, no second API call).
    in_flight = next((i for i, ev in enumerate(events) if inline_claim_is_live(ev)), None)
    if in_flight is not None:
        events = events[:in_flight]
    if not events:
        return dg.SkipReason(
            "no new push events" if in_flight is None else "push events in the receiver's fast path"
        )
    new_cursor = str(events[-1].id)
    events = [ev for ev in events if ev.outcome != PROCESSED_INLINE]
    connected = {str(a) for a in connected_athlete_ids(db_url)}
    wanted: dict[str, set[int]] = defaultdict(set)
    deleted: dict[str, set[int]] = defaultdict(set)
    last_event: dict[str, int] = {}
    outcomes: dict[int, tuple[str, str | None]] = {}
    requests = []
    for ev in events:
        owner = str(ev.owner_id)
        if owner not in connected:
            outcomes[ev.id] = ("unknown_athlete", None)
        elif ev.object_type == "athlete":
            if str((ev.updates or {}).get("authorized", "")).lower() == "false":
                # Strava's policy: purge the athlete's data (done by the run); nothing else of
                # theirs runs from this tick.
                run_key = f"webhook-deauthorized-{owner}-{ev.id}"
                requests.append(
                    dg.RunRequest(
                        partition_key=owner,
                        run_key=run_key,
                        run_config=STRAVA.single_run_config(deauthorized=True),
                        tags=priorities.run_tags(priorities.WEBHOOK, STRAVA.name, "deauthorized"),
                    )
                )
                connected.discard(owner)
                for pending in (wanted, deleted, last_event):
                    pending.pop(owner, None)
                outcomes[ev.id] = ("run_requested", run_key)
            else:
                outcomes[ev.id] = ("ignored", None)
        else:
            apply_activity_event(wanted[owner], deleted[owner], ev.object_id, ev.aspect_type)
            last_event[owner] = ev.id
    for owner in sorted(last_event):
        run_key = f"webhook-{owner}-{last_event[owner]}"
        requests.append(
            dg.RunRequest(
                partition_key=owner,
                run_key=run_key,
                run_config=STRAVA.single_run_config(
                    activity_ids=sorted(wanted[owner]),
                    deleted_activity_ids=sorted(deleted[owner]),
                ),
                tags=priorities.run_tags(priorities.WEBHOOK, STRAVA.name, "webhook"),
            )
        )
        for ev in events:
            if str(ev.owner_id) == owner and ev.id not in outcomes:
                outcomes[ev.id] = ("run_requested", run_key)
    set_outcomes(db_url, outcomes)
    return dg.SensorResult(run_requests=requests, cursor=new_cursor)


defs = dg.Definitions(sensors=[strava_webhook_sensor])
