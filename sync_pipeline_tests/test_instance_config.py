"""dagster.yaml and its PostgreSQL variant agree, and the queue settings the design relies on
are there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_pipeline.core import priorities

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
