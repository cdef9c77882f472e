"""How work is split into batch runs, the same way for Strava, the platforms and the CLI."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# Athletes/users per batch run of explicit work (parked syncs, first syncs, redrives).
SWEEP_BATCH = 500
# Most runs one sweep schedule tick creates. Creating a run costs the daemon ~0.2 s, so 12
# runs keep the tick near 2-3 s at any size (200 runs at 100,000 athletes took ~45 s), while
# dagster.yaml runs at most 3 Strava (2 per platform) runs at once: more runs than slots buy
# no speed. 12 is 4 per Strava slot (6 per platform slot): each run holds a twelfth of the
# sweep, so a crashed run loses (and run_retries redoes) little, each run frees its slot for
# other queued work often, and below SWEEP_BATCH * 12 = 6,000 athletes shards stay <= 500.
MAX_SWEEP_RUNS = 12
# Up to this many users connecting in one sensor tick get one single-partition first-sync run
# each (own run, own partition status, the interactive lane): a normal signup is unchanged.
# Above it (a bulk import, a launch) first syncs go into batch runs of SWEEP_BATCH, so the
# tick creates a handful of runs instead of one per user (~0.2 s each).
SINGLE_FIRST_SYNC_MAX = 20


# Parked work (a spent rate budget) is re-requested up to `parked_lead` before its window
# resets: the run starts, waits in-process for the reset (no longer than the client's
# max_inline_wait_seconds, else it would park again) and spends the new window from its first
# second. The parked sensors tick this often, so a tick falls inside every such lead (20 s by
# default); retry sensors need no such haste and tick every 60 s.
PARKED_INTERVAL_SECONDS = 20


def parked_lead(max_inline_wait_seconds: float) -> dt.timedelta:
    """How long before its reset parked work is requested: what a run may wait inline."""
    return dt.timedelta(seconds=max(0.0, max_inline_wait_seconds))


def sweep_shards(n: int) -> int:
    """Runs a sweep of `n` users is split into: one per SWEEP_BATCH, at most MAX_SWEEP_RUNS."""
    if n < 0:
        raise ValueError(f"cannot shard a negative number of users ({n})")
    return min(math.ceil(n / SWEEP_BATCH), MAX_SWEEP_RUNS)


def shard_of(key: str, shards: int) -> int:
    """Stable shard of a partition key (the same for every source, in every process)."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % shards


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of at most `size` items, in order."""
    if size < 1:
        raise ValueError(f"chunk size must be positive, not {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def batch_run_key(prefix: str, chunk: Sequence[object]) -> str:
    """A run key fixed by a chunk's content: the same work requested again is deduplicated."""
    return f"{prefix}-{hashlib.sha1(repr(list(chunk)).encode()).hexdigest()[:16]}"
