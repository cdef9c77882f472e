"""Item 2 — rate-budget efficiency under Strava's default read limits, time compressed.

The sandbox enforces Strava's default limits (100 reads / 15 min, 1,000 / day; 200 / 2,000
overall) on a clock compressed `time_scale` times (15 minutes last 900/scale seconds) and
answers 429 beyond them. Every API request is logged with its sandbox time. A full sync of
the athletes (activity counts: the sandbox's default distribution, 0-300 each) is run by:

- the pipeline: `shards` concurrent `strava_sweep_job` runs (several run processes sharing
  the database budget) through the real daemon, with STRAVA_TIME_SCALE set; parked work
  comes back through the parked sensor; done when every athlete's sync state is succeeded
  and no run is queued or running;
- the baseline: `baseline.py` with a plain fixed-window limiter (count calls per window,
  sleep to the next boundary when the window is spent, correct counts from the headers).

Figures: share of each full window's read budget used while work was still waiting (every
window from the first call's to the one before the last call's), 429 responses, list calls
per athlete against the minimum (n//200 + 1 per athlete; the issue's ceil(n/200)+1 is also
shown), and total time against the lower bound the limits impose from the start time
(fill every window to its limit, daily limit included; service time ignored). The same
figures are projected to Strava's real 15-minute windows.

Run alone: ``.venv/bin/python benchmarks/rate_budget.py --athletes 200 --time-scale 60``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from bench_appdb import connect_athletes, create_app_db
from bench_daemon import (
    Daemon,
    daemon_ready,
    dagster_env,
    new_dagster_home,
    open_instance,
    register_partitions,
    wait_until,
)
from bench_launch import launch_runs
from bench_paths import BENCH_DIR, PYTHON
from bench_procs import TreeSampler, loadavg
from bench_report import log, print_table, temp_root
from bench_sandbox import Sandbox, start_sandbox
from sqlalchemy import func, select

from sync_pipeline.core import db, priorities
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import StravaActivity, SyncState
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.strava.source import STRAVA
from sync_pipeline.sandbox.strava import data as sandbox_data
from sync_pipeline.sandbox.strava.state import RateDecision

READ_15, READ_DAY = 100, 1000
WINDOW, DAY = 900.0, 86400.0
TIMEOUT = 3 * 3600.0


@dataclass(frozen=True)
class Request:
    """One API request as the sandbox counted it."""

    at: float  # sandbox time
    read: bool
    limited: bool


class RequestLog:
    """Records every /api/v3 request the sandbox counts (wraps `count_api_request`)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        state = sandbox.state
        original = state.count_api_request

        def counted(is_read: bool) -> RateDecision:
            decision = original(is_read)
            with self._lock:
                self.requests.append(Request(state.time(), is_read, decision.limited))
            return decision

        state.count_api_request = counted  # type: ignore[method-assign]

    def take(self) -> list[Request]:
        """The requests so far, and start a new log."""
        with self._lock:
            out, self.requests = self.requests, []
        return out


def lower_bound(start: float, calls: int, w: float, day: float) -> float:
    """Seconds from `start` until the last of `calls` reads can be made, every window filled
    to its limit (15-minute and daily, aligned as Strava aligns them)."""
    t, left = start, calls
    used_day: dict[int, int] = {}
    while True:
        widx, didx = math.floor(t / w), math.floor(t / day)
        room = min(READ_15, READ_DAY - used_day.get(didx, 0))
        take = min(room, left)
        used_day[didx] = used_day.get(didx, 0) + take
        left -= take
        if left == 0:
            return t - start
        t = (widx + 1) * w if used_day[didx] < READ_DAY else (didx + 1) * day


def window_figures(requests: list[Request], w: float, start: float, scale: float) -> dict[str, Any]:
    """429s, calls, per-window use and the efficiency figures of one contender."""
    reads = [r for r in requests if r.read and not r.limited]
    limited = sum(1 for r in requests if r.limited)
    if not reads:
        return {"reads": 0, "responses_429": limited}
    per_window: dict[int, int] = {}
    for r in reads:
        per_window[math.floor(r.at / w)] = per_window.get(math.floor(r.at / w), 0) + 1
    first, last = min(per_window), max(per_window)
    waiting = list(range(first, last))  # the last window only had the remainder to do
    used = [per_window.get(i, 0) for i in waiting]
    return {
        "reads": len(reads),
        "responses_429": limited,
        "windows_spanned": last - first + 1,
        "reads_per_window": [per_window.get(i, 0) for i in range(first, last + 1)],
        "budget_share_used_while_waiting": (
            round(sum(used) / (READ_15 * len(waiting)), 3) if waiting else None
        ),
        "min_window_share_while_waiting": (round(min(used) / READ_15, 3) if waiting else None),
        # Windows from the one the work was started in to the last call's: more than
        # `windows_spanned` when start-up (run queue, process start) outlasted a window.
        "windows_from_start": last - math.floor(start / w) + 1,
        "windows_needed": math.ceil(len(reads) / READ_15),
        "first_call_after_s": round(min(r.at for r in reads) - start, 2),
        "last_call_after_s": round(max(r.at for r in reads) - start, 2),
        # Every spanned window counted whole: an upper estimate at Strava's real windows.
        "windows_spanned_at_real_limits_hours": round((last - first + 1) * WINDOW / 3600, 2),
        "scale": scale,
    }


