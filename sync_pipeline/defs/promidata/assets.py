"""Promidata's later stages as assets: products and images after the catalog.

The catalog stage is the main asset of the source declaration (`source.py`), whose
single-partition job `promidata_supplier_sync` runs these after it, each its own step in its
own pool. The stage functions are in `sync.py`; the assets only bind resources, report
progress to the run's log and turn outcomes into events.
"""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from sync_pipeline.core.dagster_events import (
    RETRY_POLICY,
    run_is_finished,
    single_partition_events,
)
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.defs.promidata.partitions import promidata_suppliers
from sync_pipeline.defs.promidata.resources import PromidataResource
from sync_pipeline.defs.promidata.storage import PromidataImageStorage
from sync_pipeline.defs.promidata.sync import (
    Limits,
    ProgressFn,
    sync_images,
    sync_products,
)

SOURCE = "promidata"
GROUP = "promidata"
#: The catalog stage: the main asset of the Promidata source declaration (source.py).
CATALOG = dg.AssetKey("promidata_catalog")
PROGRESS_LOG_SECONDS = 5.0
RUN_MAX_RUNTIME = 4 * 3600
Events = Iterator[dg.MaterializeResult | dg.AssetObservation]


def progress_logger(context: dg.AssetExecutionContext) -> ProgressFn:
    """Log a stage's progress to the run (every few seconds, and at its end)."""
    last = [0.0]

    def log(p: dict[str, Any]) -> None:
        now = time.monotonic()
        if p.get("state") == "active" and now - last[0] < PROGRESS_LOG_SECONDS:
            return
        last[0] = now
        figures = ", ".join(
            f"{k}={v}"
            for k, v in p.items()
            if k not in {"supplier", "stage", "step", "done", "total", "percent", "state"}
        )
        context.log.info(
            f"{p['stage']} {p['supplier']}: {p['step']} {p['done']}/{p['total']} "
            f"({p['percent']}%) {p.get('state', '')} {figures}"
        )

    return log


def run_context(context: dg.AssetExecutionContext) -> RunContext:
    """The run as a sync owner (its lease and slots are taken over once the run is dead)."""
    return RunContext(
        owner=context.run.run_id,
        run_id=context.run.run_id,
        owner_is_dead=run_is_finished(context.instance),
        final_attempt=context.retry_number >= (RETRY_POLICY.max_retries or 0),
    )


def stage_events(context: dg.AssetExecutionContext, outcome: SyncOutcome) -> Events:
    """A stage's outcome as its partition's events (raises to retry or fail the step)."""
    final = run_context(context).final_attempt
    return single_partition_events(context.asset_key, outcome, final_attempt=final)


@dg.asset(
    partitions_def=promidata_suppliers,
    group_name=GROUP,
    kinds={"promidata"},
    deps=[CATALOG],
    pool="promidata_products",
    retry_policy=RETRY_POLICY,
    output_required=False,
    metadata={"source": SOURCE},
)
def promidata_products(context: dg.AssetExecutionContext, promidata: PromidataResource) -> Events:
    """Changed families fetched and stored: product, variants, prices, texts, category."""
    app_db = promidata.app_db
    app_db.check()
    outcome = sync_products(
        promidata,
        app_db.url,
        context.partition_key,
        run_context(context),
        limits=Limits.of(promidata),
        on_progress=progress_logger(context),
    )
    yield from stage_events(context, outcome)


@dg.asset(
    partitions_def=promidata_suppliers,
    group_name=GROUP,
    kinds={"promidata"},
    deps=[promidata_products],
    pool="promidata_images",
    retry_policy=RETRY_POLICY,
    output_required=False,
    metadata={"source": SOURCE},
)
def promidata_images(
    context: dg.AssetExecutionContext,
    promidata: PromidataResource,
    promidata_image_storage: PromidataImageStorage,
) -> Events:
    """Images downloaded, deduplicated by content hash, stored and linked to their variants."""
    app_db = promidata.app_db
    app_db.check()
    outcome = sync_images(
        promidata,
        promidata_image_storage,
        app_db.url,
        context.partition_key,
        run_context(context),
        limits=Limits.of(promidata),
        on_progress=progress_logger(context),
    )
    yield from stage_events(context, outcome)


# The dead families and images are checked by the source's `no_dead_letters` check on
# `promidata_catalog` (core/source.py, `SyncSource.item_dead_letters`).
defs = dg.Definitions(assets=[promidata_products, promidata_images])
