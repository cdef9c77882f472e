"""Make the daemon evaluate a schedule's latest cron tick now (a real daemon tick, caught up).

A schedule that is RUNNING by default gets its state (start time = now) when the daemon
first sees it, so a past cron time is never evaluated. This script stores that state
beforehand with an earlier start time (`--since`, epoch seconds): when the daemon starts, it
finds the missed tick and evaluates it at once, exactly as at the cron time (same code
server call, run requests submitted to the queue). Run it with the daemon's environment and
working directory, before starting the daemon.

Run: ``python benchmarks/backdate_schedule.py -w workspace.yaml strava_weekly_full_sync
--since 1763863140``; prints one line, `BACKDATED ` and JSON.
"""

from __future__ import annotations

import argparse
import json

import dagster as dg
from dagster import __version__ as dagster_version
from dagster._cli.workspace.cli_target import (
    get_code_location_from_workspace,
    get_remote_repository_from_code_location,
    get_workspace_from_cli_opts,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    ScheduleInstigatorData,
)
from dagster_shared.cli import WorkspaceOpts


def main() -> None:
    """Store the schedule's state with the given start time."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-w", "--workspace", required=True)
    parser.add_argument("schedule")
    parser.add_argument("--since", type=float, required=True)
    args = parser.parse_args()
    with (
        dg.DagsterInstance.get() as instance,
        get_workspace_from_cli_opts(
            instance, dagster_version, WorkspaceOpts(workspace=[args.workspace])
        ) as workspace,
    ):
        location = get_code_location_from_workspace(workspace, None)
        repo = get_remote_repository_from_code_location(location, None)
        schedule = repo.get_schedule(args.schedule)
        existing = instance.get_instigator_state(
            schedule.get_remote_origin_id(), schedule.selector_id
        )
        if existing is not None:
            instance.delete_instigator_state(existing.instigator_origin_id, existing.selector_id)
        instance.add_instigator_state(
            InstigatorState(
                schedule.get_remote_origin(),
                InstigatorType.SCHEDULE,
                InstigatorStatus.DECLARED_IN_CODE,
                ScheduleInstigatorData(schedule.cron_schedule, args.since),
            )
        )
        print(
            "BACKDATED "
            + json.dumps(
                {
                    "schedule": args.schedule,
                    "origin_id": schedule.get_remote_origin_id(),
                    "selector_id": schedule.selector_id,
                    "since": args.since,
                }
            )
        )


if __name__ == "__main__":
    main()
