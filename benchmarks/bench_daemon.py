"""A Dagster home with the project's ``dagster.yaml``, the real daemon and waiting on runs.

The daemon runs ``dagster-daemon run -w workspace.yaml`` in its own session with a temp
working directory (so a project ``.env`` cannot redirect it); runs are awaited by polling
the instance's run records against a deadline."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from bench_appdb import chunks
from bench_paths import (
    BIN,
    CLIENT_ID,
    CLIENT_SECRET,
    DUMMY_PLATFORM_ENV,
    PARTITIONS,
    PROJECT_ROOT,
    WORKSPACE,
)

from sync_pipeline.core.resources import AppDatabaseResource


def dagster_env(
    home: Path, app_db: AppDatabaseResource, sandbox_url: str, time_scale: int = 1
) -> dict[str, str]:
    """Environment of the daemon, its code server, run workers and CLI calls."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNC_"))}
    env.update(DUMMY_PLATFORM_ENV)
    env.update(
        {
            "DAGSTER_HOME": str(home),
            "SYNC_DATABASE_URL": app_db.url,
            "SYNC_TOKEN_KEY": app_db.token_key,
            "STRAVA_CLIENT_ID": CLIENT_ID,
            "STRAVA_CLIENT_SECRET": CLIENT_SECRET,
            "STRAVA_BASE_URL": sandbox_url,
            "STRAVA_TIME_SCALE": str(time_scale),
            "STRAVA_STREETS_FILE": "",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def new_dagster_home(root: Path, name: str = "dagster_home") -> Path:
    """A fresh Dagster home holding the project's dagster.yaml."""
    home = root / name
    home.mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def open_instance(home: Path) -> dg.DagsterInstance:
    """The Dagster instance of a home (same storage the daemon uses)."""
    return dg.DagsterInstance.from_config(str(home))


def register_partitions(instance: dg.DagsterInstance, athlete_ids: Sequence[int]) -> float:
    """Add the athletes as dynamic partitions (what the partition sensor would do); seconds."""
    started = time.perf_counter()
    existing = set(instance.get_dynamic_partitions(PARTITIONS))
    keys = [str(a) for a in athlete_ids if str(a) not in existing]
    for chunk in chunks(keys, 5000):
        instance.add_dynamic_partitions(PARTITIONS, list(chunk))
    return time.perf_counter() - started


class Daemon:
    """`dagster-daemon run -w workspace.yaml` in its own session, stopped by its pid."""

    def __init__(self, env: dict[str, str], workdir: Path, log_path: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.rusage: resource.struct_rusage | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        """The daemon's pid (also its session id)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Daemon:
        """Start the daemon."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as sink:
            self.proc = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(WORKSPACE)],
                cwd=self.workdir,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.time()
        return self

    def alive(self) -> bool:
        """Whether the daemon process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; then kill what is left of its session (only its own)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = 0
                    self.rusage = usage
                    break
                time.sleep(0.1)
            else:
                proc.kill()
                _pid, _status, self.rusage = os.wait4(proc.pid, 0)
                proc.returncode = -9
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the daemon's output."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(
    what: str,
    probe: Callable[[], Any],
    *,
    timeout: float,
    poll: float = 0.5,
    daemon: Daemon | None = None,
) -> Any:
    """Poll `probe` until truthy; raise at the deadline or if the daemon died."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if daemon is not None and not daemon.alive():
            raise RuntimeError(f"{what}: dagster-daemon exited\n{daemon.log_tail()}")
        if time.monotonic() > deadline:
            tail = daemon.log_tail() if daemon else ""
            raise TimeoutError(f"{what}: not within {timeout:.0f} s\n{tail}")
        time.sleep(poll)


def daemon_ready(instance: dg.DagsterInstance, sensor: str = "partitions_sensor") -> bool:
    """The daemon heartbeats and has evaluated `sensor` at least once (code loaded)."""
    beats = instance.get_daemon_heartbeats()
    if not {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= set(beats):
        return False
    for st in instance.all_instigator_state():
        if st.origin.instigator_name == sensor:
            ticks = instance.get_ticks(st.instigator_origin_id, st.selector_id, limit=1)
            return bool(ticks) and ticks[0].status.value != "STARTED"  # a tick still running
    return False


def wait_runs(
    instance: dg.DagsterInstance,
    run_ids: Sequence[str],
    *,
    timeout: float,
    daemon: Daemon | None = None,
    poll: float = 1.0,
) -> list[Any]:
    """Wait until every run is finished; returns their run records."""

    def done() -> list[Any] | None:
        records = instance.get_run_records(filters=dg.RunsFilter(run_ids=list(run_ids)))
        if len(records) == len(run_ids) and all(r.dagster_run.is_finished for r in records):
            return list(records)
        return None

    result: list[Any] = wait_until(
        f"{len(run_ids)} runs to finish", done, timeout=timeout, poll=poll, daemon=daemon
    )
    return result


def run_failures(instance: dg.DagsterInstance, records: Sequence[Any]) -> list[str]:
    """Messages of failed runs' failure events."""
    out = []
    for r in records:
        run = r.dagster_run
        if run.status != dg.DagsterRunStatus.SUCCESS:
            msgs = [
                str(e.dagster_event.message if e.dagster_event else e.message)[:300]
                for e in instance.all_logs(run.run_id)
                if e.dagster_event is not None and e.dagster_event.is_failure
            ]
            out.append(f"{run.run_id[:8]} {run.status.value}: {' | '.join(msgs)}")
    return out
