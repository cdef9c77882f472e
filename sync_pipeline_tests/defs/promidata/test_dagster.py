"""Promidata's Dagster layer: the pooled stage assets, sensors and the nightly schedule."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.automation.sensors import partitions_sensor
from sync_pipeline.defs.promidata.assets import promidata_images, promidata_products
from sync_pipeline.defs.promidata.sensors import promidata_import_sensor, promidata_nightly
from sync_pipeline.defs.promidata.source import PROMIDATA, promidata_defs
from sync_pipeline.defs.promidata.sync import add_supplier, remove_supplier
from sync_pipeline_tests.defs.promidata.conftest import Promidata

ASSETS = [promidata_defs.asset, promidata_products, promidata_images]
POOLS = {"concurrency": {"pools": {"default_limit": 1, "granularity": "op"}}}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A test instance with the project's pool settings and the demo suppliers' partitions."""
    with dg.instance_for_test(overrides=POOLS) as inst:
        inst.add_dynamic_partitions("promidata_suppliers", ["A23", "A360", "D170"])
        yield inst


def resources(box: Promidata) -> dict[str, Any]:
    """Resources of the assets, pointed at the sandbox."""
    return {
        "app_db": box.api.app_db,
        "promidata": box.api,
        "promidata_image_storage": box.storage,
    }


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The materialization metadata of one asset in the run."""
    [mat] = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_materializing_the_three_stages_syncs_a_supplier(
    promidata: Promidata, instance: dg.DagsterInstance
) -> None:
    result = dg.materialize(
        ASSETS, resources=resources(promidata), partition_key="A23", instance=instance
    )
    assert result.success
    catalog = metadata(result, "promidata_catalog")
    assert catalog["families_new"] == 6 and catalog["families_removed"] == 0
    products = metadata(result, "promidata_products")
    assert products["families_changed"] == 6 and products["families_failed"] == 0
    images = metadata(result, "promidata_images")
    assert images["images_uploaded"] == len(promidata.expected("A23")["images"])
    assert images["status"] == "succeeded"
    promidata.requests()
    again = dg.materialize(
        ASSETS, resources=resources(promidata), partition_key="A23", instance=instance
    )
    assert metadata(again, "promidata_catalog")["api_not_modified"] == 1
    assert metadata(again, "promidata_products")["families_changed"] == 0
    assert promidata.requests() == {"import_304": 1, "import_304:A23": 1}


def test_the_assets_declare_their_pools() -> None:
    assert [a.op.pool for a in ASSETS] == [
        "promidata_catalog",
        "promidata_products",
        "promidata_images",
    ]


def test_the_declaration_builds_the_single_supplier_job() -> None:
    job = promidata_defs.single_job
    assert job.name == PROMIDATA.single_job_name == "promidata_supplier_sync"
    defs = dg.Definitions(
        assets=[*ASSETS],
        jobs=[job],
        resources={"promidata": object(), "promidata_image_storage": object()},
    )
    resolved = defs.resolve_job_def("promidata_supplier_sync")
    assert {key.to_user_string() for key in resolved.asset_layer.selected_asset_keys} == {
        "promidata_catalog",
        "promidata_products",
        "promidata_images",
    }


def test_dead_families_and_images_fail_the_dead_letter_check(
    promidata: Promidata, instance: dg.DagsterInstance
) -> None:
    sku = sorted(promidata.expected("D170")["families"])[0]
    promidata.control(f"/suppliers/D170/families/{sku}/poison", {"kind": "missing_field"})
    sha = sorted(promidata.expected("D170")["images"])[-1]
    promidata.fault("not_image", sha)
    result = dg.materialize(
        ASSETS, resources=resources(promidata), partition_key="D170", instance=instance
    )
    assert result.success  # one bad family or image does not fail the supplier
    assert metadata(result, "promidata_products")["families_failed"] == 1
    assert metadata(result, "promidata_images")["images_failed"] == 1
    # The check as health_sensor and the UI evaluate it: after the stages.
    checked = dg.materialize(
        [*ASSETS, promidata_defs.check],
        selection=dg.AssetSelection.checks(promidata_defs.check),
        resources=resources(promidata),
        instance=instance,
    )
    [check] = checked.get_asset_check_evaluations()
    assert (check.asset_key, check.check_name) == (PROMIDATA.asset_key, "no_dead_letters")
    assert not check.passed
    md = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert {k: md[k] for k in md if k.startswith("dead_")} == {
        "dead_letters": 2,
        "dead_partitions": 0,
        "dead_items": 2,
        "dead_family": 1,
        "dead_image": 1,
    }
    table = str(md["list"])
    assert f"| D170/family/{sku} | bad_data | 1 |" in table
    assert f"| D170/image/{sha} | bad_image | 1 |" in table
    assert (check.description or "").startswith("0 partition(s) and 2 item(s) failed for good")


def test_partitions_sensor_keeps_supplier_partitions_equal_to_configured(
    promidata: Promidata, instance: dg.DagsterInstance
) -> None:
    add_supplier(promidata.db_url, "NEW1")
    remove_supplier(promidata.db_url, "D170")
    app_db = AppDatabaseResource(url=promidata.db_url, token_key=generate_key())
    with dg.build_sensor_context(instance=instance, resources={"app_db": app_db}) as ctx:
        result = partitions_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    requests = [
        r
        for r in result.dynamic_partitions_requests or []
        if r.partitions_def_name == "promidata_suppliers"
    ]
    [delete, add] = requests
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert list(add.partition_keys) == ["NEW1"]
    assert isinstance(delete, dg.DeleteDynamicPartitionsRequest)
    assert list(delete.partition_keys) == ["D170"]
    # the new supplier's first sync: the single-supplier job (all three stages)
    [first] = [r for r in result.run_requests or [] if r.partition_key == "NEW1"]
    assert first.job_name == "promidata_supplier_sync"


def test_import_sensor_requests_only_changed_suppliers(
    promidata: Promidata, instance: dg.DagsterInstance
) -> None:
    res = resources(promidata)
    promidata.sync("A23")
    promidata.sync("A360")
    promidata.control("/suppliers/A360/families/edit", {"count": 1})
    promidata.requests()
    with dg.build_sensor_context(
        instance=instance, resources={"app_db": res["app_db"], "promidata": res["promidata"]}
    ) as ctx:
        result = promidata_import_sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    # A360 changed; D170 was never synced (no ETag yet); A23 answered 304
    assert sorted(r.partition_key or "" for r in result.run_requests or []) == ["A360", "D170"]
    stats = promidata.requests()
    assert stats["import_304:A23"] == 1 and stats["import:A360"] == 1


def test_nightly_schedule_requests_every_supplier(
    promidata: Promidata, instance: dg.DagsterInstance
) -> None:
    app_db = AppDatabaseResource(url=promidata.db_url, token_key=generate_key())
    with dg.build_schedule_context(
        instance=instance,
        resources={"app_db": app_db},
        scheduled_execution_time=dt.datetime(2026, 12, 3, 2, tzinfo=dt.UTC),
    ) as ctx:
        requests = promidata_nightly(ctx)
    assert isinstance(requests, list)
    assert sorted(r.partition_key or "" for r in requests) == ["A23", "A360", "D170"]
    assert all(r.tags["dagster/priority"] == "0" for r in requests)
    assert requests[0].run_key == "promidata-nightly-20261203-A23"


def test_import_sensor_runs_the_later_stages_after_a_sweep(
    promidata: Promidata, instance: dg.DagsterInstance
) -> None:
    res = resources(promidata)
    promidata.sync("A360")
    promidata.sync("D170")
    # A sweep (batch run) syncs the catalog stage only: A23's families wait in the app DB.
    sweep = promidata_defs.sweep_job.execute_in_process(
        run_config=PROMIDATA.sweep_run_config(keys=["A23", "A360"]),
        instance=instance,
        resources={"promidata": res["promidata"]},
    )
    assert sweep.success

    def evaluate() -> list[dg.RunRequest]:
        with dg.build_sensor_context(
            instance=instance,
            resources={"app_db": res["app_db"], "promidata": res["promidata"]},
        ) as ctx:
            result = promidata_import_sensor(ctx)
        return list(result.run_requests or []) if isinstance(result, dg.SensorResult) else []

    # Every Import.txt answers 304; A360's sweep found nothing new; A23 is behind its catalog.
    [request] = evaluate()
    assert request.partition_key == "A23"
    assert request.run_key == f"promidata-after-sweep-A23-{sweep.run_id}"
    assert request.tags["sync_pipeline/trigger"] == "after_sweep"
    result = dg.materialize(ASSETS, resources=res, partition_key="A23", instance=instance)
    assert metadata(result, "promidata_products")["families_changed"] == 6
    assert evaluate() == []  # caught up
