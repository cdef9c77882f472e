"""Item 5 — footprint: memory of sync runs and of the idle main job; Dagster-home storage.

1. The main job (`sync-pipeline dev`: Strava sandbox, demo athletes, platform sandboxes and
   demo users, webhook receiver, `dagster dev` with webserver, daemon and code servers) is
   started in a temp directory on free ports. Its whole process tree is sampled while the
   first syncs run (peak RSS of single-athlete sync runs) and then for `idle_seconds` once
   no run is queued or running (RSS of the idle main job, CPU it burns idling by process
   kind, growth of the Dagster home from sensor ticks and sensor-emitted events).
   The home is measured every `home_sample_seconds` through SQLite: each database at its
   size with the WAL checkpointed in (page_count x page_size; -wal/-shm files, which come
   and go, are reported apart), by file, table, event type and asset, and sensor ticks by
   sensor and status. Growth is the fitted slope over the window (10 minutes by default);
   the week's figure counts ticks only up to their retention (dagster.yaml purges skipped
   ticks after a day, so that table levels off), events for the whole week.
2. Storage per synced athlete per week in the Dagster home: bytes a sweep adds per athlete
   (incremental and full, from the sweep benchmark when it ran, else measured here on 500
   athletes) times the week's sweeps (28 incremental + 1 full), plus idle growth.
3. Peak RSS of a 500-athlete sweep run, from the sweep benchmark.

Run alone: ``.venv/bin/python benchmarks/footprint.py [--idle-seconds 600] [--main-job-only]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import yaml
from bench_daemon import open_instance, wait_until
from bench_paths import BIN, PROJECT_ROOT
from bench_procs import TreeSampler, cmdline, process_kind, tree
from bench_report import log, print_table, temp_root

from sync_pipeline.defs.strava.source import STRAVA_ACTIVITIES

SWEEPS_PER_WEEK = {"incremental": 28, "full": 1}
DEMO_ATHLETES = 8
HOURS_PER_WEEK = 24 * 7
# Sensors tick every 5-60 s and SQLite writes in bursts: a short window extrapolated to a
# week misleads (the first version measured 30 s). Ten minutes see every sensor ~10 times.
IDLE_SECONDS = 600.0
IDLE_SECONDS_QUICK = 180.0


# ------------------------------------------------------------------ Dagster home storage


def file_kind(rel: Path) -> str:
    """What a file of the Dagster home holds, by its path (SQLite layout of dagster.yaml)."""
    parts = rel.parts
    name = rel.name.removesuffix("-wal").removesuffix("-shm")
    if parts[:2] == ("history", "runs") and len(parts) == 3:
        if name == "index.db":
            return "event_log_index.db"
        # Events without a run (sensor observations, check evaluations) share the "" shard.
        return "event_log_no_run.db" if name == ".db" else "event_log_run_shards"
    if parts[:1] == ("history",) and name == "runs.db":
        return "runs.db"
    if parts[:1] == ("schedules",):
        return "schedules.db"
    if parts[:1] == ("storage",):
        return "compute_logs"
    return parts[0] if len(parts) > 1 else "top_level_files"


def sqlite_figures(path: Path) -> dict[str, Any]:
    """Bytes and rows of one SQLite file, read through SQLite (so the WAL is included).

    `bytes` is page_count * page_size: the file's size once the WAL is checkpointed into it,
    whatever the checkpointer has done so far; `used_bytes` leaves out free pages (space that
    purged rows left, which SQLite reuses before growing the file).
    """
    # Read-write but reading only: a read-only connection would leave -wal and -shm files
    # behind (32 KB each per run shard); this one removes them when it is the last to close.
    conn = sqlite3.connect(path, timeout=30)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_schema").fetchall())
        table_bytes: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)  # indexes count towards their table
            table_bytes[table] = table_bytes.get(table, 0) + int(size)
        tables = [
            t for t, kind in conn.execute("SELECT name, type FROM sqlite_schema") if kind == "table"
        ]
        rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        events: dict[str, int] = {}
        if "event_logs" in rows:
            for kind, key, n in conn.execute(
                "SELECT dagster_event_type, asset_key, count(*) FROM event_logs GROUP BY 1, 2"
            ):
                label = f"{kind or 'log message'} {asset_label(key)}".strip()
                events[label] = events.get(label, 0) + n
        ticks: dict[str, int] = {}
        if "job_ticks" in rows:
            for name, status, n in conn.execute(
                "SELECT json_extract(tick_body, '$.job_name'), status, count(*) FROM job_ticks "
                "GROUP BY 1, 2"
            ):
                ticks[f"{name} {status}"] = n
    finally:
        conn.close()
    return {
        "bytes": pages * page_size,
        "used_bytes": (pages - free) * page_size,
        "table_bytes": table_bytes,
        "rows": rows,
        "events": events,
        "ticks": ticks,
    }


def asset_label(key: str | None) -> str:
    """`["a", "b"]` (how event_logs stores asset keys) as a/b."""
    if not key:
        return ""
    with contextlib.suppress(ValueError, TypeError):
        return "/".join(json.loads(key))
    return key


@dataclass
class HomeSnapshot:
    """Sizes of a Dagster home at one moment, attributed by file kind, table and row kind."""

    at: float
    disk_bytes: int  # every file as it lies on disk, -wal and -shm included
    wal_bytes: int  # the -wal and -shm files alone
    bytes_by_file: dict[str, int] = field(default_factory=dict)  # WAL checkpointed in
    used_bytes_by_file: dict[str, int] = field(default_factory=dict)
    bytes_by_table: dict[str, int] = field(default_factory=dict)  # "<file kind> <table>"
    rows_by_table: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # "<file kind> <type> <asset>"
    ticks: dict[str, int] = field(default_factory=dict)  # "<instigator> <status>"

    @property
    def bytes(self) -> int:
        """The home's size with every WAL checkpointed (no -wal/-shm files)."""
        return sum(self.bytes_by_file.values())

    @property
    def used_bytes(self) -> int:
        """The home's size without free SQLite pages."""
        return sum(self.used_bytes_by_file.values())


