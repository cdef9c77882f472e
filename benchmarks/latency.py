"""Item 3 — latency of a manual sync and of a push event, pipeline against plain code.

Deployment: `athletes` connected and already synced athletes (registered as partitions), the
real daemon, the webhook receiver (`create_webhook_app`, served on loopback) subscribed at
the sandbox. Samples are taken one at a time.

- Manual sync: the athlete gets one new activity at Strava; then
  `dagster job launch -w workspace.yaml -j strava_athlete_sync --tags
  '{"dagster/partition": ..., "dagster/priority": "10"}'` is run; latency is from starting
  that command to the activity's row being in the app database (its `synced_at`). The CLI's
  own time, the queue wait and the run's start-up are reported separately.
  What a user runs, `sync-pipeline sync strava --athlete ID`, is measured the same way twice:
  with a `dagster-webserver` of the deployment running (the CLI queues through its GraphQL
  API, as with `make demo`), and with none (the CLI falls back to `dagster job launch`).
  Baseline: `baseline.py` for that one athlete (process start to the row).
- Push event: the sandbox creates an activity and pushes the event to the receiver; latency
  is from the creation to the activity being processed (`processed_at`: detail fetched,
  streams stored). Baseline: a plain receiver that processes the event in a thread at once
  (GET activity, GET streams, the same writes), with no inbox, sensor or run.

Run alone: ``.venv/bin/python benchmarks/latency.py --samples 20``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
from baseline import Store
from bench_appdb import connect_athletes, create_app_db, seed_synced
from bench_daemon import (
    Daemon,
    daemon_ready,
    dagster_env,
    new_dagster_home,
    open_instance,
    register_partitions,
    wait_until,
)
from bench_paths import BENCH_DIR, BIN, CLIENT_ID, CLIENT_SECRET, PYTHON, WORKSPACE
from bench_report import log, pct, print_table, temp_root
from bench_sandbox import Sandbox, start_sandbox
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_pipeline.core import db
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import StravaActivity
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.webhooks.app import create_webhook_app

TARGET_P95 = 10.0
SAMPLE_TIMEOUT = 180.0


def activity_time(app_db: AppDatabaseResource, activity_id: int, column: str) -> float | None:
    """Epoch seconds of the activity's `synced_at` or `processed_at`, if set."""
    col = getattr(StravaActivity, column)
    with transaction(app_db.url) as s:
        value = s.scalar(select(col).where(StravaActivity.id == activity_id))
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return float(value.timestamp())


def wait_for_time(
    app_db: AppDatabaseResource,
    activity_id: int,
    column: str,
    daemon: Daemon | None = None,
    poll: float = 0.05,
) -> float:
    """Poll until the activity's timestamp column is set; returns it."""
    result: float = wait_until(
        f"activity {activity_id} {column}",
        lambda: activity_time(app_db, activity_id, column),
        timeout=SAMPLE_TIMEOUT,
        poll=poll,
        daemon=daemon,
    )
    return result


def summary(values: list[float]) -> dict[str, Any]:
    """p50 / p95 / max of seconds."""
    return {
        "p50": round(pct(values, 50), 2),
        "p95": round(pct(values, 95), 2),
        "max": round(max(values), 2) if values else None,
        "n": len(values),
    }


def finished_record(instance: dg.DagsterInstance, run_id: str) -> Callable[[], Any]:
    """A probe returning the run's record once the run has finished."""

    def probe() -> Any:
        records = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run_id]))
        return records[0] if records and records[0].dagster_run.is_finished else None

    return probe


