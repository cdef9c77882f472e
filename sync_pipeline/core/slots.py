"""Limits on work items in flight across every run and host, held as rows in the app DB.

Dagster's concurrency pools limit how many ops/asset steps run at once; they cannot say
"at most 3 product families in flight" when one step fetches many families on a thread
pool. A `SharedLimit` does: each item takes one of `limit` numbered slots (a primary-key row
per slot, so two takers of the same slot collide on insert) and gives it back when done. A
slot whose holder died (SIGKILL, lost host) expires after `ttl` and is taken over.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import ConcurrencySlot, utcnow


def holder_name(owner: str, item: str) -> str:
    """A holder name: the owning run (checked by `owner_is_dead`) and the item it works on."""
    return f"{owner}|{item}"[:128]


def owner_of(holder: str) -> str:
    """The owner part of a holder name."""
    return holder.split("|", 1)[0]


class SlotTimeoutError(TimeoutError):
    """No slot became free before the deadline."""


class SharedLimit:
    """At most `limit` holders of the named pool at once, across processes and hosts."""

    def __init__(
        self,
        db_url: str,
        pool: str,
        limit: int,
        *,
        ttl: dt.timedelta = dt.timedelta(minutes=10),
        poll_seconds: float = 0.05,
        owner_is_dead: Callable[[str], bool] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.db_url = db_url
        self.pool = pool
        self.limit = limit
        self.ttl = ttl
        self.poll_seconds = poll_seconds
        self.owner_is_dead = owner_is_dead
        self._wake = threading.Event()

    def try_acquire(self, holder: str) -> int | None:
        """Take a free slot now; its number, or None when all `limit` are held."""
        now = utcnow()
        try:
            with transaction(self.db_url) as s:
                s.execute(
                    delete(ConcurrencySlot).where(
                        ConcurrencySlot.pool == self.pool, ConcurrencySlot.expires_at < now
                    )
                )
                held = set(
                    s.scalars(select(ConcurrencySlot.slot).where(ConcurrencySlot.pool == self.pool))
                )
                free = next((i for i in range(self.limit) if i not in held), None)
                if free is None:
                    return None
                s.add(
                    ConcurrencySlot(
                        pool=self.pool,
                        slot=free,
                        holder=holder[:128],
                        acquired_at=now,
                        expires_at=now + self.ttl,
                    )
                )
            return free
        except (IntegrityError, OperationalError):  # another taker won the slot (or the lock)
            return None

    def acquire(self, holder: str, timeout: float) -> int:
        """Wait for a slot up to `timeout` seconds (polling the table); its number."""
        deadline = time.monotonic() + timeout
        wait = self.poll_seconds
        while True:
            slot = self.try_acquire(holder)
            if slot is not None:
                return slot
            left = deadline - time.monotonic()
            if left <= 0:
                raise SlotTimeoutError(
                    f"no free slot of {self.pool!r} (limit {self.limit}) within {timeout:.0f} s"
                )
            # Woken at once by a release in this process; other processes' releases are seen
            # at the next poll.
            self._wake.wait(min(wait, left))
            self._wake.clear()
            wait = min(wait * 2, 1.0)

    def release(self, slot: int, holder: str) -> None:
        """Give a slot back (only if this holder still has it)."""
        with transaction(self.db_url) as s:
            s.execute(
                delete(ConcurrencySlot).where(
                    ConcurrencySlot.pool == self.pool,
                    ConcurrencySlot.slot == slot,
                    ConcurrencySlot.holder == holder[:128],
                )
            )
        self._wake.set()

    @contextmanager
    def hold(self, holder: str, timeout: float) -> Iterator[int]:
        """Hold a slot for the duration of the block."""
        slot = self.acquire(holder, timeout)
        try:
            yield slot
        finally:
            self.release(slot, holder)

    def held(self) -> int:
        """Slots held now (expired ones excluded)."""
        with transaction(self.db_url) as s:
            return len(
                list(
                    s.scalars(
                        select(ConcurrencySlot.slot).where(
                            ConcurrencySlot.pool == self.pool,
                            ConcurrencySlot.expires_at >= utcnow(),
                        )
                    )
                )
            )
