"""Turning a sync outcome into Dagster events, the same way for every source."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, Protocol

import dagster as dg

from sync_pipeline.core.checkpoints import DeadOwners
from sync_pipeline.core.errors import PermanentError, TransientError
from sync_pipeline.core.http import TransientHttpError
from sync_pipeline.core.models import SyncState
from sync_pipeline.core.priorities import SOURCE_TAG

#: Dagster's tag of how often its run retries may re-execute a failed run.
MAX_RETRIES_TAG = "dagster/max_retries"

RETRY_POLICY = dg.RetryPolicy(
    max_retries=3,
    delay=10,
    backoff=dg.Backoff.EXPONENTIAL,
    jitter=dg.Jitter.PLUS_MINUS,
)
"""Transient failures of a single-partition sync: 10 s, 20 s, 40 s (±jitter), then failed."""


#: Lease owners that are not Dagster runs (the webhook receiver's fast path): their liveness is
#: their process (the checkpoints check it on this host) and the lease's expiry, never the runs.
NON_RUN_OWNER_PREFIX = "process:"


def run_is_finished(instance: dg.DagsterInstance) -> DeadOwners:
    """A lease holder (a run id) is dead when its run has finished, failed or is unknown; a
    holder that is not a run (`NON_RUN_OWNER_PREFIX`) is never declared dead here. A direct
    run whose lease was taken over from its dead process is marked failed."""

    def dead(run_id: str) -> bool:
        if run_id.startswith(NON_RUN_OWNER_PREFIX):
            return False
        run = instance.get_run_by_id(run_id)
        return run is None or run.is_finished

    return DeadOwners(dead, lambda held, by: fail_dead_direct_run(instance, held, by))


def fail_dead_direct_run(instance: dg.DagsterInstance, held: SyncState, by: str) -> None:
    """Mark the run of a dead lease holder failed, with the reason, if it was a direct run.

    A direct run (`--direct`: run in the CLI's process, not launched from a code location)
    that was killed stays STARTED: no run monitoring watches its process. Runs launched from a
    code location are left to run monitoring, which fails and retries them.
    """
    run = instance.get_run_by_id(held.lease_owner) if held.lease_owner else None
    if run is None or run.is_finished or run.remote_job_origin is not None:
        return
    parts = (held.lease_process or "").split(" ")
    process = f"pid {parts[2]} on {parts[0]}" if len(parts) == 4 else "its process"
    instance.add_run_tags(run.run_id, {MAX_RETRIES_TAG: "0"})  # no code location to retry from
    instance.report_run_failed(
        run,
        f"The process of this run ({process}) ended before the run finished (killed?); run "
        f"{by} took over the lease of {held.source} partition {held.partition_key}.",
    )


def run_requested_at(context: dg.OpExecutionContext) -> dt.datetime | None:
    """When this run was created (queued): what a batch run's work is dated from."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    return record.create_timestamp if record is not None else None


def forget_partitions(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, source: str, keys: list[str]
) -> int:
    """Remove what Dagster remembers of partitions whose user disconnected.

    Deleting a dynamic partition keeps its materializations. Storages that support it wipe
    them; the OSS SQLite and PostgreSQL event logs do not, so the single-partition runs of
    those keys are deleted instead (with their event logs). Materializations logged by batch
    runs, which hold counts only, stay until those runs age out (see cleanup). Returns the
    number of runs deleted.
    """
    try:
        instance.wipe_asset_partitions(asset_key, keys)
        return 0
    except NotImplementedError:
        pass
    deleted = 0
    for key in keys:
        records = instance.get_run_records(
            dg.RunsFilter(tags={"dagster/partition": key, SOURCE_TAG: source})
        )
        for record in records:
            if record.dagster_run.is_finished:
                instance.delete_run(record.dagster_run.run_id)
                deleted += 1
    return deleted


class Outcome(Protocol):
    """What a source's sync function reports."""

    status: str
    error: str | None
    error_class: str | None
    exception: BaseException | None
    retry_at: float | None

    @property
    def partition_key(self) -> str: ...

    def metadata(self) -> dict[str, Any]: ...


def single_partition_events(
    asset_key: dg.AssetKey, outcome: Outcome, *, final_attempt: bool = False
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    """Events of a single-partition run; raises to fail or retry the run.

    - succeeded: the partition's materialization with the sync's figures
    - parked / skipped: an observation saying why, no materialization, the run succeeds
      (parked work is re-requested by the source's parked sensor after the reset)
    - permanent failure, or a transient one on the `final_attempt`: `Failure(allow_retries=
      False)` whose description is the reason and whose metadata are the sync's figures, so the
      failed partition shows why where a person looks first
    - transient failure before that: a retryable `Failure` with the same reason (the
      RetryPolicy backs off), or `RetryRequested` when the provider said when to come back
    """
    md = outcome.metadata()
    if outcome.status == "succeeded":
        yield dg.MaterializeResult(metadata=md)
        return
    if outcome.status in ("parked", "skipped"):
        yield dg.AssetObservation(asset_key=asset_key, partition=outcome.partition_key, metadata=md)
        return
    exc = outcome.exception
    reason = f"{outcome.error_class or 'error'}: {outcome.error or 'sync failed'}"
    transient = isinstance(exc, TransientError) or (
        exc is not None and not isinstance(exc, PermanentError)
    )
    if transient and not final_attempt:
        if isinstance(exc, TransientHttpError) and exc.retry_after is not None:
            # The provider said when to come back: wait that long, not the policy's backoff.
            raise dg.RetryRequested(
                max_retries=RETRY_POLICY.max_retries, seconds_to_wait=min(exc.retry_after, 300.0)
            ) from exc
        raise dg.Failure(description=f"{reason} (will be retried)", metadata=md) from exc
    if transient:
        reason += f" (retries exhausted; {RETRY_POLICY.max_retries} retries)"
    raise dg.Failure(description=reason, metadata=md, allow_retries=False) from exc


def batch_events(
    asset_key: dg.AssetKey, outcome: Outcome
) -> Iterator[dg.AssetMaterialization | dg.AssetObservation]:
    """Events a batch run logs for one partition: a materialization on success, else an
    observation with the reason (failures are handed over to single-partition runs)."""
    md = outcome.metadata()
    if outcome.status == "succeeded":
        yield dg.AssetMaterialization(
            asset_key=asset_key, partition=outcome.partition_key, metadata=md
        )
    else:
        yield dg.AssetObservation(asset_key=asset_key, partition=outcome.partition_key, metadata=md)
