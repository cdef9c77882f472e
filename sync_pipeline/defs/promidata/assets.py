"""Promidata: three assets per supplier (catalog → products → images), their job and check.

The stage functions are in `sync.py`; the assets only bind resources, report progress to the
run's log and turn outcomes into events (`core.dagster_events.single_partition_events`).
"""

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from sync_pipeline.core import priorities
from sync_pipeline.core.dagster_events import (
    RETRY_POLICY,
    run_is_finished,
    single_partition_events,
)
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.promidata.partitions import promidata_suppliers
from sync_pipeline.defs.promidata.resources import PromidataResource
from sync_pipeline.defs.promidata.storage import PromidataImageStorage
from sync_pipeline.defs.promidata.sync import (
    Limits,
    ProgressFn,
    failures,
    sync_catalog,
    sync_images,
    sync_products,
)

SOURCE = "promidata"
GROUP = "promidata"
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


@dg.asset(
    partitions_def=promidata_suppliers,
    group_name=GROUP,
    kinds={"promidata"},
    pool="promidata_catalog",
    retry_policy=RETRY_POLICY,
    output_required=False,
    metadata={"source": SOURCE},
)
def promidata_catalog(
    context: dg.AssetExecutionContext, app_db: AppDatabaseResource, promidata: PromidataResource
) -> Events:
    """Import.txt read, families diffed by hash: new / changed / unchanged / removed."""
    app_db.check()
    outcome = sync_catalog(
        promidata,
        app_db.url,
        context.partition_key,
        run_context(context),
        on_progress=progress_logger(context),
    )
    yield from single_partition_events(context.asset_key, outcome)


@dg.asset(
    partitions_def=promidata_suppliers,
    group_name=GROUP,
    kinds={"promidata"},
    deps=[promidata_catalog],
    pool="promidata_products",
    retry_policy=RETRY_POLICY,
    output_required=False,
    metadata={"source": SOURCE},
)
def promidata_products(
    context: dg.AssetExecutionContext, app_db: AppDatabaseResource, promidata: PromidataResource
) -> Events:
    """Changed families fetched and stored: product, variants, prices, texts, category."""
    app_db.check()
    outcome = sync_products(
        promidata,
        app_db.url,
        context.partition_key,
        run_context(context),
        limits=Limits.of(promidata),
        on_progress=progress_logger(context),
    )
    yield from single_partition_events(context.asset_key, outcome)


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
    app_db: AppDatabaseResource,
    promidata: PromidataResource,
    promidata_image_storage: PromidataImageStorage,
) -> Events:
    """Images downloaded, deduplicated by content hash, stored and linked to their variants."""
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
    yield from single_partition_events(context.asset_key, outcome)


promidata_supplier_sync = dg.define_asset_job(
    "promidata_supplier_sync",
    selection=[promidata_catalog, promidata_products, promidata_images],
    description="Sync one supplier: catalog, changed families, new images (manual priority).",
    executor_def=dg.in_process_executor,
    tags={
        **priorities.job_tags(priorities.MANUAL, SOURCE),
        "dagster/max_runtime": RUN_MAX_RUNTIME,
    },
)


@dg.asset_check(
    asset=promidata_products, description="Fails while families or images are dead letters."
)
def promidata_no_dead_letters(app_db: AppDatabaseResource) -> dg.AssetCheckResult:
    """Dead family/image failures (bad data, retries exhausted) waiting for a redrive."""
    dead = failures(app_db.url, dead_only=True)
    by_kind: dict[str, int] = {}
    for f in dead:
        by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
    return dg.AssetCheckResult(
        passed=not dead,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "dead_letters": len(dead),
            **{f"dead_{k}s": v for k, v in sorted(by_kind.items())},
            "latest": [f"{f.supplier}/{f.kind}/{f.item}: {f.reason[:200]}" for f in dead[:5]],
        },
    )
