"""Dagster entry point: the `defs` of every module under sync_pipeline/defs/, merged."""

import importlib

import dagster as dg

#: The modules under sync_pipeline/defs/ that hold Dagster objects; each exports `defs` (a
#: `dg.Definitions`, or a `@dg.definitions` function when it reads settings at load time).
#: Listed rather than found by `dg.load_from_defs_folder`, which also snapshots every
#: installed Dagster integration's components (dagster-aws's among them) on each load:
#: ~50 MB and ~0.7 s of CPU more in every code server, run process and CLI launch.
#: `sync_pipeline_tests/test_definitions.py` checks that both load the same objects.
MODULES = (
    "resources",
    "automation.sensors",
    "operations.schedules",
    "strava.source",
    "strava.sensors",
    "github.source",
    "youtube.source",
    "x.source",
    "instagram.source",
    "users.assets",
    "promidata.source",
    "promidata.assets",
    "promidata.sensors",
    "promidata.definitions",
    "outreach.source",
)


@dg.definitions
def defs() -> dg.Definitions:
    """Every source's assets, jobs, schedules and sensors, and the shared ones."""
    found = []
    for name in MODULES:
        module_defs = importlib.import_module(f"sync_pipeline.defs.{name}").defs
        found.append(module_defs() if callable(module_defs) else module_defs)
    return dg.Definitions.merge(*found)
