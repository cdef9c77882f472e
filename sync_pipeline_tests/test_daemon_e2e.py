"""End to end through the real Dagster daemon: sensor → run queue → run workers → app DB.

A Dagster home with the project's dagster.yaml, a migrated app database and the Strava
sandbox (in this process, on loopback) are set up in a temp dir; `dagster-daemon run` loads
the project's workspace.yaml in a subprocess. Subprocesses run with the temp dir as their
working directory, so the project's own `.env` (which the Dagster CLI loads from the working
directory, over the environment) cannot redirect them to another database.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
from sqlalchemy import func, select

from sync_pipeline.core import db, priorities
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import StravaActivity
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.strava.athletes import connect_via_oauth
from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.source import STRAVA, STRAVA_ACTIVITIES
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline_tests.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    Sandbox,
    connect,
    fresh_database,
    make_strava,
    start_sandbox,
)

pytestmark = pytest.mark.daemon

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
BIN = Path(sys.executable).parent
ACTIVITY_COUNTS = [5, 230, 1]  # one athlete needs two pages
DEADLINE = 180.0
POLL = 1.0
T = TypeVar("T")


@dataclass
class Deployment:
    """Everything the daemon runs against, plus the daemon itself."""

    home: Path
    workdir: Path
    env: dict[str, str]
    app_db: AppDatabaseResource
    sandbox: Sandbox
    athletes: list[int]
    daemon: subprocess.Popen[bytes]
    daemon_log: Path
    instance: dg.DagsterInstance

    def log_tail(self, lines: int = 60) -> str:
        text = self.daemon_log.read_text(errors="replace") if self.daemon_log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        """Runs, their failures and the daemon's stderr tail, for a failure message."""
        out = []
        for run in self.instance.get_runs():
            out.append(f"run {run.run_id[:8]} {run.job_name} {run.status.value} {run.tags}")
            if run.status == dg.DagsterRunStatus.FAILURE:
                for entry in self.instance.all_logs(run.run_id):
                    event = entry.dagster_event
                    if event is not None and event.is_failure:
                        out.append(f"    {event.event_type_value}: {event.message}")
        return "\n".join([*out, "--- dagster-daemon stderr (tail) ---", self.log_tail()])

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = DEADLINE) -> T:
        """Poll `probe` until it returns a truthy value; fail with diagnostics at the deadline.

        Each poll waits on the daemon process itself, so a daemon that dies fails at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f} s\n{self.diagnostics()}")
            try:
                code = self.daemon.wait(timeout=POLL)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"{what}: dagster-daemon exited with {code}\n{self.diagnostics()}")


def stored_counts(db_url: str) -> dict[int, int]:
    with transaction(db_url) as s:
        rows = s.execute(
            select(StravaActivity.athlete_id, func.count()).group_by(StravaActivity.athlete_id)
        ).all()
    return {int(a): int(n) for a, n in rows}


def stored_ids(db_url: str, athlete_id: int) -> set[int]:
    with transaction(db_url) as s:
        return set(
            s.scalars(select(StravaActivity.id).where(StravaActivity.athlete_id == athlete_id))
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon, then kill it; then kill whatever it left in its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: only processes it started


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("daemon_e2e")
    home, workdir = root / "dagster_home", root / "work"
    home.mkdir()
    workdir.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")

    with fresh_database(root) as db_url:
        yield from _deploy(root, home, workdir, db_url)


def _deploy(root: Path, home: Path, workdir: Path, db_url: str) -> Iterator[Deployment]:
    """Sandbox, connected athletes and a running daemon against `db_url`."""
    app_db = AppDatabaseResource(url=db_url, token_key=generate_key())
    server: SandboxServer
    server, sandbox = start_sandbox()
    connector = make_strava(app_db, sandbox)
    try:
        athletes = [connect(connector, sandbox, n) for n in ACTIVITY_COUNTS]
    finally:
        connector.close()

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNC_"))},
        "DAGSTER_HOME": str(home),
        "SYNC_DATABASE_URL": db_url,
        "SYNC_TOKEN_KEY": app_db.token_key,
        "STRAVA_CLIENT_ID": CLIENT_ID,
        "STRAVA_CLIENT_SECRET": CLIENT_SECRET,
        "STRAVA_BASE_URL": sandbox.url,
        "STRAVA_TIME_SCALE": "1",
        "STRAVA_STREETS_FILE": "",  # street matching off: these tests are about the queue
        "PYTHONUNBUFFERED": "1",
    }
    # Create the instance (and its SQLite storage) before the daemon starts: two processes
    # initializing the same storage at once race on its schema tables.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        instance = dg.DagsterInstance.get()
    instance.get_runs_count()  # run storage
    instance.fetch_materializations(dg.AssetKey("warm_up"), limit=1)  # event log storage
    instance.all_instigator_state()  # schedule storage
    log = root / "daemon.log"
    with log.open("wb") as sink:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Deployment(home, workdir, env, app_db, sandbox, athletes, daemon, log, instance)
    finally:
        _stop(daemon)
        instance.dispose()
        server.stop()
        db.dispose_engines()


def _first_syncs_done(dep: Deployment) -> dict[str, dg.DagsterRun] | None:
    """Each athlete's partition materialized by a successful run, else None."""
    keys = {str(a) for a in dep.athletes}
    materialized = dep.instance.get_materialized_partitions(STRAVA_ACTIVITIES)
    if not keys <= materialized:
        return None
    runs: dict[str, dg.DagsterRun] = {}
    for key in keys:
        done = dep.instance.get_runs(
            dg.RunsFilter(
                job_name="strava_athlete_sync",
                tags={"dagster/partition": key},
                statuses=[dg.DagsterRunStatus.SUCCESS],
            )
        )
        if not done:
            return None
        runs[key] = done[-1]  # the oldest: the sensor's first sync
    return runs


