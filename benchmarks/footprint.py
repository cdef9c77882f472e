"""Item 5 — footprint: memory of sync runs and of the idle main job; Dagster-home storage.

1. The main job (`sync-pipeline dev`: Strava sandbox, demo athletes, platform sandboxes and
   demo users, webhook receiver, `dagster dev` with webserver, daemon and code servers) is
   started in a temp directory on free ports. Its whole process tree is sampled while the
   first syncs run (peak RSS of single-athlete sync runs) and then for `idle_seconds` once
   no run is queued or running (RSS of the idle main job, CPU it burns idling, growth of
   the Dagster home from sensor and schedule ticks).
2. Storage per synced athlete per week in the Dagster home: bytes a sweep adds per athlete
   (incremental and full, from the sweep benchmark when it ran, else measured here on 500
   athletes) times the week's sweeps (28 incremental + 1 full), plus idle growth.
3. Peak RSS of a 500-athlete sweep run, from the sweep benchmark.

Run alone: ``.venv/bin/python benchmarks/footprint.py [--idle-seconds 120]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
from common import (
    BIN,
    TreeSampler,
    dir_size,
    log,
    open_instance,
    print_table,
    temp_root,
    wait_until,
)

from sync_pipeline.defs.strava.assets import STRAVA_ACTIVITIES

SWEEPS_PER_WEEK = {"incremental": 28, "full": 1}
DEMO_ATHLETES = 8


def free_port_block(offsets: tuple[int, ...] = (0, 1, 2, 3, 4, 10)) -> int:
    """A base port such that base + each offset is free on loopback."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        try:
            with contextlib.ExitStack() as stack:
                for off in offsets:
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


def busy_runs(instance: dg.DagsterInstance) -> int:
    """Runs queued, starting or started."""
    return len(
        instance.get_runs(
            dg.RunsFilter(
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ]
            )
        )
    )


def main_job(idle_seconds: float, keep: bool = False) -> dict[str, Any]:
    """Start `sync-pipeline dev`, measure first syncs and the idle period, stop it."""
    with temp_root("bench-footprint-", keep) as tmp:
        root = Path(tmp)
        sandbox_port, ui_port = free_port_block(), free_port_block((0,))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(
                ("DAGSTER_", "SYNC_", "STRAVA_", "GITHUB_", "YOUTUBE_", "X_", "INSTAGRAM_")
            )
        }
        env["PYTHONUNBUFFERED"] = "1"
        log_path = root / "dev.log"
        with log_path.open("wb") as sink:
            proc = subprocess.Popen(
                [
                    str(BIN / "sync-pipeline"),
                    "dev",
                    "--athletes",
                    str(DEMO_ATHLETES),
                    "--port",
                    str(ui_port),
                    "--sandbox-port",
                    str(sandbox_port),
                ],
                cwd=root,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        sampler = TreeSampler(proc.pid, interval=0.5).start()
        home = root / ".sync_home" / "dagster"
        instance: dg.DagsterInstance | None = None
        try:

            def ui_up() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"sync-pipeline dev exited:\n{log_path.read_text()[-3000:]}")
                try:
                    return httpx.get(
                        f"http://127.0.0.1:{ui_port}/server_info", timeout=2
                    ).is_success
                except httpx.HTTPError:
                    return False

            wait_until("the UI to answer", ui_up, timeout=300, poll=1.0)
            ui_seconds = time.monotonic() - started
            instance = open_instance(home)
            inst = instance

            def first_syncs_done() -> bool:
                done = inst.get_materialized_partitions(STRAVA_ACTIVITIES)
                return len(done) >= DEMO_ATHLETES and busy_runs(inst) == 0

            wait_until("first syncs of the demo athletes", first_syncs_done, timeout=600, poll=2)
            settled_seconds = time.monotonic() - started
            busy = sampler.stop()
            log(f"footprint: main job settled after {settled_seconds:.0f}s; idling")
            idle = TreeSampler(proc.pid, interval=0.5).start()
            t_end = time.monotonic() + idle_seconds
            home0 = dir_size(home)
            # Idling is the measurement: the sampler thread records while we wait.
            wait_until(
                "the idle period",
                lambda: proc.poll() is not None or time.monotonic() >= t_end,
                timeout=idle_seconds + 30,
                poll=1.0,
            )
            if proc.poll() is not None:
                raise RuntimeError(f"sync-pipeline dev exited:\n{log_path.read_text()[-3000:]}")
            idle_usage = idle.stop()
            home1 = dir_size(home)
            runs_during_idle = busy_runs(inst)
        finally:
            if instance is not None:
                instance.dispose()
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return {
        "ui_ready_seconds": round(ui_seconds, 1),
        "first_syncs_settled_seconds": round(settled_seconds, 1),
        "during_first_syncs": busy.as_dict(),
        "idle_seconds": idle_seconds,
        "idle": idle_usage.as_dict(),
        "idle_cpu_seconds_per_minute": round(60 * idle_usage.cpu_seconds / idle_seconds, 2),
        "idle_dagster_home_growth_kb_per_hour": round(
            (home1 - home0) / 1024 * 3600 / idle_seconds, 1
        ),
        "runs_started_while_idle": runs_during_idle,
    }


