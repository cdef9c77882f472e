"""The receiver's fast path: a push event for a connected athlete is processed at once, in the
receiver process, by the same sync function a Dagster run calls; the sensor stays the safety net.

After an activity event is committed to the inbox (and answered), `FastPath.submit` queues its
athlete without blocking; a small pool of threads then, per athlete:

1. claims the athlete's queued events in the inbox (`inline_pending`, one conditional UPDATE);
   the sensor stops before a claimed event until the claim is completed or given back;
2. runs the Strava `SyncSource.sync` with the events' `activity_ids` / `deleted_activity_ids`
   under the partition's lease (a lease held by a live run: skipped);
3. on success reports the materializations a single-partition run would log (runless events
   on the athlete's partition) and marks the events `processed_inline` (the sensor skips them);
   on anything else gives the events back to the sensor, whose run has retries and dead letters.

A full queue, a held lease, a failure, an athlete who is not connected, deauthorizations and
shutdown all leave the events to the sensor exactly as without the fast path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sync_pipeline.core.db import transaction
from sync_pipeline.core.inbox import (
    apply_activity_event,
    claim_inline,
    mark_processed_inline,
    release_inline,
)
from sync_pipeline.core.models import Athlete

if TYPE_CHECKING:  # Dagster and the sources load in the worker threads, not before serving
    import dagster as dg

    from sync_pipeline.defs.strava.resources import StravaResource

logger = logging.getLogger(__name__)

PROVIDER = "strava"
DEFAULT_WORKERS = 2
#: Athletes waiting for a worker; beyond this, events go the sensor's way.
DEFAULT_MAX_PENDING = 64
#: How long shutdown waits for syncs in flight (their leases are released when they end).
SHUTDOWN_GRACE_SECONDS = 20.0

#: Results of `FastPath.process`.
PROCESSED = "processed_inline"
NOTHING_CLAIMED = "nothing_claimed"  # handled (or taken by the sensor) already
NOT_CONNECTED = "not_connected"


class FastPath:
    """A bounded pool of threads processing Strava push events inside the receiver."""

    def __init__(
        self,
        strava: Callable[[], StravaResource],
        instance: Callable[[], dg.DagsterInstance],
        *,
        workers: int = DEFAULT_WORKERS,
        max_pending: int = DEFAULT_MAX_PENDING,
        shutdown_grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be positive (no fast path: pass none)")
        self._strava_factory = strava
        self._strava: StravaResource | None = None
        self.workers = workers
        self.max_pending = max_pending
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self._instance_factory = instance
        self._instance: dg.DagsterInstance | None = None
        self._report_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: OrderedDict[int, list[str]] = OrderedDict()
        self._busy: set[int] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        #: What each processed athlete came to, in order (for logs and tests).
        self.results: list[tuple[int, str]] = []

    # -- the request side (event loop): never blocks on work ---------------------------------
    def submit(self, object_type: str, owner_id: int, dedup_key: str) -> bool:
        """Queue a committed event's athlete; False when the event is left to the sensor
        (not an activity event, queue full, shutting down)."""
        if object_type != "activity":
            return False  # deauthorizations stay on the sensor path
        with self._cond:
            if self._closed:
                return False
            if owner_id in self._pending:
                self._pending[owner_id].append(dedup_key)
            elif len(self._pending) >= self.max_pending:
                logger.info("fast path full: athlete %d left to the sensor", owner_id)
                return False
            else:
                self._pending[owner_id] = [dedup_key]
            if not self._threads:
                self._start()
            self._cond.notify()
        return True

    def start(self) -> None:
        """Start the threads now (the receiver's start-up), the first opening the Dagster
        instance, so that the first event does not pay for it."""
        with self._cond:
            if not self._threads and not self._closed:
                self._start()

    def _start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"webhook-fastpath-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop taking events; queued ones are left to the sensor, syncs in flight finish
        (up to the grace period; past it, their leases expire or are taken over)."""
        with self._cond:
            self._closed = True
            dropped = len(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        if dropped:
            logger.info("fast path stopping: %d queued athlete(s) left to the sensor", dropped)
        deadline = time.monotonic() + self.shutdown_grace_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- the workers ----------------------------------------------------------------------
    def _next(self) -> tuple[int, list[str]] | None:
        """The oldest queued athlete nobody is processing; None once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                owner = next((o for o in self._pending if o not in self._busy), None)
                if owner is not None:
                    self._busy.add(owner)
                    return owner, self._pending.pop(owner)
                self._cond.wait()

    def _work(self) -> None:
        try:
            self.instance()
            self.strava()
        except Exception:  # reported again, with the event, by the first use
            logger.exception("fast path: the Dagster instance or the Strava client failed")
        while (item := self._next()) is not None:
            owner, keys = item
            try:
                result = self.process(owner, keys)
            except Exception:
                logger.exception("fast path for athlete %d failed; left to the sensor", owner)
                result = "error"
            finally:
                with self._cond:
                    self._busy.discard(owner)
                    self._cond.notify_all()
            self.results.append((owner, result))

    def instance(self) -> dg.DagsterInstance:
        """The Dagster instance (opened on first use)."""
        with self._report_lock:
            if self._instance is None:
                self._instance = self._instance_factory()
            return self._instance

    def strava(self) -> StravaResource:
        """The Strava client (built on first use)."""
        with self._report_lock:
            if self._strava is None:
                self._strava = self._strava_factory()
            return self._strava

    def process(self, owner: int, dedup_keys: list[str]) -> str:
        """Claim, sync and report one athlete's events; returns what happened. Anything but
        `processed_inline` gave the claimed events back to the sensor."""
        from sync_pipeline.core.dagster_events import NON_RUN_OWNER_PREFIX, run_is_finished
        from sync_pipeline.core.source import runless_materializations
        from sync_pipeline.core.sync_runner import RunContext
        from sync_pipeline.defs.strava.source import STRAVA, StravaSyncConfig

        strava = self.strava()
        db_url = strava.app_db.url
        claimed = claim_inline(db_url, PROVIDER, dedup_keys)
        if not claimed:
            return NOTHING_CLAIMED
        ids = [ev.id for ev in claimed]
        done = False
        try:
            with transaction(db_url) as s:
                athlete = s.get(Athlete, owner)
                state = athlete.state if athlete is not None else None
            if state != "connected":
                return NOT_CONNECTED  # unknown, disconnected or needs reconnect: the sensor's
            wanted: set[int] = set()
            deleted: set[int] = set()
            for ev in claimed:
                apply_activity_event(wanted, deleted, ev.object_id, ev.aspect_type)
            instance = self.instance()
            lease_owner = f"{NON_RUN_OWNER_PREFIX}webhooks-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            outcome = STRAVA.sync(
                strava,
                str(owner),
                RunContext(owner=lease_owner, owner_is_dead=run_is_finished(instance)),
                StravaSyncConfig(activity_ids=sorted(wanted), deleted_activity_ids=sorted(deleted)),
            )
            if outcome.status != "succeeded":
                logger.info(
                    "fast path: athlete %d %s (%s); left to the sensor",
                    owner,
                    outcome.status,
                    outcome.error_class or outcome.error,
                )
                return f"{outcome.status}:{outcome.error_class or ''}"
            self._report(instance, runless_materializations(STRAVA, outcome))
            marked = mark_processed_inline(db_url, ids)
            done = True
            logger.info(
                "fast path: athlete %d processed inline (%d event(s), %d API calls, %.2f s)",
                owner,
                marked,
                outcome.stats.calls,
                outcome.seconds,
            )
            return PROCESSED
        finally:
            if not done:
                release_inline(db_url, ids)

    def _report(self, instance: dg.DagsterInstance, events: list[Any]) -> None:
        with self._report_lock:
            for event in events:
                instance.report_runless_asset_event(event)
