"""Item 1 — sweep throughput: the pipeline's sharded sweep runs against the plain baseline.

One configuration (incremental or full) is measured like this:

1. A sandbox with the athletes and their activities (rate limits off) and a template app
   database with the athletes connected (tokens issued by the sandbox, stored encrypted).
   Incremental: their current activities are stored as after a full sync, then each athlete
   gets one new activity on Strava.
2. Baseline: a copy of the template; `baseline.py` syncs every athlete at the pipeline's
   effective concurrency (strava run slots x threads per sweep run).
3. Pipeline: another copy; a fresh Dagster home with the athletes registered as partitions;
   the real daemon; the `strava_sweep_job` runs the schedules make (`sweep_shards`: one per
   500 athletes, at most 12; same config and tags) submitted to the run queue; wait until
   all finish.
4. Both results are checked against the sandbox (every athlete's stored activities equal
   its live ones; same number of API calls; streams fetched for the same activities), so a
   fast-but-wrong contender cannot win.

Run alone: ``.venv/bin/python benchmarks/sweep.py --mode incremental --athletes 200``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster_floor
import yaml
from bench_appdb import connect_athletes, copy_app_db, create_app_db, seed_synced
from bench_daemon import (
    Daemon,
    daemon_ready,
    dagster_env,
    new_dagster_home,
    open_instance,
    register_partitions,
    run_failures,
    wait_runs,
    wait_until,
)
from bench_launch import launch_runs
from bench_paths import BENCH_DIR, PROJECT_ROOT, PYTHON
from bench_procs import TreeSampler, loadavg, mb, self_cpu
from bench_report import dir_size, log, print_table, temp_root
from bench_sandbox import Sandbox, start_sandbox
from sqlalchemy import func, select

from sync_pipeline.core import db, priorities
from sync_pipeline.core.batching import sweep_shards
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import StravaActivity, StravaStream
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.source import SWEEP_CONCURRENCY
from sync_pipeline.defs.strava.source import STRAVA, STRAVA_ACTIVITIES

RUN_TIMEOUT = 3 * 3600.0
TARGET_RATIO = 1.25  # issue 16: wall and CPU of the whole process tree vs the bare script
TARGET_RSS_RATIO = 3.0  # peak RSS of all processes together


def pipeline_concurrency() -> tuple[int, int, int]:
    """(strava run slots, threads per sweep run, athletes in flight) from dagster.yaml."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    queue = config.get("concurrency", {}).get("runs") or config.get("run_queue", {})
    slots = int(queue.get("max_concurrent_runs", 10))
    for limit in queue.get("tag_concurrency_limits", []):
        if limit.get("key") == priorities.SOURCE_TAG and limit.get("value") == "strava":
            slots = min(slots, int(limit["limit"]))
    threads = SWEEP_CONCURRENCY
    return slots, threads, slots * threads


def activity_counts(mode: str, athletes: int, existing: int, seed: int) -> list[int]:
    """Per-athlete activity counts: `existing` each (incremental) or 200..2,000 (full)."""
    if mode == "incremental":
        return [existing] * athletes
    rng = random.Random(seed)
    return [rng.randint(200, 2000) for _ in range(athletes)]


@dataclass
class Stored:
    """What a contender left in its app database."""

    activities: int
    per_athlete: dict[int, int]
    id_sum: int
    streams: int


def stored(app_db: AppDatabaseResource) -> Stored:
    """Row counts and an id checksum of activities and streams."""
    with transaction(app_db.url) as s:
        per = dict(
            s.execute(
                select(StravaActivity.athlete_id, func.count()).group_by(StravaActivity.athlete_id)
            ).all()
        )
        id_sum = int(s.scalar(select(func.coalesce(func.sum(StravaActivity.id), 0))) or 0)
        streams = int(s.scalar(select(func.count()).select_from(StravaStream)) or 0)
    return Stored(sum(per.values()), {int(k): int(v) for k, v in per.items()}, id_sum, streams)


