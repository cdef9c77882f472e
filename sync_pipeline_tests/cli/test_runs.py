"""`sync-pipeline runs show|list` (cli/runs.py) on real runs executed in-process in the CLI's
Dagster home: a Promidata supplier sync, a failed one, a sweep."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sync_pipeline.core import priorities
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.promidata.assets import promidata_images, promidata_products
from sync_pipeline.defs.promidata.resources import PromidataResource
from sync_pipeline.defs.promidata.source import PROMIDATA, promidata_defs
from sync_pipeline.defs.promidata.storage import PromidataImageStorage
from sync_pipeline.sandbox.promidata import PromidataSandboxState
from sync_pipeline_tests.cli.conftest import CliEnv, error_of, invoke

ASSETS = [promidata_defs.asset, promidata_products, promidata_images]
TAGS = priorities.run_tags(priorities.MANUAL, "promidata", "cli")


@pytest.fixture
def instance(cli_env: CliEnv) -> Iterator[dg.DagsterInstance]:
    """The instance of the CLI's Dagster home, with the suppliers' partitions."""
    with dg.DagsterInstance.get() as inst:
        inst.add_dynamic_partitions("promidata_suppliers", ["A23", "B7", "NOPE"])
        yield inst


@pytest.fixture
def resources(
    promidata_env: PromidataSandboxState, cli_env: CliEnv, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """Promidata resources pointed at the sandbox; suppliers A23 and B7 configured."""
    invoke("suppliers", "add", "A23", "B7")
    api = PromidataResource(
        app_db=AppDatabaseResource(url=cli_env.db_url, token_key=cli_env.token_key),
        base_url=os.environ["PROMIDATA_BASE_URL"],
    )
    yield {
        "app_db": api.app_db,
        "promidata": api,
        "promidata_image_storage": PromidataImageStorage(directory=str(tmp_path / "images")),
    }
    api.close()


def show(run_id: str) -> dict[str, Any]:
    """`runs show RUN_ID --json`."""
    report: dict[str, Any] = json.loads(invoke("runs", "show", run_id, "--json").stdout)
    return report


def test_show_a_succeeded_supplier_sync(
    instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    result = dg.materialize(
        ASSETS, resources=resources, partition_key="A23", instance=instance, tags=TAGS
    )

    report = show(result.run_id)

    assert {k: report[k] for k in ("job", "status", "source", "partition", "trigger")} == {
        "job": "__ephemeral_asset_job__",
        "status": "success",
        "source": "promidata",
        "partition": "A23",
        "trigger": "cli",
    }
    assert report["created_at"] <= report["started_at"] <= report["ended_at"]
    assert report["duration_seconds"] > 0
    assert (report["retry_number"], report["parent_run_id"], report["failures"]) == (0, None, [])
    assets = report["result"]["assets"]
    assert assets["promidata_catalog[A23]"]["families_new"] == 4
    assert assets["promidata_products[A23]"]["families_changed"] == 4
    assert [(p["stage"], p["state"], p["percent"]) for p in report["progress"]] == [
        ("catalog", "completed", 100.0),
        ("products", "completed", 100.0),
        ("images", "completed", 100.0),
    ]
    products = report["progress"][1]
    assert products["done"] == products["total"] == 4
    text = invoke("runs", "show", result.run_id).stdout
    assert text.startswith(f"run {result.run_id}: success\n")
    assert "  job __ephemeral_asset_job__, promidata partition A23, trigger cli, priority 10\n" in (
        text
    )
    assert "  progress A23 products: completed done 4/4 (100.0%) families_changed=4, " in text


def test_show_a_failed_run_gives_the_reason(
    instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    result = dg.materialize(
        ASSETS,
        resources=resources,
        partition_key="NOPE",
        instance=instance,
        tags=TAGS,
        raise_on_error=False,
    )
    assert not result.success

    report = show(result.run_id)

    assert report["status"] == "failure" and report["partition"] == "NOPE"
    [failure] = report["failures"]
    assert failure["step"] == "promidata_catalog"
    assert failure["reason"].startswith("not_configured: Supplier 'NOPE' is not configured")
    text = invoke("runs", "show", result.run_id).stdout
    assert "  failed in promidata_catalog: not_configured: Supplier 'NOPE'" in text
    listed = json.loads(invoke("runs", "list", "--status", "failed", "--json").stdout)
    assert [r["run_id"] for r in listed] == [result.run_id]


def test_show_a_sweep_gives_its_per_partition_counts(
    instance: dg.DagsterInstance, resources: dict[str, Any]
) -> None:
    result = promidata_defs.sweep_job.execute_in_process(
        run_config=PROMIDATA.sweep_run_config(keys=["A23", "B7"]),
        instance=instance,
        resources={"promidata": resources["promidata"]},
        tags=priorities.run_tags(priorities.BATCH, "promidata", "schedule_incremental"),
    )
    assert result.success

    report = show(result.run_id)

    assert report["job"] == "promidata_sweep_job" and report["partition"] is None
    sweep = report["result"]["outputs"]["promidata_sweep"]
    assert (sweep["suppliers"], sweep["suppliers_succeeded"]) == (2, 2)
    assert report["result"]["assets"]["promidata_catalog[B7]"]["families_new"] == 2
    assert [(p["partition"], p["stage"]) for p in report["progress"]] == [
        ("A23", "catalog"),
        ("B7", "catalog"),
    ]
    rows = json.loads(invoke("runs", "list", "--source", "promidata", "--json").stdout)
    assert [(r["run_id"], r["status"]) for r in rows] == [(result.run_id, "success")]


def test_show_an_unknown_run_is_an_error(cli_env: CliEnv) -> None:
    result = invoke("runs", "show", "0000-not-a-run", exit_code=1)

    assert error_of(result).startswith("Error: no run 0000-not-a-run in the Dagster instance at ")
    assert invoke("runs", "list").stdout == "no runs\n"


def test_show_counts_a_steps_retries_and_why(
    promidata_env: PromidataSandboxState,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
) -> None:
    # One 503 with no in-process retry: the catalog step fails and its RetryPolicy retries it.
    api = PromidataResource(
        app_db=resources["app_db"],
        base_url=os.environ["PROMIDATA_BASE_URL"],
        transient_retries=0,
    )
    promidata_env.faults.inject("5xx", path_contains="/A23/Import/Import.txt")
    result = dg.materialize(
        ASSETS, resources={**resources, "promidata": api}, partition_key="A23", instance=instance
    )
    assert result.success

    report = show(result.run_id)

    retried = report["step_retries"]["promidata_catalog"]
    assert retried["retries"] == 1
    assert retried["last_reason"].startswith("transient: ") and "503" in retried["last_reason"]
    assert retried["last_reason"].endswith("(will be retried)")
    assert report["failures"] == []
    # No source tag (not launched by the project): known by the assets it materialized.
    assert report["source"] == "promidata" and report["trigger"] is None
    assert [p["state"] for p in report["progress"]] == ["completed"] * 3
    text = invoke("runs", "show", result.run_id).stdout
    assert "  promidata_catalog retried 1 time(s), last: transient: " in text