def dagster_job_launch(env: dict[str, str], workdir: Path) -> Callable[[int], str]:
    """A launcher: `dagster job launch -w workspace.yaml` of one athlete; returns the run id."""

    def launch(athlete: int) -> str:
        run_id = str(uuid.uuid4())
        proc = subprocess.run(
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
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dagster job launch failed:\n{proc.stderr[-2000:]}")
        return run_id

    return launch


def sync_pipeline_cli(env: dict[str, str], workdir: Path) -> Callable[[int], str]:
    """A launcher: `sync-pipeline sync strava --athlete ID` as a user runs it; the run id."""

    def launch(athlete: int) -> str:
        proc = subprocess.run(
            [str(BIN / "sync-pipeline"), "sync", "strava", "--athlete", str(athlete)],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        queued = re.match(r"queued run ([0-9a-f-]{36}) ", proc.stdout)
        if proc.returncode != 0 or queued is None:
            raise RuntimeError(f"sync-pipeline sync failed:\n{proc.stderr[-2000:]}")
        return queued.group(1)

    return launch


class Webserver:
    """`dagster-webserver -w workspace.yaml` on loopback in its own session, stopped by pid."""

    def __init__(self, env: dict[str, str], workdir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log_path.open("ab") as sink:
            self.proc = subprocess.Popen(
                [
                    *(str(BIN / "dagster-webserver"), "-w", str(WORKSPACE)),
                    *("-h", "127.0.0.1", "-p", str(self.port)),
                ],
                cwd=workdir,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def loaded(self) -> bool:
        """Whether it serves the GraphQL API with the code location loaded."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"dagster-webserver exited with {self.proc.returncode}")
        query = "{repositoriesOrError{...on RepositoryConnection{nodes{name}}}}"
        try:
            body = httpx.post(f"{self.url}/graphql", json={"query": query}, timeout=10).json()
        except (httpx.HTTPError, ValueError):
            return False
        return bool((body.get("data") or {}).get("repositoriesOrError", {}).get("nodes"))

    def stop(self) -> None:
        """SIGTERM its session, then wait."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manual_pipeline(
    sandbox: Sandbox,
    app_db: AppDatabaseResource,
    instance: dg.DagsterInstance,
    daemon: Daemon,
    launch: Callable[[int], str],
    athletes: list[int],
    samples: int,
) -> dict[str, Any]:
    """`launch` one athlete's sync (a command) until its new activity is stored."""
    totals, cli, queued, startup, work = [], [], [], [], []
    for i in range(samples):
        athlete = athletes[i % len(athletes)]
        [new_id] = sandbox.state.add_activities(athlete, 1)
        t0 = time.time()
        run_id = launch(athlete)
        t_cli = time.time()
        stored = wait_for_time(app_db, new_id, "synced_at", daemon)
        record = wait_until(
            "manual run finished",
            finished_record(instance, run_id),
            timeout=SAMPLE_TIMEOUT,
            daemon=daemon,
        )
        if record.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
            raise RuntimeError(f"manual run {run_id} {record.dagster_run.status}")
        assert record.start_time is not None
        totals.append(stored - t0)
        cli.append(t_cli - t0)
        queued.append(record.start_time - record.create_timestamp.timestamp())
        startup.append(record.start_time - t_cli)
        work.append(stored - record.start_time)
        log(f"manual {i + 1}/{samples}: {stored - t0:.1f}s (CLI {t_cli - t0:.1f}s)")
    return {
        "launch_to_data": summary(totals),
        "cli_seconds": summary(cli),
        "submit_to_data": summary([t - c for t, c in zip(totals, cli, strict=True)]),
        "queued_to_started": summary(queued),
        "run_started_to_data": summary(work),
    }


def webhook_samples(
    sandbox: Sandbox,
    app_db: AppDatabaseResource,
    athletes: list[int],
    samples: int,
    daemon: Daemon | None,
    label: str,
) -> dict[str, Any]:
    """Create activities one at a time; latency from creation to processed."""
    totals = []
    for i in range(samples):
        athlete = athletes[(i * 7) % len(athletes)]
        t0 = time.time()
        [new_id] = sandbox.state.add_activities(athlete, 1)
        done = wait_for_time(app_db, new_id, "processed_at", daemon, poll=0.05)
        totals.append(done - t0)
        log(f"{label} webhook {i + 1}/{samples}: {done - t0:.2f}s")
    return {"event_to_processed": summary(totals), "push": sandbox.state.push_stats()}


def subscribe(sandbox: Sandbox, callback: str, verify_token: str) -> int:
    """(Re)create the sandbox's push subscription to `callback`."""
    current = sandbox.state.push_subscription_id()
    if current is not None:
        sandbox.state.delete_push_subscription(CLIENT_ID, CLIENT_SECRET, current)
    body = sandbox.state.create_push_subscription(CLIENT_ID, CLIENT_SECRET, callback, verify_token)
    return int(body["id"])


def plain_receiver(app_db: AppDatabaseResource, base_url: str, verify_token: str) -> Starlette:
    """The no-queue receiver: answer at once, process the activity in a thread."""
    store = Store(app_db.url, app_db.token_key)
    pool = ThreadPoolExecutor(max_workers=4)
    client = httpx.Client(base_url=base_url, timeout=30.0)

    def process(owner: int, activity_id: int) -> None:
        token = store.access_token(owner)
        headers = {"Authorization": f"Bearer {token}"}
        detail = client.get(f"/api/v3/activities/{activity_id}", headers=headers)
        detail.raise_for_status()
        store.write_page([detail.json()], dt.datetime.now(dt.UTC))
        streams = client.get(
            f"/api/v3/activities/{activity_id}/streams",
            params={"keys": "latlng,time,distance,altitude", "key_by_type": "true"},
            headers=headers,
        )
        streams.raise_for_status()
        store.write_streams(owner, activity_id, streams.json())

    async def endpoint(request: Request) -> Response:
        if request.method == "GET":
            q = request.query_params
            if q.get("hub.verify_token") != verify_token:
                return JSONResponse({"error": "verify token"}, 403)
            return JSONResponse({"hub.challenge": q.get("hub.challenge")})
        event = await request.json()
        if event.get("object_type") == "activity" and event.get("aspect_type") != "delete":
            pool.submit(process, int(event["owner_id"]), int(event["object_id"]))
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/webhooks/strava", endpoint, methods=["GET", "POST"])])


def manual_baseline(
    sandbox: Sandbox, app_db: AppDatabaseResource, athletes: list[int], samples: int, root: Path
) -> dict[str, Any]:
    """baseline.py for one athlete, from process start to the new row."""
    totals = []
    for i in range(samples):
        athlete = athletes[i % len(athletes)]
        [new_id] = sandbox.state.add_activities(athlete, 1)
        t0 = time.time()
        subprocess.run(
            [
                PYTHON,
                str(BENCH_DIR / "baseline.py"),
                "--db-url",
                app_db.url,
                "--base-url",
                sandbox.url,
                "--mode",
                "incremental",
                "--athlete",
                str(athlete),
            ],
            cwd=root,
            env={**os.environ, "SYNC_TOKEN_KEY": app_db.token_key},
            capture_output=True,
            check=True,
            timeout=300,
        )
        stored = wait_for_time(app_db, new_id, "synced_at")
        totals.append(stored - t0)
    return {"launch_to_data": summary(totals)}


def run(samples: int, athletes: int = 20, keep: bool = False) -> dict[str, Any]:
    """Measure both latencies for both contenders."""
    verify_token = secrets.token_urlsafe(16)
    with temp_root("bench-latency-", keep) as tmp:
        root = Path(tmp)
        sandbox = start_sandbox([3] * athletes)
        receivers: list[SandboxServer] = []
        try:
            ids = sandbox.state.athlete_ids()
            results: dict[str, dict[str, Any]] = {"pipeline": {}, "baseline": {}}
            # -- pipeline
            app_db = create_app_db(root / "pipeline.db")
            connect_athletes(app_db, sandbox, ids)
            seed_synced(app_db, sandbox, ids)
            home = new_dagster_home(root)
            env = dagster_env(home, app_db, sandbox.url)
            instance = open_instance(home)
            register_partitions(instance, ids)
            daemon = Daemon(env, root / "work", root / "daemon.log").start()
            try:
                wait_until(
                    "daemon ready", lambda: daemon_ready(instance), timeout=300, daemon=daemon
                )
                log("latency: manual syncs through `dagster job launch`")
                work = root / "work"
                results["pipeline"]["manual"] = manual_pipeline(
                    sandbox, app_db, instance, daemon, dagster_job_launch(env, work), ids, samples
                )
                log("latency: `sync-pipeline sync strava --athlete` with no webserver")
                nowhere = {**env, "DAGSTER_WEBSERVER_URL": f"http://127.0.0.1:{free_port()}"}
                no_webserver = sync_pipeline_cli(nowhere, work)
                results["pipeline"]["manual_cli_no_webserver"] = manual_pipeline(
                    sandbox, app_db, instance, daemon, no_webserver, ids, samples
                )
                webserver = Webserver(env, work, root / "webserver.log")
                try:
                    wait_until("webserver ready", webserver.loaded, timeout=300, daemon=daemon)
                    log("latency: `sync-pipeline sync strava --athlete` through the webserver")
                    served = {**env, "DAGSTER_WEBSERVER_URL": webserver.url}
                    results["pipeline"]["manual_cli"] = manual_pipeline(
                        sandbox, app_db, instance, daemon, sync_pipeline_cli(served, work), ids,
                        samples,
                    )  # fmt: skip
                finally:
                    webserver.stop()
                receiver = SandboxServer(create_webhook_app(app_db.url, verify_token, None))
                receivers.append(receiver.start())
                subscribe(sandbox, f"{receiver.url}/webhooks/strava", verify_token)
                log("latency: push events through receiver, sensor and run queue")
                results["pipeline"]["webhook"] = webhook_samples(
                    sandbox, app_db, ids, samples, daemon, "pipeline"
                )
            finally:
                daemon.stop()
                instance.dispose()
            # -- baseline
            base_db = create_app_db(root / "baseline.db")
            connect_athletes(base_db, sandbox, ids)
            seed_synced(base_db, sandbox, ids)
            log("latency: baseline manual syncs")
            results["baseline"]["manual"] = manual_baseline(sandbox, base_db, ids, samples, root)
            plain = SandboxServer(plain_receiver(base_db, sandbox.url, verify_token))
            receivers.append(plain.start())
            subscribe(sandbox, f"{plain.url}/webhooks/strava", verify_token)
            results["baseline"]["webhook"] = webhook_samples(
                sandbox, base_db, ids, samples, None, "baseline"
            )
        finally:
            sandbox.stop()
            for server in receivers:
                server.stop()
            db.dispose_engines()
    p, b = results["pipeline"], results["baseline"]

    def ratio(kind: str, key: str) -> float:
        return round(p[kind][key]["p95"] / b[kind][key]["p95"], 2)

    return {
        "benchmark": "latency",
        "samples": samples,
        "pipeline": p,
        "baseline": b,
        "ratios_p95": {
            "manual": ratio("manual", "launch_to_data"),
            "webhook": ratio("webhook", "event_to_processed"),
        },
        "target_p95_seconds": TARGET_P95,
        "meets_target": {
            "manual": p["manual"]["launch_to_data"]["p95"] <= TARGET_P95,
            "webhook": p["webhook"]["event_to_processed"]["p95"] <= TARGET_P95,
        },
    }


def table_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows for the summary table."""
    p, b = result["pipeline"], result["baseline"]
    pm, bm = p["manual"]["launch_to_data"], b["manual"]["launch_to_data"]
    pw, bw = p["webhook"]["event_to_processed"], b["webhook"]["event_to_processed"]
    cli_rows = [
        [
            f"latency {label}",
            "pipeline",
            f"p50 {p[key]['launch_to_data']['p50']}s",
            f"p95 {p[key]['launch_to_data']['p95']}s",
            f"of which CLI p50 {p[key]['cli_seconds']['p50']}s",
        ]
        for key, label in (
            ("manual_cli", "sync-pipeline sync, webserver"),
            ("manual_cli_no_webserver", "sync-pipeline sync, none"),
        )
        if key in p
    ]
    return [
        *cli_rows,
        ["latency manual", "pipeline", f"p50 {pm['p50']}s", f"p95 {pm['p95']}s",
         f"of which CLI p50 {p['manual']['cli_seconds']['p50']}s"],
        ["", "baseline", f"p50 {bm['p50']}s", f"p95 {bm['p95']}s",
         f"ratio p95 {result['ratios_p95']['manual']}"],
        ["latency webhook", "pipeline", f"p50 {pw['p50']}s", f"p95 {pw['p95']}s",
         f"target <= {TARGET_P95}s"],
        ["", "baseline", f"p50 {bw['p50']}s", f"p95 {bw['p95']}s",
         f"ratio p95 {result['ratios_p95']['webhook']}"],
    ]  # fmt: skip


def main() -> None:
    """Run and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--athletes", type=int, default=20)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    result = run(args.samples, args.athletes, args.keep)
    print_table(table_rows(result), ["benchmark", "contender", "", "", ""])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