def expected_counts(sandbox: Sandbox, ids: list[int]) -> dict[int, int]:
    """Live activities per athlete."""
    return sandbox.live_counts(ids)


def stored_counts(app_db: AppDatabaseResource) -> dict[int, int]:
    """Stored activities per athlete."""
    with transaction(app_db.url) as s:
        rows = s.execute(
            select(StravaActivity.athlete_id, func.count()).group_by(StravaActivity.athlete_id)
        ).all()
    return {int(a): int(n) for a, n in rows}


def all_synced(app_db: AppDatabaseResource, ids: list[int]) -> float | None:
    """Time of the last success when every athlete's full sync has succeeded, else None."""
    with transaction(app_db.url) as s:
        rows = s.execute(
            select(SyncState.partition_key, SyncState.status, SyncState.last_full_sync_at).where(
                SyncState.source == "strava"
            )
        ).all()
    done = {k: t for k, status, t in rows if status == "succeeded" and t is not None}
    if len(done) < len(ids):
        return None
    return max(t.timestamp() for t in done.values())


def run_baseline(
    app_db: AppDatabaseResource, sandbox: Sandbox, scale: int, concurrency: int, root: Path
) -> tuple[float, float, dict[str, Any]]:
    """baseline.py with its fixed-window limiter; returns (start, end, its JSON)."""
    w = WINDOW / scale
    started = time.time()
    proc = subprocess.run(
        [
            PYTHON,
            str(BENCH_DIR / "baseline.py"),
            "--db-url",
            app_db.url,
            "--base-url",
            sandbox.url,
            "--mode",
            "full",
            "--concurrency",
            str(concurrency),
            "--read-limit-15min",
            str(READ_15),
            "--read-limit-daily",
            str(READ_DAY),
            "--window-seconds",
            str(w),
            "--day-seconds",
            str(DAY / scale),
        ],
        cwd=root,
        env={**os.environ, "SYNC_TOKEN_KEY": app_db.token_key},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"baseline failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return (
        float(result["started_at"]),
        float(result["finished_at"]),
        result | {"wall_with_startup": time.time() - started},
    )


