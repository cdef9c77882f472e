"""Shared limits: at most `limit` holders across threads and processes, expiry of dead ones."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sync_pipeline.core.slots import SharedLimit, SlotTimeoutError


def test_never_more_than_the_limit_in_flight(db_url: str) -> None:
    limit = SharedLimit(db_url, "test", 3)
    other = SharedLimit(db_url, "test", 3)  # a second process's view of the same pool
    lock = threading.Lock()
    inside = peak = 0
    gate = threading.Barrier(3, timeout=10)

    def work(i: int) -> None:
        nonlocal inside, peak
        pool = limit if i % 2 else other
        with pool.hold(f"h{i}", timeout=30):
            with lock:
                inside += 1
                peak = max(peak, inside)
            if i < 3:
                gate.wait()  # the first three meet inside: the limit is reached, not just kept
            with lock:
                inside -= 1

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(work, range(12)))
    assert peak == 3
    assert limit.held() == 0


def test_a_full_pool_times_out_and_a_dead_holder_expires(db_url: str) -> None:
    limit = SharedLimit(db_url, "one", 1, ttl=dt.timedelta(seconds=60))
    assert limit.try_acquire("dead-run") == 0
    with pytest.raises(SlotTimeoutError):
        limit.acquire("me", timeout=0.2)
    short = SharedLimit(db_url, "one", 1, ttl=dt.timedelta(seconds=-1))
    short.release(0, "dead-run")
    assert short.try_acquire("dead-run") == 0  # this one is born expired
    assert limit.try_acquire("me") == 0  # taken over after expiry


def test_release_only_by_the_holder(db_url: str) -> None:
    limit = SharedLimit(db_url, "p", 1)
    slot = limit.acquire("a", timeout=1)
    limit.release(slot, "b")
    assert limit.held() == 1
    limit.release(slot, "a")
    assert limit.held() == 0
