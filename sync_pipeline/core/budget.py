"""A rate budget shared by every run process on every host, kept in the app database.

A provider's limits are a set of windows (e.g. Strava: 100 reads per 15 minutes and 1,000 per
day). A call is admitted only if every window it counts toward has room for its cost; the check
and the spend are one conditional UPDATE of all those windows, rolled back unless every one had
room, so concurrent processes can never overspend. Response headers correct the local count upward
when the provider saw more usage than we did (other apps sharing the key, clock skew).

Round trips are what a budget costs, so a process remembers which window rows exist and the
usage it last saw in each (the spend returns it): a header that reports no more than that is
already accounted for and needs no write. A call thus costs one statement, not six.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, case, or_, tuple_, update
from sqlalchemy.exc import IntegrityError

from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import RateLimitedError
from sync_pipeline.core.models import RateWindow


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


# Per process, shared by every RateBudget on the same database: (url, bucket, window start).
_RowKey = tuple[str, str, int]
_known_rows: set[_RowKey] = set()
_seen: dict[_RowKey, tuple[int, int]] = {}  # (used, limit) as last read or written
_MAX_REMEMBERED = 50_000  # per-user buckets: forget everything rather than grow without end


def _remember(key: _RowKey, used: int, limit: int) -> None:
    if len(_seen) >= _MAX_REMEMBERED:
        _seen.clear()
        _known_rows.clear()
    before = _seen.get(key)
    # Concurrent threads may report out of order: usage in a window only rises.
    _seen[key] = (max(used, before[0]) if before else used, limit)


# One statement charges every window of a call (they are spent together or not at all).
# Built once: constructing it per call cost more CPU than executing it.
_SPEND = (
    update(RateWindow)
    .where(
        tuple_(RateWindow.bucket, RateWindow.window_start).in_(bindparam("slots", expanding=True)),
        RateWindow.used + bindparam("cost") <= RateWindow.limit,
    )
    .values(used=RateWindow.used + bindparam("cost"))
    .returning(RateWindow.bucket, RateWindow.window_start, RateWindow.used, RateWindow.limit)
)


@dataclass(frozen=True)
class Window:
    """One limit: `limit` units per `seconds`, windows aligned to `offset` past the epoch.

    A `bucket` names the scope the limit applies to, e.g. ``strava:read:15min`` (per app) or
    ``github:core:user:42`` (per user token); budgets of different buckets never interact.
    With `tz`, a daily window runs from midnight to midnight in that time zone (YouTube's
    quota day is Pacific time, 23 or 25 hours long on daylight-saving changes). With
    `monthly`, the window is the calendar month (UTC, or in `tz`): Hunter's search credits.
    """

    bucket: str
    seconds: int
    limit: int
    offset: int = 0
    tz: str | None = None
    monthly: bool = False
    #: Seconds before a reset in which a call is charged to both windows (default: 5% of
    #: the window, at most 1 s); longer for providers counting calls on arrival over a
    #: short window (Hunter's second), where latency moves a call into the next window.
    guard_seconds: float = 0.0

    def _month(self, now: float) -> tuple[int, int]:
        zone = _zone(self.tz) if self.tz is not None else dt.UTC
        local = dt.datetime.fromtimestamp(now, zone)
        first = dt.datetime(local.year, local.month, 1, tzinfo=zone)
        following = dt.datetime(
            local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=zone
        )
        return int(first.timestamp()), int(following.timestamp())

    def start(self, now: float) -> int:
        """Epoch second at which the window containing `now` began."""
        if self.monthly:
            return self._month(now)[0]
        if self.tz is not None:
            local = dt.datetime.fromtimestamp(now, _zone(self.tz))
            midnight = dt.datetime.combine(local.date(), dt.time(), _zone(self.tz))
            return int(midnight.timestamp())
        return math.floor((now - self.offset) / self.seconds) * self.seconds + self.offset

    def end(self, now: float) -> int:
        """Epoch second at which the window containing `now` resets."""
        if self.monthly:
            return self._month(now)[1]
        if self.tz is not None:
            local = dt.datetime.fromtimestamp(now, _zone(self.tz))
            tomorrow = local.date() + dt.timedelta(days=1)
            return int(dt.datetime.combine(tomorrow, dt.time(), _zone(self.tz)).timestamp())
        return self.start(now) + self.seconds

    def guard(self) -> float:
        """Seconds before a reset during which a call is charged to both windows."""
        if self.guard_seconds:
            return self.guard_seconds
        return min(1.0, self.seconds * 0.05)

    def starts(self, now: float) -> list[int]:
        """Windows a call made at `now` may land in at the provider (clock skew, latency)."""
        first, second = self.start(now), self.start(now + self.guard())
        return [first] if first == second else [first, second]


@dataclass(frozen=True)
class WindowUsage:
    """Usage of one window, for metadata and status."""

    bucket: str
    used: int
    limit: int
    resets_at: int

    @property
    def left(self) -> int:
        """Units still available in this window."""
        return max(0, self.limit - self.used)


class RateBudget:
    """Admission control against the shared windows."""

    def __init__(self, db_url: str) -> None:
        self._db_url = db_url
        self._stop = threading.Event()

    def try_acquire(
        self, windows: Sequence[Window], cost: int = 1, now: float | None = None
    ) -> int:
        """Spend `cost` in every window or in none: 0 if admitted, else the reset to wait for.

        Just before a reset the call is charged to the ending window and to the next one: the
        provider may count it in either, depending on latency and clock skew, and charging
        only the old window would let the new one overspend.
        """
        now = time.time() if now is None else now
        slots = {(w.bucket, start): w for w in windows for start in w.starts(now)}
        self._ensure_rows([(w, start) for (_, start), w in slots.items()])
        with transaction(self._db_url) as s:
            rows = s.execute(_SPEND, {"slots": list(slots), "cost": cost}).all()
            if len(rows) < len(slots):
                s.rollback()
                charged = {(row.bucket, row.window_start) for row in rows}
                return max(w.end(key[1]) for key, w in slots.items() if key not in charged)
        for row in rows:
            _remember((self._db_url, row.bucket, row.window_start), row.used, row.limit)
        return 0

    def acquire(
        self,
        windows: Sequence[Window],
        cost: int = 1,
        *,
        max_wait: float,
    ) -> float:
        """Admit the call, waiting for a reset no further than `max_wait` seconds away.

        Returns the seconds waited. Raises RateLimitedError (with the reset time) when the
        budget is spent for longer than that: the caller parks its work instead of holding a
        run slot.
        """
        waited = 0.0
        while True:
            reset_at = self.try_acquire(windows, cost)
            if reset_at == 0:
                return waited
            wait = reset_at - time.time()
            if wait > max_wait - waited:
                raise RateLimitedError(
                    f"Rate budget spent until {time.strftime('%H:%M:%S', time.gmtime(reset_at))}"
                    " UTC",
                    retry_at=float(reset_at),
                )
            # A real wait for a window to reset (bounded by max_wait).
            self._stop.wait(max(wait, 0.0) + 0.01)
            waited += max(wait, 0.0) + 0.01

    def observe(
        self, observations: Sequence[tuple[Window, int, int | None]], now: float | None = None
    ) -> None:
        """Correct windows from the provider's headers (window, used, limit): usage only rises."""
        now = time.time() if now is None else now
        news = []
        for window, used, limit in observations:
            key = (self._db_url, window.bucket, window.start(now))
            seen = _seen.get(key)
            if seen is None or used > seen[0] or (limit is not None and limit != seen[1]):
                news.append((window, key, used, limit))
        if not news:
            return  # the headers say nothing the database does not already hold
        self._ensure_rows([(w, key[2]) for w, key, _, _ in news])
        with transaction(self._db_url) as s:
            for window, key, used, limit in news:
                where = and_(RateWindow.bucket == window.bucket, RateWindow.window_start == key[2])
                changed = [RateWindow.used < used]
                values: dict[str, Any] = {
                    "used": case((RateWindow.used < used, used), else_=RateWindow.used)
                }
                if limit is not None:
                    changed.append(RateWindow.limit != limit)
                    values["limit"] = limit
                row = s.execute(
                    update(RateWindow)
                    .where(where, or_(*changed))
                    .values(**values)
                    .returning(RateWindow.used, RateWindow.limit)
                ).first()
                if row is not None:
                    _remember(key, row.used, row.limit)

    def refund(self, windows: Sequence[Window], cost: int = 1, now: float | None = None) -> None:
        """Give back units a call was charged but did not use (a search finding nothing)."""
        now = time.time() if now is None else now
        with transaction(self._db_url) as s:
            for w in windows:
                start = w.start(now)
                row = s.execute(
                    update(RateWindow)
                    .where(
                        RateWindow.bucket == w.bucket,
                        RateWindow.window_start == start,
                        RateWindow.used >= cost,
                    )
                    .values(used=RateWindow.used - cost)
                    .returning(RateWindow.used, RateWindow.limit)
                ).first()
                if row is not None:
                    _seen[(self._db_url, w.bucket, start)] = (row.used, row.limit)

    def exhaust(self, window: Window, now: float | None = None) -> None:
        """Mark a window spent (the provider answered 429)."""
        now = time.time() if now is None else now
        self._ensure_rows([(window, window.start(now))])
        start = window.start(now)
        with transaction(self._db_url) as s:
            row = s.execute(
                update(RateWindow)
                .where(RateWindow.bucket == window.bucket, RateWindow.window_start == start)
                .values(used=RateWindow.limit)
                .returning(RateWindow.used, RateWindow.limit)
            ).first()
        if row is not None:
            _remember((self._db_url, window.bucket, start), row.used, row.limit)

    def usage(self, windows: Sequence[Window], now: float | None = None) -> list[WindowUsage]:
        """Current usage of each window (0 used when nothing was spent yet)."""
        now = time.time() if now is None else now
        out = []
        with transaction(self._db_url) as s:
            for w in windows:
                row = s.get(RateWindow, (w.bucket, w.start(now)))
                out.append(
                    WindowUsage(
                        bucket=w.bucket,
                        used=row.used if row else 0,
                        limit=row.limit if row else w.limit,
                        resets_at=w.end(now),
                    )
                )
        return out

    def _ensure_rows(self, slots: Sequence[tuple[Window, int]]) -> None:
        for w, start in slots:
            key = (self._db_url, w.bucket, start)
            if key in _known_rows:
                continue
            with transaction(self._db_url) as s:
                if s.get(RateWindow, (w.bucket, start)) is not None:
                    _known_rows.add(key)
                    continue
            try:
                with transaction(self._db_url) as s:
                    s.add(
                        RateWindow(
                            bucket=w.bucket,
                            window_start=start,
                            window_seconds=w.end(start) - start,
                            limit=w.limit,
                            used=0,
                        )
                    )
            except IntegrityError:
                pass  # another process created it first
            _known_rows.add(key)
