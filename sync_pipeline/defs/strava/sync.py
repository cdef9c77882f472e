"""Sync one athlete's activities: full (newest → oldest, cursor checkpointed per page) or
incremental (only activities after the newest one stored). Shared by the per-athlete asset,
the batch sweep and the CLI's direct mode."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select

from sync_pipeline.core.checkpoints import Session
from sync_pipeline.core.db import transaction, upsert
from sync_pipeline.core.errors import (
    AuthRevokedError,
    NotFoundError,
)
from sync_pipeline.core.models import Athlete, StravaActivity, utcnow
from sync_pipeline.core.sync_runner import RunContext, refuse, run_sync
from sync_pipeline.core.sync_runner import SyncOutcome as BaseOutcome
from sync_pipeline.defs.strava.models import SummaryActivity
from sync_pipeline.defs.strava.resources import MAX_PER_PAGE, StravaResource

if TYPE_CHECKING:  # street matching (numpy, scipy) is imported where used
    from sync_pipeline.defs.strava.processing import StreetSummary

SOURCE = "strava"
LEASE_TTL = dt.timedelta(minutes=10)  # renewed at every page checkpoint
UPDATABLE = [
    "name",
    "sport_type",
    "type",
    "start_date",
    "start_epoch",
    "timezone",
    "distance_m",
    "moving_time_s",
    "elapsed_time_s",
    "total_elevation_gain_m",
    "average_speed",
    "max_speed",
    "average_heartrate",
    "kudos_count",
    "private",
    "visibility",
    "commute",
    "trainer",
    "manual",
    "raw",
    "synced_at",
]


@dataclass
class SyncOutcome(BaseOutcome):
    """What one athlete's sync did; its metadata is what the UI plots."""

    athlete_id: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    pages: int = 0
    details_fetched: int = 0
    activities_gone: int = 0
    activities_processed: int = 0
    streets: StreetSummary | None = None

    def metadata(self) -> dict[str, Any]:
        """Figures worth plotting, as Dagster metadata (no tokens, no personal data)."""
        return {
            "activities_processed": self.activities_processed,
            "activities_added": self.added,
            "activities_updated": self.updated,
            "activities_deleted": self.deleted,
            "pages": self.pages,
            "details_fetched": self.details_fetched,
            "activities_gone_at_strava": self.activities_gone,
            **super().metadata(),
        }


def activity_row(a: SummaryActivity, now: dt.datetime) -> dict[str, Any]:
    """The strava_activities row of one summary activity (also what the benchmarks' baseline
    writes, so both store the same bytes)."""
    return {
        "id": a.id,
        "athlete_id": a.athlete_id,
        "name": a.name,
        "sport_type": a.sport_type,
        "type": a.type,
        "start_date": a.start_date,
        "start_epoch": a.start_epoch,
        "timezone": a.timezone,
        "distance_m": a.distance,
        "moving_time_s": a.moving_time,
        "elapsed_time_s": a.elapsed_time,
        "total_elevation_gain_m": a.total_elevation_gain,
        "average_speed": a.average_speed,
        "max_speed": a.max_speed,
        "average_heartrate": a.average_heartrate,
        "kudos_count": a.kudos_count,
        "private": a.private,
        "visibility": a.visibility,
        "commute": a.commute,
        "trainer": a.trainer,
        "manual": a.manual,
        "raw": a.raw,
        "synced_at": now,
    }


def _write_page(
    strava: StravaResource,
    outcome: SyncOutcome,
    page: list[SummaryActivity],
    **cursor: int | None,
) -> None:
    """Upsert a page and commit the checkpoint in the same transaction."""
    db_url = strava.app_db.url
    now = utcnow()
    with transaction(db_url) as s:
        ids = [a.id for a in page]
        existing = set(s.scalars(select(StravaActivity.id).where(StravaActivity.id.in_(ids))))
        upsert(
            s,
            StravaActivity.__table__,
            [activity_row(a, now) for a in page],
            key=["id"],
            update=UPDATABLE,
        )
        outcome.added += len(ids) - len(existing)
        outcome.updated += len(existing)
        outcome.pages += 1
        st = strava.app_db.checkpoints(SOURCE, ttl=LEASE_TTL)
        st.checkpoint_in(
            s,
            outcome.partition_key,
            pages_done=cursor.pop("pages_done") or 0,
            items_synced=cursor.pop("items_synced") or 0,
            **cursor,
        )


