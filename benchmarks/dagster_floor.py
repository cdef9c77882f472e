"""Dagster's own floor under a sweep: what one partition's event and one process cost.

A sweep keeps each athlete's status exact in the UI by logging one materialization per
athlete on its partition. Whatever the project does, that write costs what Dagster's event
log storage costs; and every Dagster process (daemon, code server, run worker) costs at
least what importing Dagster and opening the instance costs. This measures both on the
storage the sweep benchmark uses, in fresh subprocesses, with nothing of the project loaded:

- ``event``: a one-op job (in-process executor) that yields N `AssetMaterialization`s on N
  dynamic partitions of one asset, with a dozen metadata entries like a sweep's; CPU and
  wall per event of the whole process (run start and end included, N large).
- ``process``: `import dagster` and open the instance: CPU seconds and peak RSS (VmHWM).

The sweep benchmark turns these into the pipeline's floor for a run of n athletes: the
baseline's CPU plus n events plus the processes' start-up; a ratio under it needs a change
in Dagster, not here.

Run alone: ``.venv/bin/python benchmarks/dagster_floor.py [--events 2000]
[--postgres-url postgresql+psycopg2://...]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from typing import Any

from bench_paths import PYTHON

CHILD = r"""
import json, resource, sys, time
from pathlib import Path

t0 = time.process_time()
import dagster as dg

kind, home, n, pg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if pg:
    Path(home, "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url: " + pg + "\n"
    )
instance = dg.DagsterInstance.from_config(home)
started = time.process_time() - t0
result = {"start_cpu_s": round(started, 3)}
if kind == "event":
    athletes = dg.DynamicPartitionsDefinition(name="athletes")
    keys = [str(1000 + i) for i in range(n)]
    instance.add_dynamic_partitions("athletes", keys)

    @dg.op
    def sweep():
        for key in keys:
            yield dg.AssetMaterialization(
                "activities",
                partition=key,
                metadata={
                    "mode": "incremental", "status": "succeeded", "seconds": 0.05,
                    "api_calls": 2, "retries": 0, "rate_wait_seconds": 0.0,
                    "activities_new": 1, "activities_updated": 0, "activities_deleted": 0,
                    "streams_fetched": 1, "pages": 1, "resumed": False,
                },
            )
        yield dg.Output(None)

    @dg.job(executor_def=dg.in_process_executor)
    def floor_job():
        sweep()

    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = floor_job.execute_in_process(instance=instance)
    assert run.success
    result["event_cpu_ms"] = round(1000 * (time.process_time() - cpu0) / n, 2)
    result["event_wall_ms"] = round(1000 * (time.perf_counter() - wall0) / n, 2)
    stored = instance.get_materialized_partitions(dg.AssetKey("activities"))
    assert len(stored) == n, len(stored)
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        result["peak_rss_mb"] = round(int(line.split()[1]) / 1024, 1)
print(json.dumps(result))
"""


def _child(kind: str, n: int, postgres_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as home:
        out = subprocess.run(
            [PYTHON, "-W", "ignore", "-c", CHILD, kind, home, str(n), postgres_url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def measure(events: int = 2000, postgres_url: str = "") -> dict[str, Any]:
    """Event cost and process floor on SQLite (and PostgreSQL when a URL is given)."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "dagster_floor",
        "events": events,
        "sqlite_event": _child("event", events, ""),
        "process": _child("process", 0, ""),
    }
    if postgres_url:
        result["postgres_event"] = _child("event", events, postgres_url)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    """Measure and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--postgres-url", default="", help="also measure Dagster on PostgreSQL")
    args = parser.parse_args()
    print(json.dumps(measure(args.events, args.postgres_url)))


if __name__ == "__main__":
    main()
