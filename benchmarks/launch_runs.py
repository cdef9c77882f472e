"""Submit many runs to the Dagster run queue with one workspace load.

`dagster job launch` loads the code location (a gRPC code server) for every run it launches;
a schedule tick loads it once and submits all its run requests. This script does the latter
with the same internals as `dagster job launch` (create the run from the remote job and its
execution plan, then `instance.submit_run`, which queues it for the daemon's run
coordinator). Input: a JSON file holding a list of ``{"job", "run_config", "tags"}``.
Output: one line, `LAUNCHED ` and JSON, with the run ids, submit times and this process's
CPU-seconds.

Run: ``python benchmarks/launch_runs.py -w workspace.yaml specs.json`` (DAGSTER_HOME set).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import __version__ as dagster_version
from dagster._cli.job import _create_run
from dagster._cli.workspace.cli_target import (
    get_code_location_from_workspace,
    get_remote_job_from_remote_repo,
    get_remote_repository_from_code_location,
    get_workspace_from_cli_opts,
)
from dagster_shared.cli import WorkspaceOpts

RESULT_PREFIX = "LAUNCHED "


def main() -> None:
    """Parse arguments, submit the runs, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-w", "--workspace", required=True)
    parser.add_argument("specs", type=Path)
    args = parser.parse_args()
    specs: list[dict[str, Any]] = json.loads(args.specs.read_text())
    run_ids: list[str] = []
    submits: list[float] = []
    started = time.time()
    with (
        dg.DagsterInstance.get() as instance,
        get_workspace_from_cli_opts(
            instance, dagster_version, WorkspaceOpts(workspace=[args.workspace])
        ) as workspace,
    ):
        location = get_code_location_from_workspace(workspace, None)
        repo = get_remote_repository_from_code_location(location, None)
        loaded = time.time()
        for spec in specs:
            remote_job = get_remote_job_from_remote_repo(repo, spec["job"])
            run = _create_run(
                instance=instance,
                code_location=location,
                remote_repo=repo,
                remote_job=remote_job,
                run_config=spec.get("run_config") or {},
                tags={k: str(v) for k, v in (spec.get("tags") or {}).items()},
                op_selection=None,
                run_id=spec.get("run_id"),
            )
            instance.submit_run(run.run_id, workspace)
            run_ids.append(run.run_id)
            submits.append(time.time())
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        RESULT_PREFIX
        + json.dumps(
            {
                "run_ids": run_ids,
                "loaded_at": loaded,
                "first_submit_at": submits[0] if submits else loaded,
                "last_submit_at": submits[-1] if submits else loaded,
                "workspace_load_seconds": round(loaded - started, 3),
                "cpu_seconds": round(
                    own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime, 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
