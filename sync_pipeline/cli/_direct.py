"""Running a sync in this process (`--direct`): waiting for a lease, reporting the result."""

from __future__ import annotations

import json
import time
from typing import Any

import click
import dagster as dg

from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import LEASE_HELD


def wait_for_lease(
    app_db: AppDatabaseResource, source: str, key: str, instance: dg.DagsterInstance, seconds: float
) -> None:
    """Wait up to `seconds` while a live run holds the partition's lease (0: do not wait)."""
    from sync_pipeline.core.dagster_events import run_is_finished

    checkpoints = app_db.checkpoints(source)
    deadline = time.monotonic() + seconds
    announced = False
    while (held := checkpoints.live_lease(key, owner_is_dead=run_is_finished(instance))) and (
        left := deadline - time.monotonic()
    ) > 0:
        if not announced:
            click.echo(
                f"waiting up to {seconds:.0f} s for run {held.lease_owner}, which is syncing "
                f"{source} partition {key}"
            )
            announced = True
        time.sleep(min(0.5, left))  # polling the lease's holder, bounded by the deadline


def report_direct(result: Any) -> None:
    """Print what a direct run did; fail unless every partition it was given was synced."""
    not_synced: list[str] = []
    for event in result.all_events:
        if event.event_type_value in ("ASSET_MATERIALIZATION", "ASSET_OBSERVATION"):
            data = event.event_specific_data
            mat = getattr(data, "materialization", None) or getattr(data, "asset_observation", None)
            if mat is None:
                continue
            md = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
            name = mat.asset_key.to_user_string() if hasattr(mat, "asset_key") else "asset"
            click.echo(f"{name} {mat.partition}: {json.dumps(md, default=str)}")
            if md.get("error_class") == LEASE_HELD:
                not_synced.append(f"{mat.partition}: {str(md.get('error')).rstrip('.')}")
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        msg = failure.event_specific_data.error.message if failure else "run failed"
        raise click.ClickException(f"sync failed (run {result.run_id}): {msg.strip()}")
    if not_synced:
        raise click.ClickException(
            f"not synced (run {result.run_id}): "
            + "; ".join(not_synced)
            + ". Run it again when that run has finished, or add --wait SECONDS."
        )
    click.echo(f"run {result.run_id} succeeded")