def storage_per_athlete(sweeps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Bytes per athlete per sweep from sweep results, and per week."""
    per: dict[str, float] = {}
    for mode, result in sweeps.items():
        pipeline = result["pipeline"]
        growth = pipeline.get("dagster_home_growth_mb")
        if growth is not None:
            per[mode] = growth * 1_048_576 / result["athletes"]
    week = sum(per.get(m, 0.0) * n for m, n in SWEEPS_PER_WEEK.items())
    return {
        "bytes_per_athlete_per_sweep": {m: round(v) for m, v in per.items()},
        "sweeps_per_week": SWEEPS_PER_WEEK,
        "kb_per_athlete_per_week": round(week / 1024, 1),
    }


def run(
    previous: list[dict[str, Any]] | None = None, *, quick: bool = False, idle_seconds: float = 0
) -> dict[str, Any]:
    """Measure the main job; take sweep figures from `previous` results (or measure them)."""
    idle = idle_seconds or (30.0 if quick else 120.0)
    job = main_job(idle)
    sweeps = {
        r["benchmark"].removeprefix("sweep_"): r
        for r in previous or []
        if r.get("benchmark", "").startswith("sweep_") and "pipeline" in r
    }
    if not all(m in sweeps for m in SWEEPS_PER_WEEK):
        import sweep

        for mode in SWEEPS_PER_WEEK:
            if mode not in sweeps:
                sweeps[mode] = sweep.run(mode, 100 if quick else 500)
    storage = storage_per_athlete(sweeps)
    idle_week_mb = job["idle_dagster_home_growth_kb_per_hour"] * 24 * 7 / 1024
    sweep_worker = {
        m: r["pipeline"]["peak_rss_by_kind_mb"].get("run_worker") for m, r in sweeps.items()
    }
    return {
        "benchmark": "footprint",
        "main_job": job,
        "peak_rss_single_athlete_run_mb": job["during_first_syncs"]["peak_rss_by_kind_mb"].get(
            "run_worker"
        ),
        "peak_rss_sweep_run_mb": sweep_worker,
        "main_job_idle_rss_mb": job["idle"]["peak_rss_sum_mb"],
        "storage": storage,
        "idle_dagster_home_growth_mb_per_week": round(idle_week_mb, 1),
    }


def table_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows for the summary table."""
    storage = result["storage"]
    return [
        ["footprint", "main job idle RSS", f"{result['main_job_idle_rss_mb']} MB",
         f"{result['main_job']['idle_cpu_seconds_per_minute']} CPU-s/min idle"],
        ["", "sync run peak RSS", f"single athlete {result['peak_rss_single_athlete_run_mb']} MB",
         f"sweep {result['peak_rss_sweep_run_mb']}"],
        ["", "Dagster home / athlete / week", f"{storage['kb_per_athlete_per_week']} KB",
         f"+ idle ticks {result['idle_dagster_home_growth_mb_per_week']} MB/week"],
    ]  # fmt: skip


def main() -> None:
    """Run and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(None, quick=args.quick, idle_seconds=args.idle_seconds)
    print_table(table_rows(result), ["benchmark", "figure", "", ""])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