def _full(strava: StravaResource, outcome: SyncOutcome, session: Session) -> None:
    cursor, pages, items = session.cursor_before, session.pages_done, session.items_synced
    while True:
        page = strava.list_activities(
            outcome.athlete_id, before=cursor, per_page=MAX_PER_PAGE, stats=outcome.stats
        )
        if page:
            cursor = min(a.start_epoch for a in page)
            pages, items = pages + 1, items + len(page)
            _write_page(
                strava, outcome, page, cursor_before=cursor, pages_done=pages, items_synced=items
            )
        if len(page) < MAX_PER_PAGE:
            break
    # Everything still on Strava was written during this session; the rest was deleted there.
    with transaction(strava.app_db.url) as s:
        result = s.execute(
            delete(StravaActivity).where(
                StravaActivity.athlete_id == outcome.athlete_id,
                StravaActivity.synced_at < session.started_at,
            )
        )
        outcome.deleted = int(getattr(result, "rowcount", 0) or 0)


def _incremental(strava: StravaResource, outcome: SyncOutcome, session: Session) -> None:
    after = session.cursor_after
    if after is None:
        with transaction(strava.app_db.url) as s:
            after = s.scalar(
                select(func.max(StravaActivity.start_epoch)).where(
                    StravaActivity.athlete_id == outcome.athlete_id
                )
            )
        after = int(after or 0)
        strava.app_db.checkpoints(SOURCE, ttl=LEASE_TTL).checkpoint(
            outcome.partition_key, cursor_after=after, pages_done=0, items_synced=0
        )
    pages, items = session.pages_done, session.items_synced
    while True:
        page = strava.list_activities(
            outcome.athlete_id,
            after=after,
            page=pages + 1,
            per_page=MAX_PER_PAGE,
            stats=outcome.stats,
        )
        if page:
            pages, items = pages + 1, items + len(page)
            _write_page(strava, outcome, page, pages_done=pages, items_synced=items)
        if len(page) < MAX_PER_PAGE:
            break


def _refresh_activities(
    strava: StravaResource, outcome: SyncOutcome, ids: list[int], processed: set[int]
) -> None:
    """Fetch named activities in detail (webhook create/update: new titles, privacy, etc.),
    then their streams, matched against the street network.

    An activity Strava no longer has was deleted there: it is removed here, recorded as
    skipped-with-reason in the metadata, and not retried.
    """
    for activity_id in ids:
        try:
            activity = strava.get_activity(outcome.athlete_id, activity_id, stats=outcome.stats)
        except NotFoundError:
            delete_activity(strava.app_db.url, outcome.athlete_id, activity_id)
            outcome.activities_gone += 1
            continue
        with transaction(strava.app_db.url) as s:
            upsert(
                s,
                StravaActivity.__table__,
                [activity_row(activity, utcnow())],
                key=["id"],
                update=UPDATABLE,
            )
        outcome.details_fetched += 1
        if _process(strava, outcome, activity_id):
            processed.add(activity_id)


def _process(strava: StravaResource, outcome: SyncOutcome, activity_id: int) -> bool:
    """Streams and street matching of one stored activity; False when it is gone."""
    try:
        from sync_pipeline.defs.strava.processing import process_activity

        process_activity(strava, outcome.athlete_id, activity_id, stats=outcome.stats)
    except NotFoundError:
        delete_activity(strava.app_db.url, outcome.athlete_id, activity_id)
        outcome.activities_gone += 1
        return False
    outcome.activities_processed += 1
    return True