def test_sensor_adds_partitions_and_daemon_runs_first_full_syncs(deployment: Deployment) -> None:
    dep = deployment
    keys = sorted(str(a) for a in dep.athletes)

    runs = dep.wait_for("first syncs of every athlete", lambda: _first_syncs_done(dep))

    assert sorted(dep.instance.get_dynamic_partitions(strava_athletes.name or "")) == keys
    for key, run in runs.items():
        assert run.tags.get(priorities.PRIORITY_TAG) == str(priorities.NEW_USER)
        assert run.tags.get(priorities.TRIGGER_TAG) == "new_athlete"
        assert run.run_config == {"ops": {"strava_activities": {"config": {"full": True}}}}
        [record] = dep.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=STRAVA_ACTIVITIES, asset_partitions=[key]), limit=1
        ).records
        assert record.run_id == run.run_id
    failed = dep.instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert failed == [], dep.diagnostics()
    assert stored_counts(dep.app_db.url) == {
        a: n for a, n in zip(dep.athletes, ACTIVITY_COUNTS, strict=True) if n
    }
    for athlete in dep.athletes:
        assert stored_ids(dep.app_db.url, athlete) == set(dep.sandbox.state.activity_ids(athlete))
    assert dep.sandbox.state.stats()["rate_limited"] == 0


def test_run_workers_print_one_line_per_sync_and_no_debug_events(deployment: Deployment) -> None:
    dep = deployment
    runs = dep.wait_for("first syncs of every athlete", lambda: _first_syncs_done(dep))

    # The daemon's output holds its code server's and the run workers' (as `sync-pipeline dev`'s
    # terminal does): dagster.yaml's `python_logs` keeps Dagster's DEBUG event lines out.
    lines = dep.daemon_log.read_text(errors="replace").splitlines()
    debug = [line for line in lines if " - DEBUG - " in line]
    assert debug == [], "\n".join(debug[:20])
    for key, run in runs.items():
        ours = (
            rf".* - dagster - INFO - strava_athlete_sync - {run.run_id} - strava_activities - "
            rf"athlete {key} on Strava: succeeded \(full\), \d+ API calls"
        )
        assert [line for line in lines if re.fullmatch(ours, line)], f"no line of run {run.run_id}"
        # The event log (the UI) keeps every event of the run, DEBUG ones included.
        types = {
            e.dagster_event.event_type_value
            for e in dep.instance.all_logs(run.run_id)
            if e.dagster_event is not None
        }
        assert {"STEP_START", "STEP_OUTPUT", "ASSET_MATERIALIZATION", "STEP_SUCCESS"} <= types