def add(counts: dict[str, int], key: str, n: int) -> None:
    """counts[key] += n."""
    counts[key] = counts.get(key, 0) + n


def home_snapshot(home: Path) -> HomeSnapshot:
    """Measure a Dagster home without writing to it (no checkpoint forced)."""
    snap = HomeSnapshot(at=time.monotonic(), disk_bytes=0, wal_bytes=0)
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        with contextlib.suppress(FileNotFoundError):  # a run's compute log may be rotating
            size = path.stat().st_size
            snap.disk_bytes += size
            kind = file_kind(path.relative_to(home))
            if path.name.endswith(("-wal", "-shm")):
                snap.wal_bytes += size
            elif path.name.endswith(".db"):  # the no-run shard is named ".db"
                fig = sqlite_figures(path)
                add(snap.bytes_by_file, kind, fig["bytes"])
                add(snap.used_bytes_by_file, kind, fig["used_bytes"])
                for table, n in fig["table_bytes"].items():
                    add(snap.bytes_by_table, f"{kind} {table}", n)
                for table, n in fig["rows"].items():
                    add(snap.rows_by_table, f"{kind} {table}", n)
                for label, n in fig["events"].items():
                    add(snap.events, f"{kind} {label}", n)
                for label, n in fig["ticks"].items():
                    add(snap.ticks, label, n)
            else:
                add(snap.bytes_by_file, kind, size)
                add(snap.used_bytes_by_file, kind, size)
    return snap


