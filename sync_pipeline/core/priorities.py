"""Run priority classes, applied the same way wherever runs are created (`dagster/priority`)."""

from __future__ import annotations

PRIORITY_TAG = "dagster/priority"
SOURCE_TAG = "sync_pipeline/source"
TRIGGER_TAG = "sync_pipeline/trigger"

MANUAL = 10  # UI, CLI, `dagster job launch`: pass the batch
WEBHOOK = 5  # provider push events
NEW_USER = 5  # first sync of a newly connected user
BATCH = 0  # scheduled sweeps
RETRY = -1  # failed work handed over for a single-partition retry, at lowered priority


def run_tags(priority: int, source: str, trigger: str) -> dict[str, str]:
    """Tags every run created by the project carries."""
    return {PRIORITY_TAG: str(priority), SOURCE_TAG: source, TRIGGER_TAG: trigger}
