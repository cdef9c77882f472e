"""dagster.yaml and its PostgreSQL variant agree, and the queue settings the design relies on
are there."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from sync_pipeline.core import priorities
from sync_pipeline_tests.conftest import drop_database

ROOT = Path(__file__).resolve().parents[1]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return data


def test_postgres_variant_is_dagster_yaml_plus_storage() -> None:
    pg = load("dagster.postgres.yaml")
    assert pg.pop("storage") == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert pg == load("dagster.yaml")


def limits() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = load("dagster.yaml")["concurrency"]["runs"][
        "tag_concurrency_limits"
    ]
    return found


@pytest.mark.parametrize("source", ["strava", "github", "youtube", "x", "instagram", "promidata"])
def test_every_source_is_capped_below_the_run_slots(source: str) -> None:
    slots = load("dagster.yaml")["concurrency"]["runs"]["max_concurrent_runs"]
    [cap] = [
        x["limit"] for x in limits() if x["key"] == priorities.SOURCE_TAG and x["value"] == source
    ]
    assert 0 < cap < slots


def test_interactive_lane_leaves_a_slot_for_batch_work() -> None:
    slots = load("dagster.yaml")["concurrency"]["runs"]["max_concurrent_runs"]
    [cap] = [
        x["limit"]
        for x in limits()
        if x["key"] == priorities.LANE_TAG and x["value"] == "interactive"
    ]
    assert cap < slots


@pytest.mark.parametrize("source", ["strava", "github", "youtube", "x", "instagram", "promidata"])
def test_a_sources_interactive_runs_leave_its_sweep_a_slot(source: str) -> None:
    [source_cap] = [
        x["limit"] for x in limits() if x["key"] == priorities.SOURCE_TAG and x["value"] == source
    ]
    [lane_cap] = [
        x["limit"]
        for x in limits()
        if x["key"] == priorities.SOURCE_LANE_TAG and x["value"] == f"{source}/interactive"
    ]
    assert 0 < lane_cap < source_cap


@pytest.mark.parametrize(
    ("priority", "lane"),
    [
        (priorities.MANUAL, "interactive"),
        (priorities.WEBHOOK, "interactive"),
        (priorities.BATCH, "batch"),
        (priorities.RETRY, "batch"),
    ],
)
def test_run_tags_put_priorities_in_lanes(priority: int, lane: str) -> None:
    assert priorities.run_tags(priority, "strava", "t")[priorities.LANE_TAG] == lane


def test_instance_settings_are_valid_for_dagster(tmp_path: Path) -> None:
    """`run_queue` keeps only dequeue settings once `concurrency` holds the run limits."""
    import shutil

    import dagster as dg

    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.default_pool_limit == 1
        assert config.run_queue_config is not None
        assert config.run_queue_config.max_concurrent_runs == 4


@pytest.mark.parametrize("name", ["dagster.yaml", "dagster.postgres.yaml"])
def test_the_ui_shows_no_first_visit_popup(name: str) -> None:
    # Dagster 1.13's instance schema: `nux: {enabled: bool}`; the UI asks `shouldShowNux`.
    assert load(name)["nux"] == {"enabled": False}


def test_an_instance_of_dagster_yaml_has_the_popup_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copyfile(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))

    with dg.DagsterInstance.get() as instance:
        assert instance.nux_enabled is False


def readme_dagster_pg_url() -> str:
    """The DAGSTER_PG_URL example of the README's production section."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("export DAGSTER_PG_URL="):
            return line.split("=", 1)[1].split()[0]
    raise AssertionError("README has no `export DAGSTER_PG_URL=` line")


def test_dagster_runs_on_postgres_with_the_readmes_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A `postgresql://` URL makes SQLAlchemy 2.1 pick psycopg 3, whose server-side
    # parameters break dagster-postgres's `NOTIFY run_events, %(notify_id)s`: every event
    # write fails ("Exception while writing logger call to event log") and runs record
    # nothing. The README's URL must name a driver dagster-postgres works with.
    admin = os.environ.get("SYNC_TEST_POSTGRES_URL")
    if not admin:
        pytest.skip("needs SYNC_TEST_POSTGRES_URL (CI's PostgreSQL run)")
    scheme = readme_dagster_pg_url().split("://", 1)[0]
    assert scheme == "postgresql+psycopg2", scheme
    import psycopg

    name = f"dagster_test_{uuid.uuid4().hex[:12]}"  # Dagster's own database, as in production
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin.split("://", 1)[1].rsplit("/", 1)[0]
        monkeypatch.setenv("DAGSTER_PG_URL", f"{scheme}://{base}/{name}")
        run_one_partition(tmp_path)
    finally:
        drop_database(admin, name)


def run_one_partition(tmp_path: Path) -> None:
    """Materialize one partition on an instance made from dagster.postgres.yaml."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.postgres.yaml", home / "dagster.yaml")
    athletes = dg.DynamicPartitionsDefinition(name="pg_athletes")

    @dg.asset(partitions_def=athletes)
    def pg_activities() -> dg.MaterializeResult:
        """One partition."""
        return dg.MaterializeResult(metadata={"rows": 1})

    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("pg_athletes", ["1001"])
        result = dg.materialize([pg_activities], instance=instance, partition_key="1001")
        assert result.success
        assert instance.get_materialized_partitions(pg_activities.key) == {"1001"}
        assert len(instance.all_logs(result.run_id)) > 5  # the run's events were written
