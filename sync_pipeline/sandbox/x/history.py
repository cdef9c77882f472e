"""Deterministic per-account posting histories with realistic local-time daily patterns.

Used by the X and Instagram sandboxes (it is provider-neutral and could move to
``sandbox/common.py``). A history is a sorted list of epoch seconds covering the last
``days`` local days before ``now`` in the account's IANA time zone: days switch between
active streaks and idle stretches (a two-state Markov chain), active days carry a few items
at local waking hours, with some late at night, so per-local-day counts differ from per-UTC-day
counts on some days.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

#: Zones accounts are spread over: both sides of UTC, half-hour offset, DST north and south.
TIMEZONES = (
    "America/Los_Angeles",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "UTC",
)

#: Relative weight of posting at each local hour (0..23): quiet nights, busy evenings.
HOUR_WEIGHTS = (
    0.6, 0.35, 0.12, 0.05, 0.04, 0.06, 0.25, 0.7, 1.0, 1.0, 0.95, 0.9,
    1.0, 0.9, 0.8, 0.8, 0.85, 0.95, 1.2, 1.35, 1.3, 1.2, 1.05, 0.85,
)  # fmt: skip

ADJECTIVES = (
    "quiet", "rapid", "sunny", "brave", "lucky", "mellow", "bold", "clever", "eager", "gentle",
    "happy", "jolly", "keen", "lively", "noble", "proud", "witty", "zesty", "calm", "vivid",
)  # fmt: skip
NOUNS = (
    "otter", "falcon", "maple", "river", "comet", "harbor", "meadow", "pixel", "summit", "lantern",
    "badger", "cedar", "ember", "fjord", "glacier", "heron", "island", "juniper", "koala", "lotus",
)  # fmt: skip
FIRST_NAMES = (
    "Ava", "Ben", "Chloe", "Daniel", "Elena", "Felix", "Grace", "Hiro", "Isla", "Jonas",
    "Keiko", "Liam", "Maya", "Noah", "Olivia", "Priya", "Quentin", "Rosa", "Sven", "Tara",
)  # fmt: skip
LAST_NAMES = (
    "Adams", "Berg", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen",
    "Kumar", "Larsen", "Moreau", "Novak", "Okafor", "Park", "Rossi", "Sato", "Tanaka", "Weber",
)  # fmt: skip


@dataclass(frozen=True)
class ActivityProfile:
    """How an account posts: streakiness and volume on active days."""

    start_prob: float  # P(idle day -> active day)
    stay_prob: float  # P(active day -> active day): high values make streaks
    mean_per_active_day: float
    max_per_day: int


def pick_profile(rng: random.Random, mean_per_active_day: float) -> ActivityProfile:
    """A per-account variation around ``mean_per_active_day``."""
    return ActivityProfile(
        start_prob=rng.uniform(0.15, 0.45),
        stay_prob=rng.uniform(0.55, 0.9),
        mean_per_active_day=max(0.5, mean_per_active_day * rng.uniform(0.5, 1.6)),
        max_per_day=max(3, math.ceil(mean_per_active_day * 4)),
    )


def pick_timezone(rng: random.Random, index: int | None = None) -> str:
    """A zone from ``TIMEZONES`` (round-robin by ``index`` when given, so small sets vary)."""
    if index is not None:
        return TIMEZONES[index % len(TIMEZONES)]
    return rng.choice(TIMEZONES)


def pick_handle(rng: random.Random) -> str:
    """A plausible handle such as ``witty_otter42``."""
    return f"{rng.choice(ADJECTIVES)}_{rng.choice(NOUNS)}{rng.randint(1, 999)}"


def pick_name(rng: random.Random) -> str:
    """A display name."""
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's Poisson sampler (small lambdas only)."""
    limit = math.exp(-lam)
    k, p = 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def local_date(ts: float, tz: str) -> date:
    """The calendar date of ``ts`` in zone ``tz``."""
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).date()


def _day_weights(rng: random.Random, profile: ActivityProfile, days: int) -> list[float]:
    """Oldest-first activity weight per day (0 on idle days)."""
    weights: list[float] = []
    active = rng.random() < 0.5
    for _ in range(days):
        active = rng.random() < (profile.stay_prob if active else profile.start_prob)
        weights.append(profile.mean_per_active_day * rng.uniform(0.4, 1.6) if active else 0.0)
    return weights


def _time_in_day(rng: random.Random, day: date, zone: ZoneInfo) -> float:
    hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
    local = datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60))
    return local.replace(tzinfo=zone).timestamp()


def generate_history(
    rng: random.Random,
    tz: str,
    now: float,
    days: int,
    profile: ActivityProfile,
    count: int | None = None,
) -> list[int]:
    """Sorted epoch seconds (all before ``now``) over the last ``days`` local days.

    With ``count`` the history has exactly that many items, spread over the same kind of
    streaky pattern; otherwise each active day draws its own number of items.
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    if count is not None and count < 0:
        raise ValueError("count must be >= 0")
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now, zone).date()
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
    weights = _day_weights(rng, profile, days)
    per_day: Counter[int] = Counter()
    if count is None:
        for i, w in enumerate(weights):
            if w > 0:
                per_day[i] = min(profile.max_per_day, 1 + _poisson(rng, max(0.0, w - 1)))
    elif count > 0:
        if not any(weights):
            weights = [1.0] * days
        # Today may be mostly in the future: weigh it by the share of it already past.
        start_today = datetime(today.year, today.month, today.day, tzinfo=zone).timestamp()
        weights[-1] *= min(1.0, max(0.05, (now - start_today) / 86400))
        for i in rng.choices(range(days), weights=weights, k=count):
            per_day[i] += 1
    out: list[int] = []
    for i, n in sorted(per_day.items()):
        for _ in range(n):
            ts = _time_in_day(rng, dates[i], zone)
            while ts >= now:  # items of today must already have happened
                ts = now - rng.uniform(1, 6 * 3600)
            out.append(int(ts))
    out.sort()
    return out


def daily_counts(timestamps: Iterable[float], tz: str) -> dict[str, int]:
    """Items per local calendar day (ISO date -> count), days without items omitted."""
    zone = ZoneInfo(tz)
    counts: Counter[str] = Counter(
        datetime.fromtimestamp(ts, zone).date().isoformat() for ts in timestamps
    )
    return dict(sorted(counts.items()))


def utc_iso(ts: float, millis: bool = False) -> str:
    """``2024-05-01T12:34:56Z`` (or with ``.000`` milliseconds)."""
    dt = datetime.fromtimestamp(ts, UTC)
    if millis:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
