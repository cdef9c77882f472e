"""`sync-pipeline sync ... --direct` as a user runs it (processes with only the `.env` that
`init` wrote): a killed sync's lease, and a sync that another run holds off."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
from sqlalchemy import func, select

from sync_pipeline.core.checkpoints import Checkpoints
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import StravaActivity, SyncState
from sync_pipeline_tests.cli.conftest import project_sandboxes, run_cli, start_cli
from sync_pipeline_tests.serving import wait_until

ATHLETE = "1001"
DEADLINE = 90.0


@dataclass(frozen=True)
class Demo:
    """A project directory after `init`, its sandbox running, athlete 1001 connected."""

    cwd: Path
    sandbox_url: str
    db_url: str

    def fault(self, **body: Any) -> None:
        """Inject a sandbox fault."""
        httpx.post(f"{self.sandbox_url}/_sandbox/faults", json=body, timeout=10).raise_for_status()

    def lease(self) -> SyncState | None:
        """Athlete 1001's sync state."""
        return Checkpoints(self.db_url, "strava").get(ATHLETE)

    def wait_for_lease(self, proc: subprocess.Popen[str]) -> str:
        """Poll until a sync holds athlete 1001's lease; returns the holder."""

        def holder() -> str | None:
            state = self.lease()
            if state is not None and state.lease_owner is not None:
                return state.lease_owner
            if proc.poll() is not None:
                pytest.fail(f"the sync ended ({proc.returncode}) before taking the lease")
            return None

        return wait_until(holder, DEADLINE, what="the sync taking the lease", interval=0.1)

    def activities(self) -> int:
        """Activities stored for athlete 1001."""
        with transaction(self.db_url) as s:
            count = s.scalar(
                select(func.count())
                .select_from(StravaActivity)
                .where(StravaActivity.athlete_id == int(ATHLETE))
            )
        return int(count or 0)

    def sandbox_activities(self) -> int:
        """Athlete 1001's activities at the sandbox."""
        athletes = httpx.get(f"{self.sandbox_url}/_sandbox/athletes", timeout=10).json()
        return next(int(a["activity_count"]) for a in athletes if str(a["id"]) == ATHLETE)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """`init`, `sandbox` (Strava only) and `athletes connect`, each a process of its own."""
    with project_sandboxes(tmp_path, platforms=False) as url:
        done = run_cli(tmp_path, "athletes", "connect", "--sandbox-athlete", ATHLETE)
        assert done.returncode == 0, done.stderr
        yield Demo(tmp_path, url, f"sqlite:///{tmp_path.resolve() / '.sync_home' / 'app.db'}")


def test_a_killed_direct_sync_does_not_block_its_athlete(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo.fault(kind="slow", delay=2.0, count=100)  # keeps the first sync busy
    first = start_cli(demo.cwd, "sync", "strava", "--athlete", ATHLETE, "--direct")
    killed_run = demo.wait_for_lease(first)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    httpx.delete(f"{demo.sandbox_url}/_sandbox/faults", timeout=10).raise_for_status()
    state = demo.lease()
    assert state is not None and state.lease_owner == killed_run  # left behind, unexpired

    started = time.monotonic()
    again = run_cli(demo.cwd, "sync", "strava", "--athlete", ATHLETE, "--direct")

    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # no Dagster DEBUG lines
    assert time.monotonic() - started < 120  # not the 10 min lease
    assert '"status": "succeeded"' in again.stdout
    assert again.stdout.rstrip().splitlines()[-1].endswith("succeeded")
    assert demo.activities() == demo.sandbox_activities() > 0
    state = demo.lease()
    assert state is not None and state.lease_owner is None and state.status == "succeeded"
    # Both runs are the named job's, as the UI lists them.
    monkeypatch.setenv("DAGSTER_HOME", str(demo.cwd / ".sync_home" / "dagster"))
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        [failure] = instance.all_logs(killed_run, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert [r.job_name for r in runs] == ["strava_athlete_sync"] * 2
    assert runs[0].tags["dagster/partition"] == ATHLETE
    # The killed run is failed, with the reason, by the run that took its lease over.
    assert [(r.run_id, r.status) for r in runs] == [
        (runs[0].run_id, dg.DagsterRunStatus.SUCCESS),
        (killed_run, dg.DagsterRunStatus.FAILURE),
    ]
    assert failure.dagster_event is not None
    message = failure.dagster_event.message or ""
    assert message.startswith(f"The process of this run (pid {first.pid} on "), message
    assert message.endswith(
        f"ended before the run finished (killed?); run {runs[0].run_id} took over the lease "
        f"of strava partition {ATHLETE}."
    )
    assert runs[1].tags["dagster/will_retry"] == "false"


def test_a_sync_held_off_by_a_live_run_fails_or_waits(demo: Demo) -> None:
    # The first sync's first page takes 60 s: it holds the lease while the others start
    # (a process start-up takes seconds, more on a busy machine).
    demo.fault(kind="slow", delay=60.0, count=1, path_contains="/athlete/activities")
    first = start_cli(demo.cwd, "sync", "strava", "--athlete", ATHLETE, "--direct")
    holder = demo.wait_for_lease(first)

    waiting = start_cli(
        demo.cwd, "sync", "strava", "--athlete", ATHLETE, "--direct", "--wait", "180"
    )
    skipped = run_cli(demo.cwd, "sync", "strava", "--athlete", ATHLETE, "--direct")
    assert first.poll() is None, "the first sync ended before the second one was refused"
    waited_out, waited_err = waiting.communicate(timeout=300)
    _, first_err = first.communicate(timeout=120)

    assert skipped.returncode == 1
    error = " ".join(skipped.stderr.split())  # the reason alone, no Dagster log lines
    assert error.startswith("Error: not synced (run "), error
    assert f"strava partition {ATHLETE} is being synced by run {holder} (pid {first.pid}" in error
    assert error.endswith("Run it again when that run has finished, or add --wait SECONDS.")
    assert waiting.returncode == 0, waited_err
    assert waited_out.startswith(f"waiting up to 180 s for run {holder}, which is syncing")
    assert '"status": "succeeded"' in waited_out
    assert first.returncode == 0, first_err
    assert demo.activities() == demo.sandbox_activities() > 0