def run_pipeline(
    app_db: AppDatabaseResource,
    sandbox: Sandbox,
    ids: list[int],
    scale: int,
    shards: int,
    root: Path,
) -> tuple[float, float, dict[str, Any]]:
    """Concurrent sweep runs through the daemon until every athlete is synced."""
    home = new_dagster_home(root, "dagster_home")
    env = dagster_env(home, app_db, sandbox.url, time_scale=scale)
    instance = open_instance(home)
    register_partitions(instance, ids)
    daemon = Daemon(env, root / "daemon_work", root / "daemon.log").start()
    try:
        wait_until("daemon ready", lambda: daemon_ready(instance), timeout=300, daemon=daemon)
        sandbox.reset()
        sampler = TreeSampler(daemon.pid).start()
        tags = priorities.run_tags(priorities.BATCH, "strava", "benchmark")
        specs = [
            {
                "job": "strava_sweep_job",
                "run_config": STRAVA.sweep_run_config(shard=s, shards=shards, full=True),
                "tags": tags,
            }
            for s in range(shards)
        ]
        launch = launch_runs(specs, env, root / "daemon_work")

        def finished() -> float | None:
            last = all_synced(app_db, ids)
            if last is None:
                return None
            busy = instance.get_runs(
                dg.RunsFilter(
                    statuses=[
                        dg.DagsterRunStatus.QUEUED,
                        dg.DagsterRunStatus.NOT_STARTED,
                        dg.DagsterRunStatus.STARTING,
                        dg.DagsterRunStatus.STARTED,
                    ]
                )
            )
            return None if busy else last

        last_success = wait_until(
            "every athlete synced", finished, timeout=TIMEOUT, poll=1.0, daemon=daemon
        )
        usage = sampler.stop()
        runs = instance.get_runs()
        by_trigger: dict[str, int] = {}
        for r in runs:
            trigger = r.tags.get(priorities.TRIGGER_TAG, "?")
            by_trigger[trigger] = by_trigger.get(trigger, 0) + 1
        failed = [r.run_id for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
        return (
            launch.loaded_at,
            float(last_success),
            {
                "runs_by_trigger": by_trigger,
                "runs_failed": failed,
                "cpu_seconds": round(usage.cpu_seconds, 1),
                "peak_rss_mb": round(usage.peak_rss_sum / 1_048_576, 1),
            },
        )
    finally:
        daemon.stop()
        instance.dispose()


def run(
    athletes: int,
    scale: int,
    *,
    shards: int = 3,
    threads: int = 4,
    counts_kind: str = "default",
    keep: bool = False,
) -> dict[str, Any]:
    """Measure both contenders at one time scale; returns the JSON-ready result."""
    if 900 % scale or 86400 % scale:
        raise ValueError("time scale must divide 900 (whole-second windows)")
    if counts_kind == "default":
        counts = sandbox_data.default_activity_counts(42, athletes)
    else:
        lo, hi = (int(x) for x in counts_kind.split("-"))
        counts = [lo + (hi - lo) * i // max(athletes - 1, 1) for i in range(athletes)]
    w = WINDOW / scale
    log(f"rate budget x{scale}: {athletes} athletes, windows of {w:g}s, {sum(counts):,} acts")
    results: dict[str, dict[str, Any]] = {}
    with temp_root(f"bench-rate-x{scale}-", keep) as tmp:
        root = Path(tmp)
        sandbox = start_sandbox(counts, rate_limits=True, time_scale=scale)
        requests = RequestLog(sandbox)
        try:
            ids = sandbox.state.athlete_ids()
            expected = expected_counts(sandbox, ids)
            minimum = sum(n // 200 + 1 for n in expected.values())
            issue_minimum = sum(math.ceil(n / 200) + 1 for n in expected.values())
            for name in ("baseline", "pipeline"):
                # A fresh database and fresh tokens per contender (lifetimes are compressed).
                app_db = create_app_db(root / f"{name}.db")
                connect_athletes(app_db, sandbox, ids)
                sandbox.reset()
                requests.take()
                load0 = loadavg()
                log(f"{name}: running")
                if name == "baseline":
                    start, end, extra = run_baseline(app_db, sandbox, scale, shards * threads, root)
                else:
                    start, end, extra = run_pipeline(
                        app_db, sandbox, ids, scale, shards, root / "pipeline"
                    )
                log_ = requests.take()
                by_endpoint = sandbox.state.stats()["requests_by_endpoint"]
                figures = window_figures(log_, w, start, scale)
                total = end - start
                bound = lower_bound(start, figures["reads"], w, DAY / scale)
                stored = stored_counts(app_db)
                wrong = sum(1 for a, n in expected.items() if stored.get(a, 0) != n)
                results[name] = {
                    **figures,
                    "total_seconds": round(total, 2),
                    "lower_bound_seconds": round(bound, 2),
                    "total_over_lower_bound": round(total / bound, 3) if bound else None,
                    "lower_bound_for_minimum_calls_seconds": round(
                        lower_bound(start, minimum, w, DAY / scale), 2
                    ),
                    "calls_per_athlete": round(figures["reads"] / athletes, 3),
                    "athletes_with_wrong_counts": wrong,
                    "api_calls_by_endpoint": by_endpoint,
                    "loadavg_before_after": [load0, loadavg()],
                    **extra,
                }
                db.dispose_engines()
                log(f"{name}: {total:.1f}s, {figures['reads']} reads")
        finally:
            sandbox.stop()
    real_bound_h = lower_bound(0.0, minimum, WINDOW, DAY) / 3600
    return {
        "benchmark": f"rate_budget_x{scale}",
        "athletes": athletes,
        "time_scale": scale,
        "window_seconds": w,
        "activities": sum(expected.values()),
        "minimum_calls": minimum,
        "minimum_calls_issue_formula": issue_minimum,
        "concurrent_runs": shards,
        "baseline": results["baseline"],
        "pipeline": results["pipeline"],
        "ratios": {
            "total_time": round(
                results["pipeline"]["total_seconds"] / results["baseline"]["total_seconds"], 3
            ),
        },
        "targets": {
            "budget_share_used_while_waiting_min": 0.95,
            "responses_429": 0,
            "total_over_lower_bound_max": 1.1,
        },
        "at_real_limits": {
            "lower_bound_hours": round(real_bound_h, 2),
            "pipeline_windows_spanned_hours": results["pipeline"].get(
                "windows_spanned_at_real_limits_hours"
            ),
            "baseline_windows_spanned_hours": results["baseline"].get(
                "windows_spanned_at_real_limits_hours"
            ),
            "seed_queue_hours": "6-7",
        },
    }


def table_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows for the summary table."""
    rows = []
    for who in ("baseline", "pipeline"):
        r = result[who]
        rows.append(
            [
                result["benchmark"],
                who,
                f"used {r.get('budget_share_used_while_waiting')} of budget while waiting",
                f"429s {r.get('responses_429')}",
                f"calls/athlete {r.get('calls_per_athlete')} (min "
                f"{round(result['minimum_calls'] / result['athletes'], 3)})",
                f"total/LB {r.get('total_over_lower_bound')}",
            ]
        )
    real = result["at_real_limits"]
    rows.append(
        [
            "",
            "real limits",
            f"LB {real['lower_bound_hours']} h",
            f"pipeline <= {real['pipeline_windows_spanned_hours']} h",
            "seed 6-7 h",
            "",
        ]
    )
    return rows


def main() -> None:
    """Run one time scale and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--athletes", type=int, default=200)
    parser.add_argument("--time-scale", type=int, default=60)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--counts", default="default", help="'default' or e.g. '200-2000'")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    result = run(
        args.athletes, args.time_scale, shards=args.shards, counts_kind=args.counts, keep=args.keep
    )
    print_table(table_rows(result), ["benchmark", "contender", "", "", "", ""])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
