"""One partition's sync, the same way for every source: lease, resume, outcome bookkeeping.

A source supplies the work (a function of the checkpoint session); this module takes the
partition's lease, begins or resumes the session, and turns whatever happens into exactly one
recorded outcome: succeeded, parked until a rate window resets, failed (handed over to a
retry run, or a dead letter when nothing will retry it), or skipped (another run holds the
lease). Nothing here is source-specific.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sync_pipeline.core.checkpoints import Checkpoints, LeaseHeldError, Session
from sync_pipeline.core.errors import (
    AuthRevokedError,
    PermanentError,
    RateLimitedError,
    SyncError,
)
from sync_pipeline.core.http import CallStats


@dataclass
class SyncOutcome:
    """What one partition's sync did; `metadata()` is what the UI plots."""

    key: str
    mode: str
    status: str = "running"  # succeeded | parked | failed | skipped
    resumed: bool = False
    seconds: float = 0.0
    error_class: str | None = None
    error: str | None = None
    retry_at: float | None = None
    figures: dict[str, int | float] = field(default_factory=dict)
    exception: BaseException | None = field(default=None, repr=False)
    stats: CallStats = field(default_factory=CallStats)

    @property
    def partition_key(self) -> str:
        """The partition this outcome belongs to."""
        return self.key

    def add(self, **figures: int | float) -> None:
        """Add to the named figures (items written, pages, ...)."""
        for name, value in figures.items():
            self.figures[name] = self.figures.get(name, 0) + value

    def metadata(self) -> dict[str, Any]:
        """Figures worth plotting, as Dagster metadata (no tokens, no personal data)."""
        md: dict[str, Any] = {
            "mode": self.mode,
            "status": self.status,
            **self.figures,
            "api_calls": self.stats.calls,
            "api_retries": self.stats.retries,
            "api_not_modified": self.stats.not_modified,
            "rate_wait_seconds": round(self.stats.rate_wait_seconds, 3),
            "resumed_from_checkpoint": self.resumed,
            "seconds": round(self.seconds, 3),
        }
        if self.error:
            md["error_class"] = self.error_class
            md["error"] = self.error
        if self.retry_at:
            md["retry_at"] = dt.datetime.fromtimestamp(self.retry_at, dt.UTC).isoformat()
        return md


OutcomeT = TypeVar("OutcomeT", bound=SyncOutcome)
#: `error_class` of a sync skipped because a live run holds the partition's lease.
LEASE_HELD = "lease_held"


@dataclass(frozen=True)
class RunContext:
    """Who runs the sync and what happens when it fails."""

    owner: str
    run_id: str | None = None
    owner_is_dead: Callable[[str], bool] | None = None
    hand_over_on_failure: bool = False
    final_attempt: bool = False
    # A batch run's creation time: a partition that another run synced successfully after it
    # was requested is skipped, its work already done (two parked-work runs may list the
    # same athlete; a webhook run may beat a sweep to it). None: always sync (manual runs).
    requested_at: dt.datetime | None = None


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def refuse(
    cp: Checkpoints,
    outcome: OutcomeT,
    ctx: RunContext,
    *,
    error_class: str,
    message: str,
    record: bool = True,
) -> OutcomeT:
    """Fail without calling the provider (unknown user, needs reconnect)."""
    outcome.status, outcome.error_class, outcome.error = "failed", error_class, message
    if record:
        cp.fail(
            outcome.key,
            error_class=error_class,
            message=message,
            run_id=ctx.run_id,
            dead=not ctx.hand_over_on_failure,
        )
    return outcome


