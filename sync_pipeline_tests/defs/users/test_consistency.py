"""Streaks and rates on hand-made histories."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from sync_pipeline.defs.users.consistency import compute

TODAY = dt.date(2026, 11, 23)


def history(*entries: tuple[str, int, int]) -> pd.DataFrame:
    """Rows from (platform, days before today, count)."""
    return pd.DataFrame(
        [(p, TODAY - dt.timedelta(days=ago), n) for p, ago, n in entries],
        columns=["platform", "day", "count"],
    )


@pytest.mark.parametrize(
    ("entries", "current", "longest"),
    [
        ((), 0, 0),
        ((("github", 0, 1),), 1, 1),
        # Today not active yet: the streak ending yesterday is still alive.
        ((("github", 1, 2), ("github", 2, 1), ("github", 3, 5)), 3, 3),
        # Ended the day before yesterday: broken.
        ((("github", 2, 1), ("github", 3, 1)), 0, 2),
        # A gap splits runs; the longest is in the past.
        (
            (
                ("github", 0, 1),
                ("github", 1, 1),
                ("github", 5, 1),
                ("github", 6, 1),
                ("github", 7, 1),
                ("github", 8, 1),
            ),
            2,
            4,
        ),
        # Any platform makes the day count: platforms interleave into one streak.
        ((("github", 0, 1), ("x", 1, 1), ("youtube", 2, 1), ("instagram", 3, 1)), 4, 4),
        # Zero-count rows (synced days without activity) are not activity.
        ((("github", 0, 0), ("github", 1, 0), ("x", 2, 3)), 0, 1),
        # Future days (a clock skew) are ignored.
        ((("github", -1, 4),), 0, 0),
    ],
)
def test_streaks(entries: tuple[tuple[str, int, int], ...], current: int, longest: int) -> None:
    c = compute(history(*entries), TODAY)
    assert (c.current_streak, c.longest_streak) == (current, longest)


def test_rates_count_distinct_active_days_in_windows_ending_today() -> None:
    # Active 0,1,2 (two platforms on day 1), 6, 7 (outside 7 days), 29, 30 (outside 30 days).
    c = compute(
        history(
            ("github", 0, 1),
            ("github", 1, 1),
            ("x", 1, 3),
            ("github", 2, 1),
            ("github", 6, 1),
            ("github", 7, 1),
            ("youtube", 29, 1),
            ("youtube", 30, 1),
        ),
        TODAY,
    )
    assert c.rate_7d == round(4 / 7, 4)
    assert c.rate_30d == round(6 / 30, 4)
    assert c.active_days == {"github": 5, "x": 1, "youtube": 2}


def test_public_variant_leaves_private_platforms_out_entirely() -> None:
    daily = history(("github", 0, 1), ("x", 1, 9), ("github", 2, 1), ("x", 3, 2))
    owner = compute(daily, TODAY)
    public = compute(daily, TODAY, exclude_platforms=frozenset({"x"}))
    assert (owner.current_streak, owner.longest_streak) == (4, 4)
    assert (public.current_streak, public.longest_streak) == (1, 1)
    assert "x" not in public.active_days
    assert public.active_days == {"github": 2}
