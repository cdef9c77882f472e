"""Item 4 — scale: `athletes` registered as partitions (100,000 by default).

With the athletes connected in the app database and registered as `strava_athletes`
partitions in a fresh Dagster home:

1. `sync-pipeline status` (three times; median and each).
2. The partition sensor's tick (`partitions_sensor`, real daemon) in steady state, and
   when `connect` more athletes connect at once (tick start to end from the tick record).
   The new athletes' first-sync runs it requests are counted; the daemon is then stopped.
3. `sync-pipeline status` again, with those runs queued.
4. The schedule tick that plans the weekly full sweep (`strava_weekly_full_sync`): its
   state is back-dated so the daemon evaluates the latest Monday 02:00 UTC tick when it
   starts (`backdate_schedule.py`); tick creation to end from the tick record (the creation
   time has one-second resolution) and the runs it submitted.
5. The asset's partitions page in the UI: `dagster dev` on the home, headless Chromium
   driven over the DevTools protocol loads `/assets/strava_activities?view=partitions`
   until the partition count and the per-status counts are on the page (cold, then warm).
   Queued runs are deleted first so the daemon inside `dagster dev` idles.

Baseline column: the same question answered by plain SQL on the app database (count by
state, list new athletes), to show the floor.

Run alone: ``.venv/bin/python benchmarks/scale.py --athletes 100000 --connect 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import websockets
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
from bench_paths import BENCH_DIR, BIN, PYTHON, WORKSPACE
from bench_report import log, print_table, temp_root
from bench_sandbox import start_sandbox
from footprint import free_port_block
from sqlalchemy import func, select

from sync_pipeline.core import db
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Athlete

TARGET = 10.0
CHROMIUM = "/usr/bin/chromium"


def timed_cli(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds a CLI command takes (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(args, env=env, cwd=cwd, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - t0


def status_times(env: dict[str, str], cwd: Path, repeat: int = 3) -> dict[str, Any]:
    """`sync-pipeline status --source strava` several times."""
    times = [
        timed_cli([str(BIN / "sync-pipeline"), "status", "--source", "strava"], env, cwd)
        for _ in range(repeat)
    ]
    return {"median": round(statistics.median(times), 2), "each": [round(t, 2) for t in times]}


def ticks(instance: dg.DagsterInstance, name: str) -> list[Any]:
    """Ticks of an instigator, newest first."""
    for st in instance.all_instigator_state():
        if st.origin.instigator_name == name:
            return list(instance.get_ticks(st.instigator_origin_id, st.selector_id, limit=50))
    return []


def tick_seconds(tick: Any) -> float | None:
    """Evaluation time of a sensor tick (start to end)."""
    end = tick.tick_data.end_timestamp
    return round(end - tick.timestamp, 2) if end else None


def sensor_tick(
    instance: dg.DagsterInstance,
    daemon: Daemon,
    app_db: Any,
    sandbox: Any,
    new_ids: list[int],
) -> dict[str, Any]:
    """Steady-state ticks, then the tick that sees `new_ids` connect at once."""
    name = "partitions_sensor"

    def finished_ticks() -> list[Any]:
        return [t for t in ticks(instance, name) if t.tick_data.end_timestamp]

    wait_until("two sensor ticks", lambda: len(finished_ticks()) >= 2, timeout=180, daemon=daemon)
    steady = [tick_seconds(t) for t in finished_ticks()[:3]]
    connected_at = time.time()
    connect_seconds = connect_athletes(app_db, sandbox, new_ids)
    after = time.time()

    def tick_with_adds() -> Any:
        for t in finished_ticks():
            if t.timestamp >= connected_at and t.tick_data.dynamic_partitions_request_results:
                return t
        return None

    tick = wait_until("the tick adding partitions", tick_with_adds, timeout=1800, daemon=daemon)
    added = sum(
        len(r.added_partitions or []) for r in tick.tick_data.dynamic_partitions_request_results
    )
    return {
        "steady_state_tick_seconds": steady,
        "connect_seconds": round(connect_seconds, 2),
        "tick_seconds": tick_seconds(tick),
        "tick_started_after_connect_s": round(tick.timestamp - after, 2),
        "partitions_added": added,
        "runs_requested": len(tick.tick_data.run_ids or []),
    }


def schedule_tick(
    instance: dg.DagsterInstance, env: dict[str, str], root: Path, home: Path
) -> dict[str, Any]:
    """Back-date the weekly schedule, start the daemon, time the caught-up tick."""
    name = "strava_weekly_full_sync"
    now = dt.datetime.now(dt.UTC)
    monday = (now - dt.timedelta(days=now.weekday())).replace(
        hour=2, minute=0, second=0, microsecond=0
    )
    if monday > now:
        monday -= dt.timedelta(days=7)
    workdir = root / "daemon_work"
    out = subprocess.run(
        [
            PYTHON,
            str(BENCH_DIR / "backdate_schedule.py"),
            "-w",
            str(WORKSPACE),
            name,
            "--since",
            str(monday.timestamp() - 60),
        ],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    if "BACKDATED" not in out.stdout:
        raise RuntimeError(f"backdate failed: {out.stdout[-1000:]} {out.stderr[-2000:]}")
    daemon = Daemon(env, workdir, root / "daemon_schedule.log").start()
    try:

        def done() -> Any:
            for t in ticks(instance, name):
                if t.tick_data.end_timestamp and t.timestamp == monday.timestamp():
                    return t
            return None

        tick = wait_until("the weekly schedule tick", done, timeout=900, daemon=daemon)
    finally:
        daemon.stop()
    created = tick_created(home, tick.tick_id)
    return {
        "scheduled_for": monday.isoformat(),
        "status": tick.status.value,
        "tick_seconds": round(tick.tick_data.end_timestamp - created, 1) if created else None,
        "runs_submitted": len(tick.tick_data.run_ids or []),
    }


def tick_created(home: Path, tick_id: int) -> float | None:
    """Creation time of a tick row (SQLite schedule storage; one-second resolution)."""
    path = home / "schedules" / "schedules.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT create_timestamp FROM job_ticks WHERE id = ?", (tick_id,)
        ).fetchone()
    if not row:
        return None
    value = dt.datetime.fromisoformat(str(row[0])).replace(tzinfo=dt.UTC)
    return value.timestamp()


async def load_page(cdp_port: int, url: str, markers: list[str], timeout: float) -> float:
    """Navigate a Chromium tab to `url`; seconds until every marker is in the page's text."""
    async with httpx.AsyncClient() as client:
        targets = (await client.get(f"http://127.0.0.1:{cdp_port}/json/list")).json()
    page = next(t for t in targets if t.get("type") == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
        seq = 0

        async def call(method: str, params: dict[str, Any] | None = None) -> Any:
            nonlocal seq
            seq += 1
            await ws.send(json.dumps({"id": seq, "method": method, "params": params or {}}))
            while True:
                message = json.loads(await ws.recv())
                if message.get("id") == seq:
                    return message.get("result", {})

        await call("Page.enable")
        await call("Page.navigate", {"url": "about:blank"})
        t0 = time.perf_counter()
        await call("Page.navigate", {"url": url})
        checks = " && ".join(f"document.body.innerText.includes({json.dumps(m)})" for m in markers)
        expression = f"!!document.body && {checks}"
        while time.perf_counter() - t0 < timeout:
            result = await call("Runtime.evaluate", {"expression": expression})
            if result.get("result", {}).get("value") is True:
                return time.perf_counter() - t0
            await asyncio.sleep(0.1)
        text = await call("Runtime.evaluate", {"expression": "document.body.innerText"})
        shown = str(text.get("result", {}).get("value", ""))[:1500]
    raise TimeoutError(f"{markers!r} not on {url} within {timeout:.0f}s; page text:\n{shown}")


def ui_page(env: dict[str, str], root: Path, markers: list[str]) -> dict[str, Any]:
    """`dagster dev` on the home; load the partitions page with headless Chromium."""
    ui_port, cdp_port = free_port_block((0,)), free_port_block((0,))
    log_path = root / "dagster_dev.log"
    with log_path.open("wb") as sink:
        dev = subprocess.Popen(
            [
                str(BIN / "dagster"),
                "dev",
                "-w",
                str(WORKSPACE),
                "-h",
                "127.0.0.1",
                "-p",
                str(ui_port),
            ],
            env=env,
            cwd=root / "daemon_work",
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    chrome: subprocess.Popen[bytes] | None = None
    try:

        def up() -> bool:
            if dev.poll() is not None:
                raise RuntimeError(f"dagster dev exited:\n{log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{ui_port}/server_info", timeout=2).is_success
            except httpx.HTTPError:
                return False

        wait_until("dagster dev UI", up, timeout=300, poll=1.0)
        chrome = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--remote-debugging-port={cdp_port}",
                f"--user-data-dir={root / 'chrome'}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def cdp_up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{cdp_port}/json/list", timeout=2).is_success
            except httpx.HTTPError:
                return False

        wait_until("chromium DevTools", cdp_up, timeout=60, poll=0.5)
        url = f"http://127.0.0.1:{ui_port}/assets/strava_activities?view=partitions"
        cold = asyncio.run(load_page(cdp_port, url, markers, 180))
        warm = asyncio.run(load_page(cdp_port, url, markers, 180))
        return {
            "url_path": "/assets/strava_activities?view=partitions",
            "cold_seconds": round(cold, 2),
            "warm_seconds": round(warm, 2),
            "markers": markers,
        }
    finally:
        for proc in (chrome, dev):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is dev else signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def sql_floor(app_db: Any) -> float:
    """Plain SQL answering status' question about athletes (count by state): seconds."""
    t0 = time.perf_counter()
    with transaction(app_db.url) as s:
        s.execute(select(Athlete.state, func.count()).group_by(Athlete.state)).all()
    return round(time.perf_counter() - t0, 3)


def delete_unfinished_runs(instance: dg.DagsterInstance) -> int:
    """Delete queued (and interrupted) runs so a later daemon idles."""
    runs = instance.get_runs(
        dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ]
        )
    )
    for run in runs:
        instance.delete_run(run.run_id)
    return len(runs)


