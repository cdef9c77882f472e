"""App users and their platform connections: add, connect, list, privacy, disconnect."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select

from sync_pipeline.core.daily import DailyActivityClient, zone
from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import ConfigError
from sync_pipeline.core.models import (
    AppUser,
    ConsistencyScore,
    DailyActivity,
    PlatformConnection,
    SyncState,
)
from sync_pipeline.core.oauth import capture_redirect


def platforms() -> tuple[str, ...]:
    """The consistency tracker's platforms, as the registry of sources declares them."""
    from sync_pipeline.sources import PLATFORMS  # the registry imports the platforms' modules

    return PLATFORMS


def check_platform(platform: str) -> str:
    """The platform name, or ConfigError listing the known ones."""
    if platform not in platforms():
        raise ConfigError(f"Unknown platform {platform!r}; choose one of {', '.join(platforms())}.")
    return platform


def add_user(db_url: str, user_id: str, *, timezone: str = "UTC", name: str | None = None) -> bool:
    """Create a user (or update their time zone and name); True when new."""
    zone(timezone)
    if not user_id or len(user_id) > 64 or not user_id.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(
            f"User id {user_id!r} must be 1-64 letters, digits, '-' or '_' (it is a partition key)."
        )
    with transaction(db_url) as s:
        user = s.get(AppUser, user_id)
        if user is None:
            s.add(AppUser(id=user_id, timezone=timezone, display_name=name))
            return True
        user.timezone = timezone
        if name is not None:
            user.display_name = name
        return False


def connect(
    client: DailyActivityClient,
    user_id: str,
    *,
    auto_approve: bool,
    sandbox_user: str | None = None,
    on_url: Callable[[str], None] | None = None,
    timeout: float = 300.0,
) -> PlatformConnection:
    """Run the platform's OAuth consent for an existing user and store the connection."""
    platform = client.PROVIDER
    with transaction(client.app_db.url) as s:
        if s.get(AppUser, user_id) is None:
            raise ConfigError(f"No user {user_id!r}; add them first: `sync-pipeline users add`.")
    extra = {"sandbox_user": sandbox_user} if sandbox_user else {}
    secrets: dict[str, str] = {}

    def consent_url(redirect_uri: str) -> str:
        url, found = client.consent(redirect_uri, state=f"sync-pipeline-{user_id}", **extra)
        secrets.update(found)
        return url

    query, redirect_uri = capture_redirect(
        platform.capitalize(),
        consent_url,
        auto_approve=auto_approve,
        on_url=on_url,
        timeout=timeout,
    )
    grant = client.exchange(query["code"], redirect_uri, secrets)
    with transaction(client.app_db.url) as s:
        taken = s.scalar(
            select(PlatformConnection.user_id).where(
                PlatformConnection.platform == platform,
                PlatformConnection.account_id == grant.account_id,
                PlatformConnection.user_id != user_id,
            )
        )
        if taken is not None:
            raise ConfigError(
                f"{platform} account {grant.handle or grant.account_id} is already connected to "
                f"user {taken!r}; disconnect it there first."
            )
        conn = s.get(PlatformConnection, (user_id, platform))
        if conn is None:
            conn = PlatformConnection(user_id=user_id, platform=platform, private=False)
            s.add(conn)
        conn.account_id = grant.account_id
        conn.handle = grant.handle
        conn.state, conn.state_reason = "connected", None
        conn.scopes = grant.tokens.scopes
        conn.extra = dict(grant.extra)
        conn.connected_at = dt.datetime.now(dt.UTC)
    client.app_db.tokens(platform).save(user_id, grant.tokens)
    with transaction(client.app_db.url) as s:
        found = s.get(PlatformConnection, (user_id, platform))
        assert found is not None
        s.expunge(found)
        return found


def set_privacy(db_url: str, user_id: str, platform: str, *, private: bool) -> None:
    """Mark a platform private (synced for the owner, never in public outputs) or public."""
    with transaction(db_url) as s:
        conn = s.get(PlatformConnection, (user_id, check_platform(platform)))
        if conn is None:
            raise ConfigError(f"User {user_id!r} has no {platform} connection.")
        conn.private = private


def disconnect(
    db_url: str, user_id: str, platform: str, *, revoke: Callable[[], None] | None = None
) -> bool:
    """Delete a connection, its tokens, its daily rows and sync state; True if it existed."""
    check_platform(platform)
    if revoke is not None:
        with contextlib.suppress(Exception):  # best effort: our copy is what we must delete
            revoke()
    from sync_pipeline.core.models import OAuthToken

    with transaction(db_url) as s:
        conn = s.get(PlatformConnection, (user_id, platform))
        s.execute(
            delete(OAuthToken).where(
                OAuthToken.provider == platform, OAuthToken.account_id == user_id
            )
        )
        s.execute(
            delete(DailyActivity).where(
                DailyActivity.user_id == user_id, DailyActivity.platform == platform
            )
        )
        s.execute(
            delete(SyncState).where(
                SyncState.source == platform, SyncState.partition_key == user_id
            )
        )
        if conn is None:
            return False
        s.delete(conn)
        return True


def delete_user(db_url: str, user_id: str) -> bool:
    """Delete a user with every connection, token, row and score."""
    for platform in platforms():
        disconnect(db_url, user_id, platform)
    with transaction(db_url) as s:
        s.execute(delete(ConsistencyScore).where(ConsistencyScore.user_id == user_id))
        user = s.get(AppUser, user_id)
        if user is None:
            return False
        s.delete(user)
        return True


def connected_user_ids(db_url: str, platform: str | None = None) -> list[str]:
    """Users with at least one connection (to `platform` when given), connected state only
    when a platform is given."""
    with transaction(db_url) as s:
        q = select(PlatformConnection.user_id).distinct()
        if platform is not None:
            q = q.where(
                PlatformConnection.platform == platform, PlatformConnection.state == "connected"
            )
        return sorted(s.scalars(q))


@dataclass
class UserRow:
    """One user as `users list` shows them."""

    id: str
    timezone: str
    platforms: dict[str, dict[str, object]] = field(default_factory=dict)


def list_users(db_url: str) -> list[UserRow]:
    """Users with per-platform state, privacy, synced days and last sync status."""
    with transaction(db_url) as s:
        days = {
            (u, p): (int(n), int(a or 0))
            for u, p, n, a in s.execute(
                select(
                    DailyActivity.user_id,
                    DailyActivity.platform,
                    func.count(),
                    func.sum(DailyActivity.count),
                ).group_by(DailyActivity.user_id, DailyActivity.platform)
            )
        }
        states = {
            (st.partition_key, st.source): st
            for st in s.scalars(select(SyncState).where(SyncState.source.in_(platforms())))
        }
        rows = {
            u.id: UserRow(u.id, u.timezone) for u in s.scalars(select(AppUser).order_by(AppUser.id))
        }
        for c in s.scalars(select(PlatformConnection)):
            st = states.get((c.user_id, c.platform))
            n_days, items = days.get((c.user_id, c.platform), (0, 0))
            rows[c.user_id].platforms[c.platform] = {
                "handle": c.handle,
                "state": c.state,
                "private": c.private,
                "days": n_days,
                "items": items,
                "sync_status": st.status if st else "never",
                "last_error": st.last_error if st and st.status != "succeeded" else c.state_reason,
            }
        return list(rows.values())
