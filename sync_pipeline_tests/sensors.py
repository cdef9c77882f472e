"""Test helpers for the shared sensors: their resources, a tick, applying partition requests."""

from __future__ import annotations

from typing import Any

import dagster as dg

from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.sources import SOURCES


def sensor_resources(app_db: AppDatabaseResource, **clients: Any) -> dict[str, Any]:
    """What the shared sensors and a source's sensors read: the app database (and clients)."""
    return {"app_db": app_db, **clients}


def tick(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    app_db: AppDatabaseResource,
    *,
    cursor: str | None = None,
    **clients: Any,
) -> Any:
    """One evaluation of a sensor, as the daemon would run it."""
    with dg.build_sensor_context(
        instance=instance, resources=sensor_resources(app_db, **clients), cursor=cursor
    ) as ctx:
        return sensor(ctx)


def apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """Apply a sensor's partition requests the way the daemon does."""
    for req in result.dynamic_partitions_requests or []:
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        else:
            for key in req.partition_keys:
                instance.delete_dynamic_partition(req.partitions_def_name, key)


def of_source(result: Any, source: str) -> list[Any]:
    """The run requests or asset events of one source in a shared sensor's result."""
    if not isinstance(result, dg.SensorResult):
        return []
    runs = [r for r in result.run_requests or [] if r.tags.get("sync_pipeline/source") == source]
    events = [
        e for e in result.asset_events if e.asset_key.to_user_string().startswith(f"{source}_")
    ]
    return runs or events


def of_group(result: Any, group: str) -> list[dg.RunRequest]:
    """The run requests of every source of a group (e.g. the outreach job types)."""
    names = {n for n, s in SOURCES.items() if s.group == group}
    if not isinstance(result, dg.SensorResult):
        return []
    return [r for r in result.run_requests or [] if r.tags.get("sync_pipeline/source") in names]
