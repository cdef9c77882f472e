"""Per-user daily activity sync, the same for every platform of the consistency tracker.

Dates are data, not partitions: a user's partition sync covers the local days since the
last synced day, re-syncing a trailing window (default 3 days) for late-arriving data, and
writes exactly one row per (user, platform, day), zero days included, so re-syncs are
idempotent and deletions at the provider lower the count.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select

from sync_pipeline.core.checkpoints import Session
from sync_pipeline.core.client import ProviderClient
from sync_pipeline.core.db import transaction, upsert
from sync_pipeline.core.errors import ConfigError
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.models import AppUser, DailyActivity, PlatformConnection, utcnow
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome, refuse, run_sync
from sync_pipeline.core.tokens import TokenSet

LEASE_TTL = dt.timedelta(minutes=10)
DEFAULT_TRAILING_DAYS = 3
DEFAULT_BACKFILL_DAYS = 90


@dataclass(frozen=True)
class Account:
    """A user's connection at one platform, as a client needs it."""

    user_id: str
    account_id: str
    handle: str | None
    tz: ZoneInfo
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grant:
    """What a completed OAuth consent yields: tokens and who the account is."""

    tokens: TokenSet
    account_id: str
    handle: str | None
    extra: dict[str, Any] = field(default_factory=dict)


class DailyActivityClient(ProviderClient):
    """A platform client that can count a user's items per local day."""

    def daily_counts(
        self, account: Account, start: dt.date, end: dt.date, stats: CallStats
    ) -> dict[dt.date, int]:
        """Items per local day in [start, end] (days without items may be left out)."""
        raise NotImplementedError

    def consent(self, redirect_uri: str, state: str, **extra: str) -> tuple[str, dict[str, str]]:
        """The consent URL and the secrets the exchange needs later (e.g. a PKCE verifier)."""
        raise NotImplementedError

    def exchange(self, code: str, redirect_uri: str, secrets: dict[str, str]) -> Grant:
        """Trade an authorization code for tokens and the account's identity."""
        raise NotImplementedError

    def today(self, account: Account, now: dt.datetime) -> dt.date:
        """The last day a sync covers: the user's local today (providers bucketing by UTC
        date, like GitHub's calendar, override this)."""
        return now.astimezone(account.tz).date()

    def remember(self, account: Account, **extra: Any) -> None:
        """Persist provider hints for the next sync (ETags, playlist ids)."""
        with transaction(self.app_db.url) as s:
            conn = s.get(PlatformConnection, (account.user_id, self.PROVIDER))
            if conn is not None:
                conn.extra = {**(conn.extra or {}), **extra}


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or ConfigError saying how to fix the user's setting."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"Unknown time zone {name!r}; set an IANA name such as Europe/Berlin with "
            "`sync-pipeline users add --timezone`."
        ) from exc


