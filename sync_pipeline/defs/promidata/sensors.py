"""Promidata automation: Import.txt polling and the nightly sync of every supplier.

Partitions follow the configured suppliers through the shared `partitions_sensor` (the
source's partition set), which also requests each new supplier's first sync."""

import dagster as dg

from sync_pipeline.core import priorities
from sync_pipeline.core.errors import SyncError
from sync_pipeline.core.http import CallStats
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.promidata.assets import SOURCE
from sync_pipeline.defs.promidata.partitions import promidata_suppliers
from sync_pipeline.defs.promidata.resources import PromidataResource
from sync_pipeline.defs.promidata.source import promidata_defs
from sync_pipeline.defs.promidata.sync import catalogs_ahead, list_suppliers

POLL_INTERVAL_SECONDS = 300
#: The single-supplier job of the source declaration: catalog, then products and images.
promidata_supplier_sync = promidata_defs.single_job


@dg.sensor(
    job=promidata_supplier_sync,
    minimum_interval_seconds=POLL_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls each supplier's Import.txt (conditional GET); syncs changed catalogs.",
)
def promidata_import_sensor(
    context: dg.SensorEvaluationContext,
    app_db: AppDatabaseResource,
    promidata: PromidataResource,
) -> dg.SensorResult | dg.SkipReason:
    """One conditional GET per supplier; a 200 (new ETag) requests that supplier's sync, and
    so does a catalog a sweep updated whose families or images wait for the later stages."""
    known = set(context.instance.get_dynamic_partitions(promidata_suppliers.name or ""))
    stats = CallStats()
    requests = []
    errors = []
    for supplier in list_suppliers(app_db.url):
        if supplier.code not in known:
            continue
        try:
            fetched = promidata.import_txt(supplier.code, supplier.import_etag, stats)
        except SyncError as exc:
            errors.append(f"{supplier.code}: {exc}")
            continue
        if fetched.unchanged:
            continue
        requests.append(
            dg.RunRequest(
                partition_key=supplier.code,
                run_key=f"promidata-import-{supplier.code}-{fetched.etag or 'none'}",
                tags=priorities.run_tags(priorities.BATCH, SOURCE, "import_changed"),
            )
        )
    # A sweep (batch run) syncs catalogs only: its suppliers' new families and images are
    # fetched by a supplier run requested here once per sweep, not at the next nightly.
    requested = {r.partition_key for r in requests}
    for code, run_id in sorted(catalogs_ahead(app_db.url).items()):
        run = context.instance.get_run_by_id(run_id)
        if code in requested or code not in known or run is None or not run.is_finished:
            continue
        if run.job_name != promidata_defs.sweep_job.name:
            continue
        requests.append(
            dg.RunRequest(
                partition_key=code,
                run_key=f"promidata-after-sweep-{code}-{run_id}",
                tags=priorities.run_tags(priorities.BATCH, SOURCE, "after_sweep"),
            )
        )
    for error in errors:
        context.log.warning(f"Import.txt poll failed: {error}")
    if not requests:
        return dg.SkipReason(
            f"no changed catalog ({stats.not_modified} unchanged, {len(errors)} errors)"
        )
    return dg.SensorResult(run_requests=requests)


@dg.schedule(
    job=promidata_supplier_sync,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly: sync every configured supplier (unchanged ones cost one 304).",
)
def promidata_nightly(
    context: dg.ScheduleEvaluationContext, app_db: AppDatabaseResource
) -> list[dg.RunRequest] | dg.SkipReason:
    """One run per supplier partition at batch priority."""
    known = set(context.instance.get_dynamic_partitions(promidata_suppliers.name or ""))
    codes = [s.code for s in list_suppliers(app_db.url) if s.code in known]
    if not codes:
        return dg.SkipReason("no Promidata suppliers configured")
    stamp = context.scheduled_execution_time.strftime("%Y%m%d")
    return [
        dg.RunRequest(
            partition_key=code,
            run_key=f"promidata-nightly-{stamp}-{code}",
            tags=priorities.run_tags(priorities.BATCH, SOURCE, "schedule"),
        )
        for code in codes
    ]


defs = dg.Definitions(sensors=[promidata_import_sensor], schedules=[promidata_nightly])