def test_manual_launch_is_queued_at_priority_10_and_run_by_the_daemon(
    deployment: Deployment,
) -> None:
    dep = deployment
    # The partition must exist and its first sync be over (one run per partition at a time).
    dep.wait_for("first syncs of every athlete", lambda: _first_syncs_done(dep))
    athlete = dep.athletes[1]
    new_ids = dep.sandbox.state.add_activities(athlete, 3)
    run_id = str(uuid.uuid4())

    launched = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "launch",
            "-w",
            str(WORKSPACE),
            "-j",
            "strava_athlete_sync",
            "--run-id",
            run_id,
            "--tags",
            json.dumps({"dagster/partition": str(athlete), "dagster/priority": "10"}),
        ],
        cwd=dep.workdir,
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]

    queued = dep.instance.get_run_by_id(run_id)
    assert queued is not None
    assert queued.tags.get("dagster/priority") == "10"
    assert queued.tags.get("dagster/partition") == str(athlete)
    finished = dep.wait_for(
        "the manually launched run to finish",
        lambda: r if (r := dep.instance.get_run_by_id(run_id)) and r.is_finished else None,
    )
    assert finished.status == dg.DagsterRunStatus.SUCCESS, dep.diagnostics()
    # The run went through the queue: enqueued by the launch, started by the daemon.
    types = {
        e.dagster_event.event_type_value
        for e in dep.instance.all_logs(run_id)
        if e.dagster_event is not None
    }
    assert {"PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_SUCCESS"} <= types
    [record] = dep.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=STRAVA_ACTIVITIES, asset_partitions=[str(athlete)]),
        limit=1,
    ).records
    assert record.run_id == run_id
    md = record.asset_materialization
    assert md is not None
    assert md.metadata["mode"].value == "incremental"
    assert md.metadata["activities_added"].value == 3
    assert stored_ids(dep.app_db.url, athlete) == set(dep.sandbox.state.activity_ids(athlete))
    assert set(new_ids) <= stored_ids(dep.app_db.url, athlete)


def _started_pid(dep: Deployment, run_id: str) -> int | None:
    """The run worker's pid, from the engine event the worker logs when it starts."""
    for entry in dep.instance.all_logs(run_id):
        match = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
        if match:
            return int(match.group(1))
    return None


def test_run_worker_killed_mid_sync_fails_then_retry_resumes_from_checkpoint(
    deployment: Deployment,
) -> None:
    dep = deployment
    dep.wait_for("first syncs of every athlete", lambda: _first_syncs_done(dep))
    state = dep.sandbox.state
    athlete = state.add_athlete(2000)  # 10 pages of 200, then an empty one
    # Slow pages so that the sync is surely in the middle when the worker is killed.
    state.inject_fault(
        "slow", count=100, path_contains="/athlete/activities", athlete_id=athlete, delay=1.5
    )
    strava = make_strava(dep.app_db, dep.sandbox)
    try:
        assert connect_via_oauth(strava, auto_approve=True, sandbox_athlete_id=athlete) == athlete
    finally:
        strava.close()
    key = str(athlete)
    checkpoints = dep.app_db.checkpoints("strava")

    def in_progress() -> tuple[str, int] | None:
        st = checkpoints.get(key)
        if st is None or st.mode != "full" or st.pages_done < 2 or not st.lease_owner:
            return None
        pid = _started_pid(dep, st.lease_owner)
        return (st.lease_owner, pid) if pid else None

    run_id, pid = dep.wait_for("the first sync to be 2+ pages in", in_progress, timeout=120)
    os.kill(pid, signal.SIGKILL)

    failed = dep.wait_for(
        "the killed run to be marked failed",
        lambda: r if (r := dep.instance.get_run_by_id(run_id)) and r.is_finished else None,
        timeout=120,
    )
    assert failed.status == dg.DagsterRunStatus.FAILURE
    retry = dep.wait_for(
        "the automatic retry to succeed",
        lambda: next(
            (
                r
                for r in dep.instance.get_runs(
                    dg.RunsFilter(tags={"dagster/parent_run_id": run_id})
                )
                if r.status == dg.DagsterRunStatus.SUCCESS
            ),
            None,
        ),
        timeout=240,
    )
    assert retry.tags.get("dagster/partition") == key
    [record] = dep.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=STRAVA_ACTIVITIES, asset_partitions=[key]), limit=1
    ).records
    assert record.run_id == retry.run_id
    md = record.asset_materialization
    assert md is not None
    assert md.metadata["resumed_from_checkpoint"].value is True
    # Resumed, not restarted: the retry fetched fewer than all 11 pages.
    assert int(str(md.metadata["pages"].value)) < 11
    # No data lost, none duplicated (ids are primary keys; counts match exactly).
    assert stored_counts(dep.app_db.url)[athlete] == 2000
    assert stored_ids(dep.app_db.url, athlete) == set(state.activity_ids(athlete))
    state.clear_faults()