def per_hour(before: dict[str, int], after: dict[str, int], hours: float) -> dict[str, float]:
    """Growth of each key per hour, largest first, keys that did not change left out."""
    out = {k: (after.get(k, 0) - before.get(k, 0)) / hours for k in set(before) | set(after)}
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -abs(kv[1])) if v}


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour (0 for fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 3600 * sum((t - mx) * (v - my) for t, v in points) / var


def idle_growth(snaps: list[HomeSnapshot]) -> dict[str, Any]:
    """Growth of the home over an idle period from its snapshots (first to last)."""
    first, last = snaps[0], snaps[-1]
    hours = (last.at - first.at) / 3600
    kb = 1024
    series = [(s.at - first.at, s.bytes) for s in snaps]
    return {
        "measured_seconds": round(last.at - first.at, 1),
        "snapshots": len(snaps),
        # The honest figure: SQLite files with their WAL checkpointed in, fitted over every
        # snapshot (ticks and events are written in bursts).
        "kb_per_hour": round(slope_per_hour(series) / kb, 1),
        "kb_per_hour_first_to_last": round((last.bytes - first.bytes) / kb / hours, 1),
        "used_kb_per_hour": round((last.used_bytes - first.used_bytes) / kb / hours, 1),
        # What the first version of this benchmark reported: files on disk, WAL included.
        "disk_kb_per_hour_wal_included": round(
            (last.disk_bytes - first.disk_bytes) / kb / hours, 1
        ),
        "wal_kb": [round(s.wal_bytes / kb) for s in snaps],
        "bytes_series_kb": [(round(t), round(v / kb)) for t, v in series],
        "kb_per_hour_by_file": {
            k: round(v / kb, 1)
            for k, v in per_hour(first.bytes_by_file, last.bytes_by_file, hours).items()
        },
        "kb_per_hour_by_table": {
            k: round(v / kb, 1)
            for k, v in per_hour(first.bytes_by_table, last.bytes_by_table, hours).items()
        },
        "rows_per_hour_by_table": per_hour(first.rows_by_table, last.rows_by_table, hours),
        "events_per_hour": per_hour(first.events, last.events, hours),
        "ticks_per_hour": per_hour(first.ticks, last.ticks, hours),
        "size_at_end_kb_by_file": {k: round(v / kb) for k, v in sorted(last.bytes_by_file.items())},
    }


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


def tick_retention_hours() -> dict[str, float]:
    """Hours dagster.yaml keeps sensor ticks, by tick status (skipped, success, failure)."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    days = config.get("retention", {}).get("sensor", {}).get("purge_after_days", {})
    if isinstance(days, int):
        days = dict.fromkeys(("skipped", "success", "failure"), days)
    # -1 (or no setting) keeps ticks forever: a week of them, for a week's figure.
    return {
        status.upper(): 24.0 * d if d >= 0 else float(HOURS_PER_WEEK) for status, d in days.items()
    }


def week_estimate(growth: dict[str, Any]) -> dict[str, Any]:
    """Idle growth over a week, ticks limited by their retention.

    Rows other than ticks (events, runs) are never purged: they grow for ever. Ticks are
    purged after their retention, and SQLite reuses the freed pages, so the tick table
    levels off at (bytes per hour) x (retention hours) and then stops growing.
    """
    by_table = growth["kb_per_hour_by_table"]
    tick_kb = sum(v for k, v in by_table.items() if k.endswith(" job_ticks"))
    other_kb = growth["kb_per_hour"] - tick_kb
    tick_rows: dict[str, float] = {}
    for label, n in growth["ticks_per_hour"].items():
        status = label.rsplit(" ", 1)[1]
        if status != "STARTED":  # a tick being evaluated at the snapshot: it ends skipped
            tick_rows[status] = tick_rows.get(status, 0.0) + n
    total_rows = sum(tick_rows.values()) or 1.0
    retention = tick_retention_hours()
    plateau_kb = sum(
        tick_kb * n / total_rows * min(HOURS_PER_WEEK, retention.get(status, HOURS_PER_WEEK))
        for status, n in tick_rows.items()
    )
    return {
        "unbounded_kb_per_hour": round(other_kb, 1),
        "tick_kb_per_hour": round(tick_kb, 1),
        "tick_rows_per_hour_by_status": {k: round(v) for k, v in sorted(tick_rows.items())},
        "tick_retention_hours": retention,
        "ticks_level_off_at_mb": round(plateau_kb / 1024, 1),
        "mb_per_week_after_ticks_level_off": round(other_kb * HOURS_PER_WEEK / 1024, 1),
        "mb_first_week": round((other_kb * HOURS_PER_WEEK + plateau_kb) / 1024, 1),
    }


def main_job(
    idle_seconds: float, keep: bool = False, home_sample_seconds: float = 60.0
) -> dict[str, Any]:
    """Start `sync-pipeline dev`, measure first syncs and the idle period, stop it."""
    with temp_root("bench-footprint-", keep) as tmp:
        root = Path(tmp)
        sandbox_port, ui_port = free_port_block(), free_port_block((0,))
        code_port = free_port_block((0,))  # not the default 4266: another dev may hold it
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
                    "--code-port",
                    str(code_port),
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
            # A finished run's worker process may still be exiting: idle starts without it.
            wait_until(
                "the last run worker to exit",
                lambda: (
                    not any(process_kind(cmdline(p.pid)) == "run_worker" for p in tree(proc.pid))
                ),
                timeout=120,
                poll=1.0,
            )
            settled_seconds = time.monotonic() - started
            busy = sampler.stop()
            log(f"footprint: main job settled after {settled_seconds:.0f}s; idling")
            idle = TreeSampler(proc.pid, interval=0.5).start()
            idle_started = time.monotonic()
            t_end = idle_started + idle_seconds
            snaps = [home_snapshot(home)]
            # Idling is the measurement: the sampler thread records CPU and memory while the
            # home is measured every `home_sample_seconds` (snapshots only read, ~0.1 s each).
            while time.monotonic() < t_end:
                time.sleep(max(0.0, min(home_sample_seconds, t_end - time.monotonic())))
                if proc.poll() is not None:
                    raise RuntimeError(f"sync-pipeline dev exited:\n{log_path.read_text()[-3000:]}")
                snaps.append(home_snapshot(home))
                log(
                    f"footprint: idle {snaps[-1].at - idle_started:.0f}s, home "
                    f"{snaps[-1].bytes / 1024:.0f} KB checkpointed, "
                    f"{snaps[-1].disk_bytes / 1024:.0f} KB on disk"
                )
            idle_usage = idle.stop()
            idle_wall = time.monotonic() - idle_started
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
    idle_dict = idle_usage.as_dict()
    growth = idle_growth(snaps)
    return {
        "ui_ready_seconds": round(ui_seconds, 1),
        "first_syncs_settled_seconds": round(settled_seconds, 1),
        "during_first_syncs": busy.as_dict(),
        "idle_seconds": round(idle_wall, 1),
        "idle": idle_dict,
        "idle_cpu_seconds_per_minute": round(60 * idle_usage.cpu_seconds / idle_wall, 2),
        "idle_cpu_seconds_per_minute_by_kind": {
            k: round(60 * v / idle_wall, 2) for k, v in idle_dict["cpu_seconds_by_kind"].items()
        },
        "idle_dagster_home_growth_kb_per_hour": growth["kb_per_hour"],
        "idle_dagster_home": growth,
        "idle_week": week_estimate(growth),
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
    previous: list[dict[str, Any]] | None = None,
    *,
    quick: bool = False,
    idle_seconds: float = 0,
    home_sample_seconds: float = 0,
    sweeps_too: bool = True,
    keep: bool = False,
) -> dict[str, Any]:
    """Measure the main job; take sweep figures from `previous` results (or measure them)."""
    idle = idle_seconds or (IDLE_SECONDS_QUICK if quick else IDLE_SECONDS)
    every = home_sample_seconds or min(60.0, idle / 6)
    job = main_job(idle, keep=keep, home_sample_seconds=every)
    week = job["idle_week"]
    result: dict[str, Any] = {
        "benchmark": "footprint",
        "main_job": job,
        "peak_rss_single_athlete_run_mb": job["during_first_syncs"]["peak_rss_by_kind_mb"].get(
            "run_worker"
        ),
        "main_job_idle_rss_mb": job["idle"]["peak_rss_sum_mb"],
        "main_job_idle_rss_by_kind_mb": job["idle"]["peak_rss_by_kind_mb"],
        "idle_dagster_home_growth_kb_per_hour": job["idle_dagster_home_growth_kb_per_hour"],
        # Steady state: what a week adds once skipped ticks are purged as fast as they come.
        "idle_dagster_home_growth_mb_per_week": week["mb_per_week_after_ticks_level_off"],
        "idle_dagster_home_first_week_mb": week["mb_first_week"],
    }
    if not sweeps_too:
        return result
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
    result["storage"] = storage_per_athlete(sweeps)
    result["peak_rss_sweep_run_mb"] = {
        m: r["pipeline"]["peak_rss_by_kind_mb"].get("run_worker") for m, r in sweeps.items()
    }
    return result


def table_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows for the summary table."""
    job = result["main_job"]
    by_kind = job["idle_cpu_seconds_per_minute_by_kind"]
    top = sorted(by_kind.items(), key=lambda kv: -kv[1])[:3]
    growth = job["idle_dagster_home"]
    files = sorted(growth["kb_per_hour_by_file"].items(), key=lambda kv: -kv[1])[:3]
    rows = [
        ["footprint", "main job idle RSS", f"{result['main_job_idle_rss_mb']} MB",
         f"{job['idle_cpu_seconds_per_minute']} CPU-s/min idle over {job['idle_seconds']:.0f} s",
         ", ".join(f"{k} {v}" for k, v in top)],
        ["", "sync run peak RSS", f"single athlete {result['peak_rss_single_athlete_run_mb']} MB",
         f"sweep {result.get('peak_rss_sweep_run_mb', '-')}"],
        ["", "Dagster home idle", f"{result['idle_dagster_home_growth_kb_per_hour']} KB/hour",
         f"{result['idle_dagster_home_growth_mb_per_week']} MB/week once ticks level off "
         f"(first week {result['idle_dagster_home_first_week_mb']} MB)",
         ", ".join(f"{k} {v}" for k, v in files)],
    ]  # fmt: skip
    if "storage" in result:
        rows.append(["", "Dagster home / athlete / week",
                     f"{result['storage']['kb_per_athlete_per_week']} KB", "", ""])  # fmt: skip
    return rows


def main() -> None:
    """Run and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=0,
        help=f"Idle window (default {IDLE_SECONDS:.0f} s, --quick {IDLE_SECONDS_QUICK:.0f} s).",
    )
    parser.add_argument(
        "--home-sample-seconds",
        type=float,
        default=0,
        help="Seconds between measurements of the Dagster home (default: idle/6, at most 60).",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--main-job-only",
        action="store_true",
        help="Skip the sweep storage figures (items 2 and 3 need sweep runs when run alone).",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temp directory.")
    args = parser.parse_args()
    result = run(
        None,
        quick=args.quick,
        idle_seconds=args.idle_seconds,
        home_sample_seconds=args.home_sample_seconds,
        sweeps_too=not args.main_job_only,
        keep=args.keep,
    )
    print_table(table_rows(result), ["benchmark", "figure", "", ""])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