def verify(
    name: str, got: Stored, expected: dict[int, int], calls: int, min_calls: int
) -> list[str]:
    """Differences from the sandbox's truth (empty when correct)."""
    problems = []
    wrong = [a for a, n in expected.items() if got.per_athlete.get(a, 0) != n]
    if wrong:
        a = wrong[0]
        problems.append(
            f"{name}: {len(wrong)} athletes with wrong activity counts "
            f"(e.g. {a}: {got.per_athlete.get(a, 0)} stored, {expected[a]} on Strava)"
        )
    if calls < min_calls:
        problems.append(f"{name}: {calls} list calls, fewer than the minimum {min_calls}")
    return problems


def min_list_calls(counts: dict[int, int], mode: str, new: int = 1) -> int:
    """ceil(n/200) (+1 when n is a multiple of 200) list calls per athlete."""
    total = 0
    for n in counts.values():
        k = new if mode == "incremental" else n
        total += k // 200 + 1
    return total


def run_baseline(
    app_db: AppDatabaseResource, sandbox: Sandbox, mode: str, concurrency: int, workdir: Path
) -> dict[str, Any]:
    """Run `baseline.py` in a subprocess; wall, CPU and memory from the outside."""
    sandbox.reset()
    cpu0 = self_cpu()
    load0 = loadavg()
    started = time.time()
    err_path = workdir / "baseline.stderr"
    with err_path.open("wb") as err_sink:
        proc = subprocess.Popen(
            [
                PYTHON,
                str(BENCH_DIR / "baseline.py"),
                "--db-url",
                app_db.url,
                "--base-url",
                sandbox.url,
                "--mode",
                mode,
                "--concurrency",
                str(concurrency),
            ],
            cwd=workdir,
            env={**os.environ, "SYNC_TOKEN_KEY": app_db.token_key},
            stdout=subprocess.PIPE,
            stderr=err_sink,
        )
    sampler = TreeSampler(proc.pid).start()
    assert proc.stdout is not None
    out = proc.stdout.read()
    usage = sampler.stop()
    _pid, status, rusage = os.wait4(proc.pid, 0)
    finished = time.time()
    if status != 0:
        raise RuntimeError(f"baseline failed ({status}):\n{err_path.read_text()[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    stats = sandbox.state.stats()
    return {
        "wall_seconds": result["seconds"],
        "wall_seconds_with_startup": round(finished - started, 3),
        "cpu_seconds": round(rusage.ru_utime + rusage.ru_stime, 2),
        "peak_rss_mb": round(max(rusage.ru_maxrss * 1024, usage.peak_rss_sum) / 1_048_576, 1),
        "sandbox_cpu_seconds": round(self_cpu() - cpu0, 2),
        "loadavg_before_after": [load0, loadavg()],
        "api_calls": stats["requests_total"],
        "api_calls_by_endpoint": stats["requests_by_endpoint"],
        "responses_by_status": stats["responses_by_status"],
        "succeeded": result["succeeded"],
        "failed": result["failed"],
        "errors": result["errors"],
    }


def run_pipeline(
    app_db: AppDatabaseResource,
    sandbox: Sandbox,
    athlete_ids: list[int],
    mode: str,
    root: Path,
) -> dict[str, Any]:
    """Start the daemon on a fresh home, submit the sweep's shards, wait, measure."""
    home = new_dagster_home(root, "dagster_home")
    workdir = root / "daemon_work"
    env = dagster_env(home, app_db, sandbox.url)
    instance = open_instance(home)
    partition_seconds = register_partitions(instance, athlete_ids)
    daemon = Daemon(env, workdir, root / "daemon.log").start()
    try:
        ready_started = time.monotonic()
        wait_until(
            "daemon ready", lambda: daemon_ready(instance), timeout=300, poll=1.0, daemon=daemon
        )
        ready_seconds = time.monotonic() - ready_started
        shards = sweep_shards(len(athlete_ids))
        tags = priorities.run_tags(priorities.BATCH, "strava", f"schedule_{mode}")
        specs = [
            {
                "job": "strava_sweep_job",
                "run_config": STRAVA.sweep_run_config(shard=s, shards=shards, full=mode == "full"),
                "tags": tags,
            }
            for s in range(shards)
        ]
        sandbox.reset()
        home_before = dir_size(home)
        sampler = TreeSampler(daemon.pid).start()
        cpu0 = self_cpu()
        load0 = loadavg()
        launch = launch_runs(specs, env, workdir)
        records = wait_runs(instance, launch.run_ids, timeout=RUN_TIMEOUT, daemon=daemon)
        usage = sampler.stop()
        sandbox_cpu = self_cpu() - cpu0
        stats = sandbox.state.stats()
        failures = run_failures(instance, records)
        end = max(r.end_time for r in records)
        starts = [r.start_time for r in records]
        durations = sorted(r.end_time - r.start_time for r in records)
        queue_waits = sorted(r.start_time - r.create_timestamp.timestamp() for r in records)
        materialized = len(instance.get_materialized_partitions(STRAVA_ACTIVITIES))
        outputs = sweep_outputs(instance, launch.run_ids)
        wall = end - launch.loaded_at
        return {
            "wall_seconds": round(wall, 3),
            "wall_seconds_with_launch": round(end - launch.started_at, 3),
            "cpu_seconds": round(usage.cpu_seconds, 2),
            "launcher_cpu_seconds": round(launch.cpu_seconds, 2),
            "launcher_workspace_load_seconds": launch.workspace_load_seconds,
            "peak_rss_mb": mb(usage.peak_rss_sum),
            "peak_rss_by_kind_mb": usage.as_dict()["peak_rss_by_kind_mb"],
            "cpu_seconds_by_kind": usage.as_dict()["cpu_seconds_by_kind"],
            "processes_by_kind": usage.processes_seen_by_kind,
            "commands_by_kind": usage.as_dict()["commands_by_kind"],
            "sandbox_cpu_seconds": round(sandbox_cpu, 2),
            "loadavg_before_after": [load0, loadavg()],
            "api_calls": stats["requests_total"],
            "api_calls_by_endpoint": stats["requests_by_endpoint"],
            "responses_by_status": stats["responses_by_status"],
            "runs": len(records),
            "runs_failed": failures,
            "first_run_start_after_s": round(min(starts) - launch.loaded_at, 2),
            "run_seconds_min_median_max": [
                round(durations[0], 1),
                round(durations[len(durations) // 2], 1),
                round(durations[-1], 1),
            ],
            "queue_wait_seconds_max": round(queue_waits[-1], 1),
            "athletes_succeeded": outputs.get("athletes_succeeded", 0),
            "athletes_failed": outputs.get("athletes_failed", 0),
            "athletes_parked": outputs.get("athletes_parked", 0),
            "athletes_skipped": outputs.get("athletes_skipped", 0),
            "partitions_materialized": materialized,
            "partition_registration_seconds": round(partition_seconds, 2),
            "daemon_ready_seconds": round(ready_seconds, 1),
            "dagster_home_mb": mb(dir_size(home)),
            "dagster_home_growth_mb": round((dir_size(home) - home_before) / 1_048_576, 3),
        }
    finally:
        daemon.stop()
        instance.dispose()


def sweep_outputs(instance: Any, run_ids: list[str]) -> dict[str, int]:
    """Sum of the sweep op's output metadata (athletes_succeeded, ...) over the runs."""
    import dagster as dg

    totals: dict[str, int] = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT):
            event = entry.dagster_event
            if event is None:
                continue
            data = event.event_specific_data
            for item in getattr(data, "metadata", {}).items():
                key, value = item
                if key.startswith("athletes_"):
                    totals[key] = totals.get(key, 0) + int(value.value)
    return totals


def run(
    mode: str,
    athletes: int,
    *,
    existing: int = 3,
    seed: int = 7,
    keep: bool = False,
    order: str = "baseline-first",
    floor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure one configuration; returns the result (JSON-ready)."""
    slots, threads, _ = pipeline_concurrency()
    # Same concurrency as the pipeline: runs in flight (at most the slots) x threads each.
    concurrency = min(slots, sweep_shards(athletes)) * threads
    counts = activity_counts(mode, athletes, existing, seed)
    log(f"sweep {mode}: {athletes} athletes, {sum(counts):,} activities at the sandbox")
    with temp_root(f"bench-sweep-{mode}-", keep) as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        sandbox = start_sandbox(counts)
        try:
            ids = sandbox.state.athlete_ids()
            sandbox_seconds = time.perf_counter() - t
            template = create_app_db(root / "template.db")
            connect_seconds = connect_athletes(template, sandbox, ids)
            seeded = 0
            if mode == "incremental":
                seeded = seed_synced(template, sandbox, ids)
                for a in ids:
                    sandbox.state.add_activities(a, 1)
            log(
                f"setup: sandbox {sandbox_seconds:.1f}s, connect {connect_seconds:.1f}s, "
                f"{seeded:,} activities pre-synced"
            )
            expected = sandbox.live_counts(ids)
            results: dict[str, dict[str, Any]] = {}
            stores: dict[str, Stored] = {}
            contenders = ["baseline", "pipeline"]
            if order == "pipeline-first":
                contenders.reverse()
            for name in contenders:
                app_db = copy_app_db(template, root / f"{name}.db")
                log(f"{name}: running")
                if name == "baseline":
                    results[name] = run_baseline(app_db, sandbox, mode, concurrency, root)
                else:
                    results[name] = run_pipeline(app_db, sandbox, ids, mode, root / "pipeline")
                stores[name] = stored(app_db)
                results[name]["activities_stored"] = stores[name].activities
                results[name]["streams_stored"] = stores[name].streams
                results[name]["app_db_mb"] = mb(
                    sum(p.stat().st_size for p in root.glob(f"{name}.db*") if p.is_file())
                )
                db.dispose_engines()
                log(f"{name}: {results[name]['wall_seconds']:.1f}s wall")
        finally:
            sandbox.stop()
    problems: list[str] = []
    minimum = min_list_calls(expected, mode)
    for name, res in results.items():
        calls = int(res["api_calls_by_endpoint"].get("GET /api/v3/athlete/activities", 0))
        problems += verify(name, stores[name], expected, calls, minimum)
        if res.get("runs_failed"):
            problems.append(f"{name}: failed runs {res['runs_failed']}")
        if res.get("failed") or res.get("athletes_failed"):
            problems.append(f"{name}: athletes failed")
    if stores["baseline"].id_sum != stores["pipeline"].id_sum:
        problems.append("baseline and pipeline stored different activity ids")
    if stores["baseline"].streams != stores["pipeline"].streams:
        problems.append(
            f"streams differ: baseline {stores['baseline'].streams}, "
            f"pipeline {stores['pipeline'].streams}"
        )
    if results["baseline"]["api_calls"] != results["pipeline"]["api_calls"]:
        problems.append(
            f"API calls differ: baseline {results['baseline']['api_calls']}, "
            f"pipeline {results['pipeline']['api_calls']}"
        )
    for res in results.values():
        res["athletes_per_second"] = round(athletes / res["wall_seconds"], 2)
    b, p = results["baseline"], results["pipeline"]
    ratios = {
        "wall": round(p["wall_seconds"] / b["wall_seconds"], 2),
        "wall_with_launch": round(
            p["wall_seconds_with_launch"] / b["wall_seconds_with_startup"], 2
        ),
        "cpu": round(p["cpu_seconds"] / b["cpu_seconds"], 2),
        "cpu_with_launcher": round(
            (p["cpu_seconds"] + p["launcher_cpu_seconds"]) / b["cpu_seconds"], 2
        ),
        "peak_rss": round(p["peak_rss_mb"] / b["peak_rss_mb"], 2),
    }
    targets = {"wall": TARGET_RATIO, "cpu": TARGET_RATIO, "peak_rss": TARGET_RSS_RATIO}
    return {
        "benchmark": f"sweep_{mode}",
        "athletes": athletes,
        "activities_at_sandbox": sum(expected.values()),
        "new_activities": athletes if mode == "incremental" else sum(expected.values()),
        "concurrency": {"run_slots": slots, "threads_per_run": threads, "in_flight": concurrency},
        "order": order,
        "baseline": b,
        "pipeline": p,
        "ratios": ratios,
        "targets": targets,
        "meets": {k: ratios[k] <= v for k, v in targets.items()},
        "cpu_seconds_per_1000_by_kind": per_thousand(p["cpu_seconds_by_kind"], athletes),
        "dagster_floor": floor_of(floor, athletes, b["cpu_seconds"], p["runs"]),
        "correct": not problems,
        "problems": problems,
    }


def per_thousand(by_kind: dict[str, float], athletes: int) -> dict[str, float]:
    """CPU seconds of each process kind per 1,000 athletes."""
    return {k: round(1000 * v / athletes, 2) for k, v in by_kind.items()}


def floor_of(
    floor: dict[str, Any] | None, athletes: int, baseline_cpu: float, runs: int
) -> dict[str, Any] | None:
    """The CPU the pipeline cannot go below on this Dagster storage (see dagster_floor.py):
    the baseline's work + one event per athlete + each run process's Dagster start."""
    if not floor:
        return None
    events = athletes * floor["sqlite_event"]["event_cpu_ms"] / 1000
    starts = runs * floor["process"]["start_cpu_s"]
    cpu = baseline_cpu + events + starts
    return {
        "event_cpu_ms": floor["sqlite_event"]["event_cpu_ms"],
        "process_start_cpu_s": floor["process"]["start_cpu_s"],
        "process_peak_rss_mb": floor["process"]["peak_rss_mb"],
        "events_cpu_s": round(events, 1),
        "run_starts_cpu_s": round(starts, 1),
        "cpu_ratio_floor": round(cpu / baseline_cpu, 2),
    }


def table_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows for the summary table: both contenders, the ratios against the targets, CPU by
    process kind per 1,000 athletes, and Dagster's floor."""
    rows = []
    for who in ("baseline", "pipeline"):
        r = result[who]
        rows.append(
            [
                f"{result['benchmark']} n={result['athletes']}",
                who,
                r["wall_seconds"],
                r["athletes_per_second"],
                r["cpu_seconds"],
                r["peak_rss_mb"],
                r["api_calls"],
                "ok" if result["correct"] else "WRONG",
            ]
        )
    ratios, targets, meets = result["ratios"], result["targets"], result["meets"]
    verdict = ", ".join(
        f"{k} {'meets' if meets[k] else 'misses'} <={targets[k]}x"
        for k in ("wall", "cpu", "peak_rss")
    )
    rows.append(
        ["", "ratio p/b", ratios["wall"], "", ratios["cpu"], ratios["peak_rss"], "", verdict]
    )
    kinds = result["cpu_seconds_per_1000_by_kind"]
    rows.append(
        [
            "",
            "CPU-s per 1,000 by kind",
            "",
            "",
            ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])),
            "",
            "",
            f"baseline {round(1000 * result['baseline']['cpu_seconds'] / result['athletes'], 2)}",
        ]
    )
    floor = result.get("dagster_floor")
    if floor:
        rows.append(
            [
                "",
                "Dagster floor",
                "",
                "",
                f"CPU ratio >= {floor['cpu_ratio_floor']}",
                "",
                "",
                f"{floor['event_cpu_ms']} ms CPU per partition event, "
                f"{floor['process_start_cpu_s']} s per run process start",
            ]
        )
    return rows


HEADER = ["benchmark", "contender", "wall s", "athletes/s", "CPU s", "peak MB", "API calls", ""]


def main() -> None:
    """Run one configuration and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["incremental", "full"], default="incremental")
    parser.add_argument("--athletes", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="Keep the temp directory.")
    parser.add_argument("--order", choices=["baseline-first", "pipeline-first"])
    parser.add_argument("--no-floor", action="store_true", help="skip Dagster's floor")
    args = parser.parse_args()
    floor = None if args.no_floor else dagster_floor.measure()
    result = run(
        args.mode, args.athletes, keep=args.keep, order=args.order or "baseline-first", floor=floor
    )
    print_table(table_rows(result), HEADER)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
