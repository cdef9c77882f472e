"""Run priority classes, applied the same way wherever runs are created (`dagster/priority`)."""

from __future__ import annotations

PRIORITY_TAG = "dagster/priority"
SOURCE_TAG = "sync_pipeline/source"
TRIGGER_TAG = "sync_pipeline/trigger"
# interactive (manual, webhook, new user) | batch (sweeps, parked work, retries). dagster.yaml
# caps interactive runs below max_concurrent_runs, so a flood of them always leaves a slot
# for queued batch work: Dagster's queue has no aging, this reservation bounds the wait.
LANE_TAG = "sync_pipeline/lane"
# "<source>/<lane>": dagster.yaml caps each source's interactive runs one below the source's
# cap, so a flood of one source's manual runs still leaves that source a slot for its sweep.
SOURCE_LANE_TAG = "sync_pipeline/source_lane"

MANUAL = 10  # UI, CLI, `dagster job launch`: pass the batch
WEBHOOK = 5  # provider push events
NEW_USER = 5  # first sync of a newly connected user
BATCH = 0  # scheduled sweeps
RETRY = -1  # failed work handed over for a single-partition retry, at lowered priority


def lane(priority: int) -> str:
    """The capacity lane of a priority: above batch is interactive."""
    return "interactive" if priority > BATCH else "batch"


def run_tags(
    priority: int, source: str, trigger: str, *, lane_name: str | None = None
) -> dict[str, str]:
    """Tags every run created by the project carries. `lane_name` overrides the priority's
    lane: a batch of hundreds of new users' first syncs is ordered like new-user work but
    must not hold the slots reserved for manual and webhook runs for hours."""
    chosen = lane_name or lane(priority)
    return {
        PRIORITY_TAG: str(priority),
        SOURCE_TAG: source,
        TRIGGER_TAG: trigger,
        LANE_TAG: chosen,
        SOURCE_LANE_TAG: f"{source}/{chosen}",
    }


def job_tags(priority: int, source: str) -> dict[str, str]:
    """Default tags of a job (runs launched from the UI or `dagster job launch`)."""
    return {
        PRIORITY_TAG: str(priority),
        SOURCE_TAG: source,
        LANE_TAG: lane(priority),
        SOURCE_LANE_TAG: f"{source}/{lane(priority)}",
    }
