"""Dagster entry point: everything under sync_pipeline/defs/."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    """Load every source's definitions from the defs folder."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
