"""The code location: `definitions.py` merges the modules it lists, and that list holds every
Dagster object the defs folder defines (what `dg.load_from_defs_folder` would find)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import sync_pipeline.definitions as entry

PACKAGE = Path(entry.__file__).parent


def contents(defs: dg.Definitions) -> dict[str, set[str]]:
    """Names of what a repository holds, by kind."""
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    return {
        "assets": {k.to_user_string() for k in graph.get_all_asset_keys()},
        "checks": {k.to_user_string() for k in graph.asset_check_keys},
        "jobs": {j.name for j in repo.get_all_jobs()},
        "sensors": {s.name for s in repo.sensor_defs},
        "schedules": {s.name for s in repo.schedule_defs},
        "resources": set(repo.get_top_level_resources()),
    }


@pytest.fixture(scope="module")
def listed() -> dict[str, set[str]]:
    return contents(entry.defs())


def test_the_listed_modules_hold_everything_in_the_defs_folder(
    listed: dict[str, set[str]],
) -> None:
    folder = contents(dg.load_from_defs_folder(path_within_project=PACKAGE))
    assert listed == folder


@pytest.mark.parametrize(
    "kind,name",
    [
        ("jobs", "strava_athlete_sync"),
        ("jobs", "strava_sweep_job"),
        ("sensors", "partitions_sensor"),
        ("sensors", "strava_webhook_sensor"),
        ("schedules", "cleanup_daily"),
        ("assets", "strava_activities"),
        ("resources", "app_db"),
    ],
)
def test_the_code_location_has(listed: dict[str, set[str]], kind: str, name: str) -> None:
    assert name in listed[kind]


def test_loading_the_code_location_does_not_import_dagster_aws() -> None:
    # dagster-aws (boto3, its components) costs ~50 MB per process; only an S3 image store
    # needs it, and imports it when it makes its client.
    code = (
        "import sys, sync_pipeline.definitions as d; d.defs().get_repository_def(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster_aws', 'boto3')))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded: Any = out.strip().splitlines()[-1]
    assert loaded == "[]"
