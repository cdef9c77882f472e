"""Sync one athlete's activities: full (newest → oldest, cursor checkpointed per page) or
incremental (only activities after the newest one stored). Shared by the per-athlete asset,
the batch sweep and the CLI's direct mode."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select

from sync_pipeline.core.checkpoints import LeaseHeldError, Session
from sync_pipeline.core.db import transaction, upsert
from sync_pipeline.core.errors import (
    AuthRevokedError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    SyncError,
)
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.models import Athlete, StravaActivity, utcnow
from sync_pipeline.defs.strava.models import SummaryActivity
from sync_pipeline.defs.strava.resources import MAX_PER_PAGE, StravaResource

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
class SyncOutcome:
    """What one athlete's sync did; its metadata is what the UI plots."""

    athlete_id: int
    mode: str
    status: str = "running"  # succeeded | parked | failed | skipped
    added: int = 0
    updated: int = 0
    deleted: int = 0
    pages: int = 0
    resumed: bool = False
    seconds: float = 0.0
    error_class: str | None = None
    error: str | None = None
    retry_at: float | None = None
    details_fetched: int = 0
    activities_gone: int = 0
    exception: BaseException | None = field(default=None, repr=False)
    stats: CallStats = field(default_factory=CallStats)

    @property
    def partition_key(self) -> str:
        """The athlete's partition key."""
        return str(self.athlete_id)

    def metadata(self) -> dict[str, Any]:
        """Figures worth plotting, as Dagster metadata (no tokens, no personal data)."""
        md: dict[str, Any] = {
            "mode": self.mode,
            "status": self.status,
            "activities_added": self.added,
            "activities_updated": self.updated,
            "activities_deleted": self.deleted,
            "pages": self.pages,
            "api_calls": self.stats.calls,
            "api_retries": self.stats.retries,
            "rate_wait_seconds": round(self.stats.rate_wait_seconds, 3),
            "resumed_from_checkpoint": self.resumed,
            "details_fetched": self.details_fetched,
            "activities_gone_at_strava": self.activities_gone,
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            md["error_class"] = self.error_class
            md["error"] = self.error
        if self.retry_at:
            md["retry_at"] = dt.datetime.fromtimestamp(self.retry_at, dt.UTC).isoformat()
        return md


def _row(a: SummaryActivity, now: dt.datetime) -> dict[str, Any]:
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
            [_row(a, now) for a in page],
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


def _refresh_activities(strava: StravaResource, outcome: SyncOutcome, ids: list[int]) -> None:
    """Fetch named activities in detail (webhook create/update): new titles, privacy, etc.

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
                [_row(activity, utcnow())],
                key=["id"],
                update=UPDATABLE,
            )
        outcome.details_fetched += 1


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
) -> SyncOutcome:
    """Sync one athlete and record the outcome in its sync state; never raises SyncError.

    Unexpected exceptions are recorded too and returned in `outcome.exception`. A failure
    that nothing will retry (permanent, or transient on the `final_attempt` of a
    single-partition run) is recorded as a dead letter.
    """
    started = time.monotonic()
    outcome = SyncOutcome(athlete_id=athlete_id, mode=mode)
    db_url = strava.app_db.url
    cp = strava.app_db.checkpoints(SOURCE, ttl=LEASE_TTL)
    key = outcome.partition_key
    with transaction(db_url) as s:
        athlete = s.get(Athlete, athlete_id)
    if athlete is None or athlete.state == "disconnected":
        outcome.status, outcome.error_class = "failed", "unknown_athlete"
        outcome.error = (
            f"Athlete {athlete_id} is not connected. Connect them with "
            "`sync-pipeline athletes connect` or remove the partition."
        )
        return outcome
    if athlete.state == "needs_reconnect":
        outcome.status, outcome.error_class = "failed", AuthRevokedError.error_class
        outcome.error = (
            f"Athlete {athlete_id} needs to reconnect ({athlete.state_reason}); "
            "no API call was made. Re-run `sync-pipeline athletes connect` for them."
        )
        cp.fail(
            key,
            error_class=outcome.error_class,
            message=outcome.error,
            run_id=run_id,
            dead=not hand_over_on_failure,
        )
        return outcome
    try:
        cp.claim(key, owner, LEASE_TTL, owner_is_dead=owner_is_dead)
    except LeaseHeldError as exc:
        outcome.status, outcome.error = "skipped", str(exc)
        return outcome
    try:
        state = cp.get(key)
        if mode == "incremental" and (state is None or state.last_full_sync_at is None):
            mode = outcome.mode = "full"  # nothing to be incremental against yet
        session = cp.begin(key, mode, run_id)
        outcome.mode, outcome.resumed = session.mode, session.resumed
        if session.mode == "full":
            _full(strava, outcome, session)
        else:
            _incremental(strava, outcome, session)
        if activity_ids:
            _refresh_activities(strava, outcome, activity_ids)
        cp.succeed(key, full=session.mode == "full")
        outcome.status = "succeeded"
    except RateLimitedError as exc:
        outcome.status, outcome.error_class, outcome.error = "parked", exc.error_class, str(exc)
        outcome.retry_at = exc.retry_at
        cp.park(
            key,
            until=dt.datetime.fromtimestamp(exc.retry_at, dt.UTC),
            reason=str(exc),
            mode=outcome.mode,
        )
    except SyncError as exc:
        outcome.status, outcome.error_class, outcome.error = "failed", exc.error_class, str(exc)
        if isinstance(exc, AuthRevokedError):
            mark_needs_reconnect(db_url, athlete_id, str(exc))
        cp.fail(
            key,
            error_class=exc.error_class,
            message=str(exc),
            run_id=run_id,
            hand_over_mode=outcome.mode if hand_over_on_failure else None,
            keep_session=not isinstance(exc, PermanentError),
            dead=not hand_over_on_failure and (isinstance(exc, PermanentError) or final_attempt),
        )
        outcome.exception = exc
    except Exception as exc:  # a bug or an unexpected payload: recorded, never hides others
        outcome.status, outcome.error_class = "failed", "error"
        outcome.error = f"{type(exc).__name__}: {exc}"
        cp.fail(
            key,
            error_class="error",
            message=outcome.error,
            run_id=run_id,
            hand_over_mode=outcome.mode if hand_over_on_failure else None,
            dead=not hand_over_on_failure and final_attempt,
        )
        outcome.exception = exc
    finally:
        cp.release(key, owner)
        outcome.seconds = time.monotonic() - started
    return outcome
