"""Promidata as a source: suppliers are partitions, the catalog stage is the main asset and
the products and images stages run after it in the same single-partition job."""

from typing import Any

from sync_pipeline.core.health import ItemDeadLetters
from sync_pipeline.core.source import PartitionSet, SyncSource, source_defs
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.defs.promidata.assets import promidata_images, promidata_products
from sync_pipeline.defs.promidata.partitions import promidata_suppliers
from sync_pipeline.defs.promidata.resources import PromidataResource, promidata_resource
from sync_pipeline.defs.promidata.sync import (
    dead_letter_rows,
    list_suppliers,
    redrive_dead_letter,
    run_progress,
    sync_catalog,
)


def configured(db_url: str) -> list[str]:
    """Codes of the configured suppliers."""
    return [s.code for s in list_suppliers(db_url)]


def sync_supplier_catalog(
    client: PromidataResource, key: str, ctx: RunContext, options: Any
) -> SyncOutcome:
    """The catalog stage of one supplier (the later stages are their own assets)."""
    return sync_catalog(client, client.app_db.url, key, ctx)


PROMIDATA = SyncSource(
    name="promidata",
    title="Promidata",
    entity="catalog",
    noun="supplier",
    description="Import.txt read, families diffed by hash: new / changed / unchanged / removed.",
    group="promidata",
    kinds=frozenset({"promidata"}),
    partitions=PartitionSet(promidata_suppliers, configured),
    sync=sync_supplier_catalog,
    sweep_keys=configured,
    needs_reconnect=lambda db_url: 0,
    resource=promidata_resource,
    queue_description="Promidata supplier runs: queued, running, failed, dead letters.",
    pool="promidata_catalog",
    downstream=(promidata_products, promidata_images),
    # Dead families, images and Import.txt lines, next to dead supplier catalog syncs.
    item_dead_letters=ItemDeadLetters(rows=dead_letter_rows, redrive=redrive_dead_letter),
    run_progress=run_progress,
)
promidata_defs = source_defs(PROMIDATA)
defs = promidata_defs.definitions()