def test_a_sweep_queued_behind_a_flood_of_interactive_runs_starts_before_the_flood_ends(
    deployment: Deployment,
) -> None:
    dep = deployment
    dep.wait_for("first syncs of every athlete", lambda: _first_syncs_done(dep))
    state = dep.sandbox.state
    strava = make_strava(dep.app_db, dep.sandbox)
    flood: list[str] = []
    try:
        # Eight new athletes: eight first-sync runs at priority 5 (interactive), each held
        # ~8 s by a slow sandbox, two at a time: the flood lasts far longer than a launch.
        for _ in range(8):
            athlete = state.add_athlete(3)
            state.inject_fault(
                "slow", count=20, path_contains="/athlete/activities", athlete_id=athlete, delay=8
            )
            connect_via_oauth(strava, auto_approve=True, sandbox_athlete_id=athlete)
            flood.append(str(athlete))
    finally:
        strava.close()

    def flood_runs() -> list[dg.RunRecord]:
        return [
            r
            for key in flood
            for r in dep.instance.get_run_records(
                dg.RunsFilter(job_name="strava_athlete_sync", tags={"dagster/partition": key})
            )
        ]

    dep.wait_for("the flood to be queued", lambda: len(flood_runs()) == len(flood) or None)
    sweep_id = str(uuid.uuid4())
    config = STRAVA.sweep_run_config(keys=[str(a) for a in dep.athletes])
    launched = subprocess.run(
        [
            str(BIN / "dagster"),
            "job",
            "launch",
            "-w",
            str(WORKSPACE),
            "-j",
            "strava_sweep_job",
            "--run-id",
            sweep_id,
            "--config-json",
            json.dumps(config),
        ],
        cwd=dep.workdir,
        env=dep.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    queued = dep.instance.get_run_by_id(sweep_id)
    assert queued is not None and queued.tags[priorities.LANE_TAG] == "batch"

    def finished(run_id: str) -> dg.DagsterRun | None:
        run = dep.instance.get_run_by_id(run_id)
        return run if run is not None and run.is_finished else None

    sweep = dep.wait_for("the sweep to finish", lambda: finished(sweep_id), timeout=240)
    assert sweep.status == dg.DagsterRunStatus.SUCCESS, dep.diagnostics()
    dep.wait_for(
        "the flood to finish",
        lambda: all(r.dagster_run.is_finished for r in flood_runs()) or None,
        timeout=300,
    )
    [sweep_record] = dep.instance.get_run_records(dg.RunsFilter(run_ids=[sweep_id]))
    flood_starts = [r.start_time for r in flood_runs() if r.start_time is not None]
    assert sweep_record.start_time is not None and len(flood_starts) == len(flood)
    # Priority alone would start every flood run (5) before the sweep (0); the reserved
    # capacity lets the sweep start while flood runs are still waiting.
    assert sweep_record.start_time < max(flood_starts)
    state.clear_faults()