def local_day_bounds(start: dt.date, end: dt.date, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """UTC instants covering local days [start, end] (end exclusive at next local midnight)."""
    lo = dt.datetime.combine(start, dt.time(), tz).astimezone(dt.UTC)
    hi = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    return lo, hi


def count_local_days(
    instants: Iterable[dt.datetime], tz: ZoneInfo, start: dt.date, end: dt.date
) -> dict[dt.date, int]:
    """Count aware datetimes per local day of `tz`, keeping days in [start, end]."""
    counts: Counter[dt.date] = Counter()
    for instant in instants:
        day = instant.astimezone(tz).date()
        if start <= day <= end:
            counts[day] += 1
    return dict(counts)


def parse_instant(value: str) -> dt.datetime:
    """An aware datetime from ISO 8601 as providers write it (Z, +0000, +00:00)."""
    text = value.strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = f"{text[:-2]}:{text[-2:]}"  # Instagram's +0000
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def account_for(db_url: str, user_id: str, platform: str) -> tuple[Account | None, str | None]:
    """The user's connection, or (None, why not)."""
    with transaction(db_url) as s:
        user = s.get(AppUser, user_id)
        conn = s.get(PlatformConnection, (user_id, platform))
        if user is None:
            return None, (
                f"User {user_id!r} does not exist; add them with `sync-pipeline users add` "
                "or remove the partition."
            )
        if conn is None:
            return None, f"User {user_id!r} has no {platform} connection."
        if conn.state != "connected":
            return None, (
                f"User {user_id!r}'s {platform} connection needs reconnecting "
                f"({conn.state_reason}); run `sync-pipeline users connect {user_id} {platform}`."
            )
        return Account(user_id, conn.account_id, conn.handle, zone(user.timezone), conn.extra), None


def mark_needs_reconnect(db_url: str, user_id: str, platform: str, reason: str) -> None:
    """The user must authorize the platform again; syncs skip it until then."""
    with transaction(db_url) as s:
        conn = s.get(PlatformConnection, (user_id, platform))
        if conn is not None:
            conn.state, conn.state_reason = "needs_reconnect", reason[:2000]


def sync_window(
    db_url: str, account: Account, platform: str, today: dt.date, trailing: int, backfill: int
) -> tuple[dt.date, dt.date]:
    """Local days to sync: from the last synced day minus the trailing window, up to today."""
    with transaction(db_url) as s:
        last = s.scalar(
            select(func.max(DailyActivity.day)).where(
                DailyActivity.user_id == account.user_id, DailyActivity.platform == platform
            )
        )
    if last is None:
        return today - dt.timedelta(days=backfill - 1), today
    return min(last - dt.timedelta(days=trailing - 1), today), today


def write_days(
    db_url: str, user_id: str, platform: str, start: dt.date, end: dt.date, counts: dict
) -> None:
    """One row per day in [start, end]: the count, or 0 when the day had no items."""
    now = utcnow()
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    with transaction(db_url) as s:
        upsert(
            s,
            DailyActivity,
            [
                {
                    "user_id": user_id,
                    "platform": platform,
                    "day": day,
                    "count": int(counts.get(day, 0)),
                    "synced_at": now,
                }
                for day in days
            ],
            key=["user_id", "platform", "day"],
            update=["count", "synced_at"],
        )


def sync_daily(
    client: DailyActivityClient,
    user_id: str,
    ctx: RunContext,
    *,
    trailing_days: int = DEFAULT_TRAILING_DAYS,
    backfill_days: int = DEFAULT_BACKFILL_DAYS,
    now: dt.datetime | None = None,
) -> SyncOutcome:
    """Sync one user's daily counts on one platform; records the outcome, never raises."""
    platform = client.PROVIDER
    db_url = client.app_db.url
    outcome = SyncOutcome(key=user_id, mode="incremental")
    cp = client.app_db.checkpoints(platform, ttl=LEASE_TTL)
    try:
        account, why_not = account_for(db_url, user_id, platform)
    except ConfigError as exc:
        return refuse(cp, outcome, ctx, error_class=exc.error_class, message=str(exc))
    if account is None:
        assert why_not is not None
        return refuse(cp, outcome, ctx, error_class="not_connected", message=why_not, record=False)

    def work(session: Session) -> None:
        today = client.today(account, now or dt.datetime.now(dt.UTC))
        start, end = sync_window(db_url, account, platform, today, trailing_days, backfill_days)
        counts = client.daily_counts(account, start, end, outcome.stats)
        write_days(db_url, user_id, platform, start, end, counts)
        outcome.add(
            days_synced=(end - start).days + 1,
            items=sum(counts.values()),
            active_days=sum(1 for v in counts.values() if v),
        )

    return run_sync(
        cp,
        outcome,
        ctx,
        work,
        lease_ttl=LEASE_TTL,
        on_auth_revoked=lambda reason: mark_needs_reconnect(db_url, user_id, platform, reason),
        full_when_new=False,
    )