def _process_new(
    strava: StravaResource, outcome: SyncOutcome, session: Session, done: set[int]
) -> None:
    """The backstop for lost push events: activities this incremental sync found are
    processed as their events would have been (newest first, bounded per sync)."""
    from sync_pipeline.defs.strava.processing import unprocessed_gps_activities

    found = unprocessed_gps_activities(
        strava.app_db.url, outcome.athlete_id, strava.streams_per_sync, session.started_at
    )
    for activity_id in found:
        if activity_id not in done:
            _process(strava, outcome, activity_id)


def delete_activity(db_url: str, athlete_id: int, activity_id: int) -> bool:
    """Remove a stored activity (deleted on Strava) and everything derived from it."""
    with transaction(db_url) as s:
        result = s.execute(
            delete(StravaActivity).where(
                StravaActivity.id == activity_id, StravaActivity.athlete_id == athlete_id
            )
        )
        return bool(getattr(result, "rowcount", 0))


def mark_needs_reconnect(db_url: str, athlete_id: int, reason: str) -> None:
    """The athlete must authorize the app again; batch syncs skip them until then."""
    with transaction(db_url) as s:
        athlete = s.get(Athlete, athlete_id)
        if athlete is not None:
            athlete.state = "needs_reconnect"
            athlete.state_reason = reason


def sync_athlete(
    strava: StravaResource,
    athlete_id: int,
    *,
    mode: str,
    owner: str,
    run_id: str | None,
    hand_over_on_failure: bool = False,
    owner_is_dead: Callable[[str], bool] | None = None,
    final_attempt: bool = False,
    activity_ids: list[int] | None = None,
    deleted_activity_ids: list[int] | None = None,
    requested_at: dt.datetime | None = None,
) -> SyncOutcome:
    """Sync one athlete and record the outcome in its sync state; never raises SyncError.

    Unexpected exceptions are recorded too and returned in `outcome.exception`. With
    `requested_at` (batch runs), an athlete another run synced since then is skipped. A failure
    that nothing will retry (permanent, or transient on the `final_attempt` of a
    single-partition run) is recorded as a dead letter.
    """
    outcome = SyncOutcome(key=str(athlete_id), mode=mode, athlete_id=athlete_id)
    db_url = strava.app_db.url
    cp = strava.app_db.checkpoints(SOURCE, ttl=LEASE_TTL)
    ctx = RunContext(
        owner, run_id, owner_is_dead, hand_over_on_failure, final_attempt, requested_at
    )
    with transaction(db_url) as s:
        athlete = s.get(Athlete, athlete_id)
    if athlete is None or athlete.state == "disconnected":
        return refuse(
            cp,
            outcome,
            ctx,
            error_class="unknown_athlete",
            message=f"Athlete {athlete_id} is not connected. Connect them with "
            "`sync-pipeline athletes connect` or remove the partition.",
            record=False,
        )
    if athlete.state == "needs_reconnect":
        return refuse(
            cp,
            outcome,
            ctx,
            error_class=AuthRevokedError.error_class,
            message=f"Athlete {athlete_id} needs to reconnect ({athlete.state_reason}); "
            "no API call was made. Re-run `sync-pipeline athletes connect` for them.",
        )

    def work(session: Session) -> None:
        for activity_id in deleted_activity_ids or []:  # push events: deleted at Strava
            if delete_activity(db_url, athlete_id, activity_id):
                outcome.activities_gone += 1
        if session.mode == "full":
            _full(strava, outcome, session)
        else:
            _incremental(strava, outcome, session)
        processed: set[int] = set()
        if activity_ids:
            _refresh_activities(strava, outcome, activity_ids, processed)
        if session.mode == "incremental":
            _process_new(strava, outcome, session, processed)
        if outcome.activities_processed or outcome.activities_gone:
            from sync_pipeline.defs.strava.processing import refresh_progress

            outcome.streets = refresh_progress(strava, athlete_id)

    return run_sync(
        cp,
        outcome,
        ctx,
        work,
        lease_ttl=LEASE_TTL,
        on_auth_revoked=lambda reason: mark_needs_reconnect(db_url, athlete_id, reason),
    )