def run(athletes: int, connect: int = 1000, keep: bool = False, ui: bool = True) -> dict[str, Any]:
    """All scale measurements at `athletes` partitions."""
    result: dict[str, Any] = {"benchmark": "scale", "athletes": athletes, "connect": connect}
    with temp_root("bench-scale-", keep) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        sandbox = start_sandbox([0] * (athletes + connect))
        try:
            ids = sandbox.state.athlete_ids()
            base, new = ids[:athletes], ids[athletes:]
            app_db = create_app_db(root / "app.db")
            connect_seconds = connect_athletes(app_db, sandbox, base)
            home = new_dagster_home(root)
            env = dagster_env(home, app_db, sandbox.url)
            (root / "daemon_work").mkdir()
            instance = open_instance(home)
            partition_seconds = register_partitions(instance, base)
            result["setup_seconds"] = {
                "total": round(time.perf_counter() - t0, 1),
                "connect": round(connect_seconds, 1),
                "register_partitions": round(partition_seconds, 1),
            }
            log(f"scale: {athletes:,} athletes registered; status")
            result["status_idle"] = status_times(env, root / "daemon_work")
            result["baseline_sql_count_by_state_seconds"] = sql_floor(app_db)
            log("scale: partition sensor")
            daemon = Daemon(env, root / "daemon_work", root / "daemon.log").start()
            try:
                wait_until(
                    "daemon ready", lambda: daemon_ready(instance), timeout=600, daemon=daemon
                )
                result["sensor"] = sensor_tick(instance, daemon, app_db, sandbox, new)
            finally:
                daemon.stop()
            result["status_with_queued_runs"] = status_times(env, root / "daemon_work")
            result["runs_deleted_before_schedule"] = delete_unfinished_runs(instance)
            log("scale: weekly schedule tick")
            result["schedule"] = schedule_tick(instance, env, root, home)
            result["runs_deleted_before_ui"] = delete_unfinished_runs(instance)
            if ui:
                log("scale: UI partitions page")
                # The header count and the status counts: the partitions and their
                # statuses have loaded.
                markers = [f"{len(ids):,} Partitions", "Missing ("]
                result["ui"] = ui_page(env, root, markers)
            instance.dispose()
        finally:
            sandbox.stop()
            db.dispose_engines()
    checks = {
        "status": result["status_idle"]["median"],
        "status_with_queued_runs": result["status_with_queued_runs"]["median"],
        "sensor_tick": result["sensor"]["tick_seconds"],
        "schedule_tick": result["schedule"]["tick_seconds"],
    }
    if "ui" in result:
        checks["ui_cold"] = result["ui"]["cold_seconds"]
    result["target_seconds"] = TARGET
    result["meets_target"] = {k: v is not None and v < TARGET for k, v in checks.items()}
    return result


def table_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows for the summary table."""
    n = f"n={result['athletes']:,}"
    ui = result.get("ui", {})
    return [
        [f"scale {n}", "status (idle / 1k queued)", f"{result['status_idle']['median']}s / "
         f"{result['status_with_queued_runs']['median']}s",
         f"SQL floor {result['baseline_sql_count_by_state_seconds']}s"],
        ["", f"sensor tick (+{result['connect']})", f"{result['sensor']['tick_seconds']}s",
         f"steady {result['sensor']['steady_state_tick_seconds']}s"],
        ["", "weekly schedule tick", f"{result['schedule']['tick_seconds']}s",
         f"{result['schedule']['runs_submitted']} runs"],
        ["", "UI partitions page", f"cold {ui.get('cold_seconds')}s",
         f"warm {ui.get('warm_seconds')}s"],
    ]  # fmt: skip


def main() -> None:
    """Run and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--athletes", type=int, default=100_000)
    parser.add_argument("--connect", type=int, default=1000)
    parser.add_argument("--no-ui", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    result = run(args.athletes, args.connect, args.keep, ui=not args.no_ui)
    print_table(table_rows(result), ["benchmark", "figure", "", ""])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
