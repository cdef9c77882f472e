"""Connecting, listing and disconnecting Strava athletes (the app side of OAuth)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from sqlalchemy import delete, func, select

from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import AuthRevokedError, SyncError
from sync_pipeline.core.models import Athlete, StravaActivity, StreetProgress, SyncState
from sync_pipeline.core.oauth import capture_redirect
from sync_pipeline.defs.strava.resources import PROVIDER, StravaResource
from sync_pipeline.defs.strava.sync import SOURCE


@dataclass(frozen=True)
class AthleteRow:
    """One line of `sync-pipeline athletes list`."""

    id: int
    name: str
    state: str
    scopes: str
    activities: int
    sync_status: str
    last_success_at: dt.datetime | None
    last_error: str | None


def connected_athlete_ids(db_url: str, *, include_needs_reconnect: bool = True) -> list[int]:
    """Athletes that should be partitions (connected, or waiting to reconnect)."""
    states = ["connected", "needs_reconnect"] if include_needs_reconnect else ["connected"]
    with transaction(db_url) as s:
        return list(
            s.scalars(select(Athlete.id).where(Athlete.state.in_(states)).order_by(Athlete.id))
        )


def needs_reconnect_count(db_url: str) -> int:
    """Athletes whose tokens Strava rejected."""
    with transaction(db_url) as s:
        return int(
            s.scalar(
                select(func.count()).select_from(Athlete).where(Athlete.state == "needs_reconnect")
            )
            or 0
        )


def list_athletes(db_url: str) -> list[AthleteRow]:
    """Every athlete with activity counts and sync state."""
    with transaction(db_url) as s:
        counts = dict(
            s.execute(
                select(StravaActivity.athlete_id, func.count()).group_by(StravaActivity.athlete_id)
            ).all()
        )
        states = {
            st.partition_key: st
            for st in s.scalars(select(SyncState).where(SyncState.source == SOURCE))
        }
        rows = []
        for a in s.scalars(select(Athlete).order_by(Athlete.id)):
            st = states.get(str(a.id))
            rows.append(
                AthleteRow(
                    id=a.id,
                    name=a.display_name,
                    state=a.state,
                    scopes=a.scopes,
                    activities=int(counts.get(a.id, 0)),
                    sync_status=st.status if st else "never",
                    last_success_at=st.last_success_at if st else None,
                    last_error=(st.last_error if st and st.status != "succeeded" else None)
                    or (a.state_reason if a.state != "connected" else None),
                )
            )
        return rows


def store_grant(strava: StravaResource, code: str, scopes: str) -> int:
    """Exchange an authorization code and store the athlete and their encrypted tokens."""
    if "activity:read" not in scopes:
        raise AuthRevokedError(
            f"The athlete granted scopes {scopes!r}, without activity:read or "
            "activity:read_all; ask them to connect again and keep the activity box ticked."
        )
    grant = strava.exchange_code(code, scopes)
    profile = grant.athlete
    with transaction(strava.app_db.url) as s:
        athlete = s.get(Athlete, grant.athlete_id)
        if athlete is None:
            athlete = Athlete(id=grant.athlete_id)
            s.add(athlete)
        athlete.username = profile.get("username")
        athlete.firstname = profile.get("firstname")
        athlete.lastname = profile.get("lastname")
        athlete.city = profile.get("city")
        athlete.country = profile.get("country")
        athlete.scopes = scopes
        athlete.state = "connected"
        athlete.state_reason = None
        athlete.raw = {k: v for k, v in profile.items() if k not in ("email",)}
    strava.app_db.tokens(PROVIDER).save(str(grant.athlete_id), grant.tokens)
    return grant.athlete_id


def connect_via_oauth(
    strava: StravaResource,
    *,
    redirect_host: str = "127.0.0.1",
    redirect_port: int = 0,
    auto_approve: bool,
    sandbox_athlete_id: int | None = None,
    timeout: float = 300.0,
    on_url: Callable[[str], None] | None = None,
) -> int:
    """Run the OAuth authorization-code flow with a local callback server.

    With `auto_approve` (sandbox only) this process plays the browser: it opens the consent
    URL and follows Strava's redirect to the callback. Otherwise `on_url(url)` is called so a
    person can open the URL; the flow waits for the redirect.
    """
    extra = {"sandbox_athlete_id": str(sandbox_athlete_id)} if sandbox_athlete_id else {}
    query, _ = capture_redirect(
        "Strava",
        lambda redirect_uri: strava.authorize_url(redirect_uri, state="sync-pipeline", **extra),
        auto_approve=auto_approve,
        on_url=on_url,
        redirect_host=redirect_host,
        redirect_port=redirect_port,
        timeout=timeout,
    )
    return store_grant(strava, query["code"], query.get("scope", ""))


def disconnect(strava: StravaResource, athlete_id: int, *, revoke: bool = True) -> bool:
    """Revoke access, delete tokens, the athlete and their data (Strava's policy).

    The partition sensor then removes the partition and wipes its materializations.
    """
    if revoke:
        # Already revoked or unreachable: deleting our copy is what matters.
        with contextlib.suppress(httpx.HTTPError, SyncError):
            strava.deauthorize(athlete_id)
    strava.app_db.tokens(PROVIDER).delete(str(athlete_id))
    with transaction(strava.app_db.url) as s:
        athlete = s.get(Athlete, athlete_id)
        if athlete is None:
            return False
        # Streams and street hits go with the activities (foreign-key cascade).
        s.execute(delete(StravaActivity).where(StravaActivity.athlete_id == athlete_id))
        s.execute(delete(StreetProgress).where(StreetProgress.athlete_id == athlete_id))
        state = s.get(SyncState, (SOURCE, str(athlete_id)))
        if state is not None:
            s.delete(state)
        s.delete(athlete)
    return True
