"""Street Keeper: fetch an activity's streams, match them to streets, keep per-street progress.

Node hits are stored per (athlete, activity, node), so processing an activity again changes
nothing and deleting an activity removes exactly what it contributed (foreign-key cascade);
progress counts distinct nodes per athlete.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, insert, select, update

from sync_pipeline.core.db import transaction, upsert
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.models import StravaActivity, StravaStream, StreetNodeHit, StreetProgress
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.streets import completed_streets, load_network

INSERT_CHUNK = 5000


@dataclass
class Processed:
    """What processing one activity did."""

    activity_id: int
    points: int = 0
    nodes_hit: int = 0
    matched: bool = False


def store_streams(db_url: str, athlete_id: int, activity_id: int, streams: dict) -> int:
    """Store (replace) an activity's streams; returns the number of points."""
    latlng = streams.get("latlng") or []
    with transaction(db_url) as s:
        upsert(
            s,
            StravaStream,
            [
                {
                    "activity_id": activity_id,
                    "athlete_id": athlete_id,
                    "points": len(latlng) or len(streams.get("time") or []),
                    "latlng": latlng,
                    "time_s": streams.get("time") or [],
                    "distance_m": streams.get("distance") or [],
                    "altitude_m": streams.get("altitude") or [],
                    "fetched_at": dt.datetime.now(dt.UTC),
                }
            ],
            key=["activity_id"],
            update=["points", "latlng", "time_s", "distance_m", "altitude_m", "fetched_at"],
        )
    return len(latlng)


def record_hits(db_url: str, athlete_id: int, activity_id: int, node_ids: np.ndarray) -> None:
    """Replace the activity's node hits (idempotent) and mark it processed."""
    with transaction(db_url) as s:
        s.execute(
            delete(StreetNodeHit).where(
                StreetNodeHit.athlete_id == athlete_id, StreetNodeHit.activity_id == activity_id
            )
        )
        rows = [
            {"athlete_id": athlete_id, "activity_id": activity_id, "node_id": int(n)}
            for n in node_ids
        ]
        for i in range(0, len(rows), INSERT_CHUNK):
            s.execute(insert(StreetNodeHit), rows[i : i + INSERT_CHUNK])
        s.execute(
            update(StravaActivity)
            .where(StravaActivity.id == activity_id)
            .values(processed_at=dt.datetime.now(dt.UTC))
        )


def process_activity(
    strava: StravaResource, athlete_id: int, activity_id: int, stats: CallStats | None = None
) -> Processed:
    """Fetch, store and match one stored activity's streams (NotFoundError if gone)."""
    streams = strava.get_streams(athlete_id, activity_id, stats=stats)
    result = Processed(activity_id)
    result.points = store_streams(strava.app_db.url, athlete_id, activity_id, streams)
    hits = np.empty(0, dtype=np.int64)
    if strava.streets_file and result.points:
        network = load_network(strava.streets_file)
        hits = network.match(np.asarray(streams["latlng"], float), strava.match_radius_m)
        result.matched = True
    result.nodes_hit = int(hits.size)
    record_hits(strava.app_db.url, athlete_id, activity_id, hits)
    return result


def unprocessed_gps_activities(
    db_url: str, athlete_id: int, limit: int, since: dt.datetime
) -> list[int]:
    """Newest activities stored since `since` that may have GPS and are not processed yet."""
    if limit <= 0:
        return []
    with transaction(db_url) as s:
        return list(
            s.scalars(
                select(StravaActivity.id)
                .where(
                    StravaActivity.athlete_id == athlete_id,
                    StravaActivity.processed_at.is_(None),
                    StravaActivity.synced_at >= since,
                    StravaActivity.trainer.is_(False),
                    StravaActivity.manual.is_(False),
                )
                .order_by(StravaActivity.start_epoch.desc())
                .limit(limit)
            )
        )


@dataclass(frozen=True)
class StreetSummary:
    """An athlete's street figures for metadata."""

    streets_touched: int
    streets_completed: int
    nodes_hit: int


def refresh_progress(strava: StravaResource, athlete_id: int) -> StreetSummary | None:
    """Recompute an athlete's per-street progress from their hits; None without a network."""
    if not strava.streets_file:
        return None
    network = load_network(strava.streets_file)
    db_url = strava.app_db.url
    with transaction(db_url) as s:
        nodes = np.fromiter(
            s.scalars(
                select(StreetNodeHit.node_id)
                .where(StreetNodeHit.athlete_id == athlete_id)
                .distinct()
            ),
            dtype=np.int64,
        )
    table = network.progress(nodes)
    now = dt.datetime.now(dt.UTC)
    with transaction(db_url) as s:
        s.execute(delete(StreetProgress).where(StreetProgress.athlete_id == athlete_id))
        rows = [
            {
                "athlete_id": athlete_id,
                "street_id": int(r.street_id),
                "name": str(r.name),
                "nodes_total": int(r.nodes_total),
                "nodes_hit": int(r.nodes_hit),
                "fraction": float(r.fraction),
                "updated_at": now,
            }
            for r in table.itertuples(index=False)
        ]
        for i in range(0, len(rows), INSERT_CHUNK):
            s.execute(insert(StreetProgress), rows[i : i + INSERT_CHUNK])
    return StreetSummary(len(table), len(completed_streets(table)), int(nodes.size))