def run_sync(
    cp: Checkpoints,
    outcome: OutcomeT,
    ctx: RunContext,
    work: Callable[[Session], None],
    *,
    lease_ttl: dt.timedelta,
    on_auth_revoked: Callable[[str], None] | None = None,
    full_when_new: bool = True,
    backoff: Sequence[dt.timedelta] = (),
) -> OutcomeT:
    """Run `work` under the partition's lease and record its outcome.

    - RateLimitedError: parked until the reset (the parked sensor re-requests it)
    - SyncError: failed; handed over to a single-partition retry run when
      `hand_over_on_failure`, else a dead letter if permanent or on the final attempt
    - AuthRevokedError also calls `on_auth_revoked` (mark the account needs-reconnect)
    - with `backoff`, a non-permanent SyncError is parked for the next delay of the list
      (the n-th consecutive failure waits `backoff[n-1]`) and is a dead letter once the
      list is used up: the seed's 5/10/20/40-minute retries, without holding a run slot
    - any other exception is recorded as class "error" and never hides other partitions
    """
    started = time.monotonic()
    key = outcome.key
    try:
        state = cp.claim(key, ctx.owner, lease_ttl, owner_is_dead=ctx.owner_is_dead)
    except LeaseHeldError as exc:
        outcome.status, outcome.error_class, outcome.error = "skipped", LEASE_HELD, str(exc)
        return outcome
    released = False
    # An incremental sync does not stand in for a full one (deletions are found by full ones).
    done_at = state.last_full_sync_at if outcome.mode == "full" else state.last_success_at
    if (
        ctx.requested_at is not None
        and state.status == "succeeded"
        and done_at is not None
        and _utc(done_at) > _utc(ctx.requested_at)
    ):
        cp.release(key, ctx.owner)
        outcome.status = "skipped"
        outcome.error = (
            f"already synced ({outcome.mode}) at {_utc(done_at):%Y-%m-%d %H:%M:%S} UTC by "
            "another run, after this run was requested"
        )
        outcome.seconds = time.monotonic() - started
        return outcome
    try:
        if full_when_new and outcome.mode == "incremental" and state.last_full_sync_at is None:
            outcome.mode = "full"  # nothing to be incremental against yet
        session = cp.begin(key, outcome.mode, ctx.run_id)
        outcome.mode, outcome.resumed = session.mode, session.resumed
        work(session)
        cp.succeed(key, full=session.mode == "full", owner=ctx.owner)
        released = True
        outcome.status = "succeeded"
    except RateLimitedError as exc:
        outcome.status, outcome.error_class, outcome.error = "parked", exc.error_class, str(exc)
        outcome.retry_at = exc.retry_at
        cp.park(
            key,
            until=dt.datetime.fromtimestamp(exc.retry_at, dt.UTC),
            reason=str(exc),
            mode=outcome.mode,
        )
    except SyncError as exc:
        outcome.status, outcome.error_class, outcome.error = "failed", exc.error_class, str(exc)
        if isinstance(exc, AuthRevokedError) and on_auth_revoked is not None:
            on_auth_revoked(str(exc))
        failures = state.consecutive_failures or 0
        if backoff and not isinstance(exc, PermanentError):
            retry = failures < len(backoff)
            cp.fail(
                key,
                error_class=exc.error_class,
                message=str(exc),
                run_id=ctx.run_id,
                dead=not retry,
            )
            if retry:
                until = dt.datetime.now(dt.UTC) + backoff[failures]
                outcome.status, outcome.retry_at = "parked", until.timestamp()
                cp.park(
                    key,
                    until=until,
                    reason=f"retry {failures + 1}/{len(backoff)} after: {exc}",
                    mode=outcome.mode,
                )
            outcome.exception = exc
            return outcome
        cp.fail(
            key,
            error_class=exc.error_class,
            message=str(exc),
            run_id=ctx.run_id,
            hand_over_mode=outcome.mode if ctx.hand_over_on_failure else None,
            keep_session=not isinstance(exc, PermanentError),
            dead=not ctx.hand_over_on_failure
            and (isinstance(exc, PermanentError) or ctx.final_attempt),
        )
        outcome.exception = exc
    except Exception as exc:  # a bug or an unexpected payload: recorded, never hides others
        outcome.status, outcome.error_class = "failed", "error"
        outcome.error = f"{type(exc).__name__}: {exc}"
        cp.fail(
            key,
            error_class="error",
            message=outcome.error,
            run_id=ctx.run_id,
            hand_over_mode=outcome.mode if ctx.hand_over_on_failure else None,
            dead=not ctx.hand_over_on_failure and ctx.final_attempt,
        )
        outcome.exception = exc
    finally:
        if not released:
            cp.release(key, ctx.owner)
        outcome.seconds = time.monotonic() - started
    return outcome
