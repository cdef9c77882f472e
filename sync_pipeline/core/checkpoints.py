"""Per-partition sync state: leases, resumable cursors committed page by page, outcomes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import SyncState, utcnow


@dataclass(frozen=True)
class Session:
    """The sync in progress for one partition, as resumed or begun."""

    source: str
    key: str
    mode: str
    session_id: str
    resumed: bool
    cursor_before: int | None
    cursor_after: int | None
    pages_done: int
    items_synced: int
    started_at: dt.datetime


DEFAULT_LEASE_TTL = dt.timedelta(minutes=10)


class LeaseHeldError(RuntimeError):
    """Another run is syncing this partition right now."""


@dataclass(frozen=True)
class DeadOwners:
    """An `owner_is_dead` check that also learns which dead holders' leases were taken over."""

    is_dead: Callable[[str], bool]
    #: Called with the lease's state before the take-over (its dead holder) and the new owner.
    taken_over: Callable[[SyncState, str], None]

    def __call__(self, owner: str) -> bool:
        """Whether the lease holder `owner` is gone."""
        return self.is_dead(owner)


def _pid_namespace() -> str:
    """This process's PID namespace (PIDs mean the same only within one), '-' if unknown."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "-"


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (fields[0], fields[19]) if len(fields) > 19 else None


def this_process() -> str:
    """Who holds a lease taken here: host, PID namespace, PID and the process's start time."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return f"{socket.gethostname()} {_pid_namespace()} {pid} {stat[1] if stat else '-'}"


def process_is_gone(identity: str | None) -> bool:
    """Whether the process `identity` (from `this_process`) has provably ended.

    Only a process on this host and in this PID namespace can be checked; anything else (or
    a PID now used by another process we cannot tell apart) counts as alive, and its lease
    ends when it expires.
    """
    parts = (identity or "").split(" ")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    host, namespace, pid, started = parts[0], parts[1], int(parts[2]), parts[3]
    if host != socket.gethostname() or namespace != _pid_namespace():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, owned by another user
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, start = stat
    # A killed process its parent has not reaped yet, or a new process reusing the PID.
    return state in ("Z", "X") or (started != "-" and start != started)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _where(process: str | None) -> str:
    """' (pid P on host H)' for a lease's process, '' when unknown."""
    parts = (process or "").split(" ")
    return f" (pid {parts[2]} on {parts[0]})" if len(parts) == 4 else ""


def _holder_is_dead(st: SyncState, owner_is_dead: Callable[[str], bool] | None) -> bool:
    """Whether the lease holder is provably gone: its process, or (asked) its run."""
    if process_is_gone(st.lease_process):
        return True
    return (
        owner_is_dead is not None and st.lease_owner is not None and owner_is_dead(st.lease_owner)
    )


class Checkpoints:
    """Sync state of one source's partitions in the app database."""

    def __init__(self, db_url: str, source: str, ttl: dt.timedelta | None = None) -> None:
        self._db_url = db_url
        self.source = source
        self._ttl = ttl or DEFAULT_LEASE_TTL

    def _ensure(self, key: str) -> None:
        with transaction(self._db_url) as s:
            if s.get(SyncState, (self.source, key)) is None:
                s.add(SyncState(source=self.source, partition_key=key, status="idle"))

    def get(self, key: str) -> SyncState | None:
        """The partition's state row, if any."""
        with transaction(self._db_url) as s:
            return s.get(SyncState, (self.source, key))

    def claim(
        self,
        key: str,
        owner: str,
        ttl: dt.timedelta,
        *,
        owner_is_dead: Callable[[str], bool] | None = None,
    ) -> SyncState:
        """Take the partition's lease and return its state as of the claim.

        A lease is taken over when it expired (it is renewed with every checkpoint), when its
        holder's process is gone from this host (a killed direct sync), or when
        `owner_is_dead(holder)` says its holder is gone (e.g. its Dagster run has finished or
        was marked failed by run monitoring after a crash); a `DeadOwners` check is then told
        (`taken_over`). The usual case (the row exists and nobody holds it) is one conditional
        UPDATE.
        """
        now = utcnow()
        state = self._take(key, owner, now, ttl, None)
        if state is None:
            with contextlib.suppress(IntegrityError):  # a concurrent insert of the same row
                self._ensure(key)
            current = self.get(key)
            dead_holder = None
            if (
                current is not None
                and current.lease_owner not in (None, owner)
                and _holder_is_dead(current, owner_is_dead)
            ):
                dead_holder = current.lease_owner
            # Taken over only from that holder (a new holder since this read keeps its lease).
            state = self._take(key, owner, now, ttl, dead_holder)
            if state and current and dead_holder and isinstance(owner_is_dead, DeadOwners):
                owner_is_dead.taken_over(current, owner)
        if state is None:
            current = self.get(key)
            raise LeaseHeldError(
                f"{self.source} partition {key} is being synced by run "
                f"{current.lease_owner if current else '?'}"
                + (_where(current.lease_process) if current else "")
                + f" (lease until {current.lease_until if current else '?'}); "
                "not starting a second sync."
            )
        self._ttl = ttl
        return state

    def live_lease(
        self,
        key: str,
        owner: str | None = None,
        *,
        owner_is_dead: Callable[[str], bool] | None = None,
        now: dt.datetime | None = None,
    ) -> SyncState | None:
        """The partition's state when someone other than `owner` holds a lease that is not
        expired and whose holder is not provably dead (its process is gone from this host, or
        `owner_is_dead(holder)`); else None (a claim would get the lease)."""
        now = now or utcnow()
        st = self.get(key)
        if st is None or st.lease_owner is None or st.lease_owner == owner:
            return None
        if st.lease_until is None or _aware(st.lease_until) < now:
            return None
        return None if _holder_is_dead(st, owner_is_dead) else st

    def _take(
        self, key: str, owner: str, now: dt.datetime, ttl: dt.timedelta, dead_holder: str | None
    ) -> SyncState | None:
        free = or_(
            SyncState.lease_owner.is_(None),
            SyncState.lease_owner == owner,
            SyncState.lease_until < now,
        )
        if dead_holder is not None:
            free = or_(free, SyncState.lease_owner == dead_holder)
        with transaction(self._db_url) as s:
            return s.scalars(
                update(SyncState)
                .where(SyncState.source == self.source, SyncState.partition_key == key, free)
                .values(
                    lease_owner=owner,
                    lease_until=now + ttl,
                    lease_process=this_process(),
                    last_started_at=now,
                )
                .returning(SyncState)
            ).one_or_none()

    def release(self, key: str, owner: str) -> None:
        """Give the lease back (only if we still hold it)."""
        with transaction(self._db_url) as s:
            s.execute(
                update(SyncState)
                .where(
                    SyncState.source == self.source,
                    SyncState.partition_key == key,
                    SyncState.lease_owner == owner,
                )
                .values(lease_owner=None, lease_until=None, lease_process=None)
            )

    def begin(self, key: str, mode: str, run_id: str | None) -> Session:
        """Resume the interrupted sync if there is one, else start a new one in `mode`.

        A full sync in progress also covers an incremental request; a full request replaces
        an interrupted incremental one.
        """
        with transaction(self._db_url) as s:
            st = s.get(SyncState, (self.source, key))
            assert st is not None, "claim() first"
            resumable = st.mode is not None and not (mode == "full" and st.mode != "full")
            if not resumable:
                st.mode = mode
                st.session_id = uuid.uuid4().hex
                st.session_started_at = utcnow()
                st.cursor_before = None
                st.cursor_after = None
                st.pages_done = 0
                st.items_synced = 0
            st.status = "running"
            st.last_run_id = run_id
            return Session(
                source=self.source,
                key=key,
                mode=st.mode or mode,
                session_id=st.session_id or "",
                resumed=resumable,
                cursor_before=st.cursor_before,
                cursor_after=st.cursor_after,
                pages_done=st.pages_done,
                items_synced=st.items_synced,
                started_at=st.session_started_at or utcnow(),
            )

    def checkpoint(
        self,
        key: str,
        *,
        cursor_before: int | None = None,
        cursor_after: int | None = None,
        pages_done: int,
        items_synced: int,
    ) -> None:
        """Commit progress after a page (call in the same transaction as the page's writes
        when possible; see `checkpoint_in`)."""
        with transaction(self._db_url) as s:
            self.checkpoint_in(
                s,
                key,
                cursor_before=cursor_before,
                cursor_after=cursor_after,
                pages_done=pages_done,
                items_synced=items_synced,
            )

    def checkpoint_in(
        self,
        s: object,
        key: str,
        *,
        cursor_before: int | None = None,
        cursor_after: int | None = None,
        pages_done: int,
        items_synced: int,
    ) -> None:
        """Record progress inside the caller's transaction, atomically with the page's rows."""
        from sqlalchemy.orm import Session as OrmSession

        assert isinstance(s, OrmSession)
        values: dict[str, object] = {
            "pages_done": pages_done,
            "items_synced": items_synced,
            # Each checkpoint renews the lease: a live sync never loses it, a dead one's expires.
            "lease_until": utcnow() + self._ttl,
        }
        if cursor_before is not None:
            values["cursor_before"] = cursor_before
        if cursor_after is not None:
            values["cursor_after"] = cursor_after
        s.execute(
            update(SyncState)
            .where(SyncState.source == self.source, SyncState.partition_key == key)
            .values(**values)
        )

    def succeed(self, key: str, *, full: bool, owner: str | None = None) -> None:
        """The sync finished: clear the session, errors, blocks and hand-over marks, and give
        the lease back in the same transaction when `owner` still holds it."""
        now = utcnow()
        with transaction(self._db_url) as s:
            st = s.get(SyncState, (self.source, key))
            if st is None:
                return
            if owner is not None and st.lease_owner == owner:
                st.lease_owner = None
                st.lease_until = None
                st.lease_process = None
            st.status = "succeeded"
            st.mode = None
            st.session_id = None
            st.cursor_before = None
            st.cursor_after = None
            st.last_success_at = now
            if full:
                st.last_full_sync_at = now
            st.consecutive_failures = 0
            st.first_failure_at = None
            st.blocked_until = None
            st.blocked_reason = None
            st.pending_mode = None

    def fail(
        self,
        key: str,
        *,
        error_class: str,
        message: str,
        run_id: str | None,
        hand_over_mode: str | None = None,
        keep_session: bool = True,
        dead: bool = False,
    ) -> int:
        """Record a failure; returns the new failure sequence number.

        `hand_over_mode` marks the partition for a single-partition retry run (the retry
        sensor picks it up). The session's cursor is kept so the retry resumes.
        """
        with transaction(self._db_url) as s:
            st = s.get(SyncState, (self.source, key))
            if st is None:
                st = SyncState(source=self.source, partition_key=key)
                s.add(st)
            st.status = "dead" if dead else "failed"
            if not st.consecutive_failures:
                st.first_failure_at = utcnow()
            st.last_error = message[:4000]
            st.last_error_class = error_class
            st.last_error_at = utcnow()
            st.last_run_id = run_id
            st.consecutive_failures = (st.consecutive_failures or 0) + 1
            st.failure_seq = (st.failure_seq or 0) + 1
            st.pending_mode = hand_over_mode
            if not keep_session:
                st.mode = None
                st.session_id = None
            return st.failure_seq

    def park(self, key: str, *, until: dt.datetime, reason: str, mode: str) -> None:
        """Budget spent: come back at `until` (the parked sensor re-requests the work)."""
        with transaction(self._db_url) as s:
            st = s.get(SyncState, (self.source, key))
            if st is None:
                return
            st.status = "parked"
            st.blocked_until = until
            st.blocked_reason = reason
            st.pending_mode = mode

    def clear_hand_over(self, key: str) -> None:
        """A single-partition run took the work over."""
        with transaction(self._db_url) as s:
            s.execute(
                update(SyncState)
                .where(SyncState.source == self.source, SyncState.partition_key == key)
                .values(pending_mode=None)
            )

    def handed_over(self) -> list[SyncState]:
        """Partitions a batch run failed and handed over for single-partition retries."""
        with transaction(self._db_url) as s:
            return list(
                s.scalars(
                    select(SyncState).where(
                        SyncState.source == self.source,
                        SyncState.status == "failed",
                        SyncState.pending_mode.is_not(None),
                    )
                )
            )

    def dead_letters(self) -> list[SyncState]:
        """Partitions that failed for good: permanent errors or retries exhausted."""
        with transaction(self._db_url) as s:
            return list(
                s.scalars(
                    select(SyncState)
                    .where(SyncState.source == self.source, SyncState.status == "dead")
                    .order_by(SyncState.last_error_at.desc())
                )
            )

    def parked_due(
        self, now: dt.datetime | None = None, lead: dt.timedelta = dt.timedelta(0)
    ) -> list[SyncState]:
        """Parked partitions whose wait is over, or ends within `lead` (a run requested that
        early is started and waiting when the window resets, instead of starting after it)."""
        now = (now or utcnow()) + lead
        with transaction(self._db_url) as s:
            return list(
                s.scalars(
                    select(SyncState).where(
                        and_(
                            SyncState.source == self.source,
                            SyncState.status == "parked",
                            SyncState.blocked_until <= now,
                        )
                    )
                )
            )

    def delete(self, key: str) -> None:
        """Forget a partition's state (user disconnected)."""
        with transaction(self._db_url) as s:
            st = s.get(SyncState, (self.source, key))
            if st is not None:
                s.delete(st)
