"""Item 3 — latency of a manual sync and of a push event, pipeline against plain code.

Deployment: `athletes` connected and already synced athletes (registered as partitions), the
real daemon, the webhook receiver (`sync-pipeline webhooks serve` on loopback) subscribed at
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
  streams stored). The receiver is `sync-pipeline webhooks serve` as deployed, with its fast
  path (`--inline-workers`, default 2: the receiver syncs the athlete itself; 0: every event
  goes through the sensor and a queued run). Baseline: a plain receiver that processes the
  event in a thread at once (GET activity, GET streams, the same writes), with no inbox, sensor
  or run.

Run alone: ``.venv/bin/python benchmarks/latency.py --samples 20``; only the push events:
``--only webhook``.
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
from webhook_load import free_port

from sync_pipeline.core import db
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import StravaActivity
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.sandbox.server import SandboxServer

TARGET_P95 = 10.0
#: Push event → processed, p95 (issue 16).
WEBHOOK_TARGET_P95 = 3.0
SAMPLE_TIMEOUT = 180.0
RECEIVER_STARTUP = 60.0


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


def served_receiver(
    env: dict[str, str], workdir: Path, log_path: Path, verify_token: str, inline_workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    """`sync-pipeline webhooks serve` as deployed (settings from the environment); its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as sink:
        proc = subprocess.Popen(
            [
                str(BIN / "sync-pipeline"),
                "webhooks",
                "serve",
                "--port",
                str(port),
                "--inline-workers",
                str(inline_workers),
                "--log-level",
                "warning",
            ],
            cwd=workdir,
            env={
                **env,
                "STRAVA_WEBHOOK_VERIFY_TOKEN": verify_token,
                "SYNC_HOME": str(workdir / "sync_home"),
            },
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the receiver exited:\n{log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until("receiver healthy", healthy, timeout=RECEIVER_STARTUP, poll=0.1)
    return proc, url


def stop_receiver(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the receiver (it finishes syncs in flight), then wait for it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


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


def run(
    samples: int,
    athletes: int = 20,
    keep: bool = False,
    inline_workers: int = 2,
    only: tuple[str, ...] = ("manual", "webhook"),
) -> dict[str, Any]:
    """Measure both latencies (or `only` some) for both contenders."""
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
                if "manual" in only:
                    log("latency: manual syncs through `dagster job launch`")
                    work = root / "work"
                    results["pipeline"]["manual"] = manual_pipeline(
                        sandbox,
                        app_db,
                        instance,
                        daemon,
                        dagster_job_launch(env, work),
                        ids,
                        samples,
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
                if "webhook" in only:
                    proc, url = served_receiver(
                        env, root / "work", root / "receiver.log", verify_token, inline_workers
                    )
                    try:
                        subscribe(sandbox, f"{url}/webhooks/strava", verify_token)
                        log(
                            f"latency: push events through `webhooks serve` (fast path "
                            f"{inline_workers} thread(s)), sensor and run queue"
                        )
                        results["pipeline"]["webhook"] = webhook_samples(
                            sandbox, app_db, ids, samples, daemon, "pipeline"
                        )
                    finally:
                        stop_receiver(proc)  # finishes what is in flight
                    results["pipeline"]["webhook"]["paths"] = webhook_paths(app_db)
                    if inline_workers == 0:
                        results["pipeline"]["webhook"]["sensor_path"] = sensor_path_breakdown(
                            instance, app_db
                        )
            finally:
                daemon.stop()
                instance.dispose()
            # -- baseline
            base_db = create_app_db(root / "baseline.db")
            connect_athletes(base_db, sandbox, ids)
            seed_synced(base_db, sandbox, ids)
            if "manual" in only:
                log("latency: baseline manual syncs")
                results["baseline"]["manual"] = manual_baseline(
                    sandbox, base_db, ids, samples, root
                )
            if "webhook" in only:
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

    def ratio(kind: str, key: str) -> float | None:
        if kind not in p:
            return None
        return round(p[kind][key]["p95"] / b[kind][key]["p95"], 2)

    def meets(kind: str, key: str, target: float) -> bool | None:
        return p[kind][key]["p95"] <= target if kind in p else None

    return {
        "benchmark": "latency",
        "samples": samples,
        "inline_workers": inline_workers,
        "pipeline": p,
        "baseline": b,
        "ratios_p95": {
            "manual": ratio("manual", "launch_to_data"),
            "webhook": ratio("webhook", "event_to_processed"),
        },
        "target_p95_seconds": {"manual": TARGET_P95, "webhook": WEBHOOK_TARGET_P95},
        "meets_target": {
            "manual": meets("manual", "launch_to_data", TARGET_P95),
            "webhook": meets("webhook", "event_to_processed", WEBHOOK_TARGET_P95),
        },
    }


def sensor_path_breakdown(
    instance: dg.DagsterInstance, app_db: AppDatabaseResource
) -> dict[str, Any]:
    """Where an event's time goes on the sensor path: received → run created (the wait for a
    sensor tick), created → started (queue and run start-up), started → processed."""
    from sync_pipeline.core.models import WebhookEvent

    with transaction(app_db.url) as s:
        events = [
            (e.owner_id, e.object_id, e.received_at)
            for e in s.scalars(select(WebhookEvent).where(WebhookEvent.outcome == "run_requested"))
        ]
    tick, start, work = [], [], []
    for owner, activity_id, received in events:
        received_ts = (received if received.tzinfo else received.replace(tzinfo=dt.UTC)).timestamp()
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={"dagster/partition": str(owner)})
        )
        runs = sorted(
            (r for r in records if r.create_timestamp.timestamp() >= received_ts),
            key=lambda r: r.create_timestamp,
        )
        processed = activity_time(app_db, activity_id, "processed_at")
        if not runs or runs[0].start_time is None or processed is None:
            continue
        created = runs[0].create_timestamp.timestamp()
        tick.append(created - received_ts)
        start.append(runs[0].start_time - created)
        work.append(processed - runs[0].start_time)
    return {
        "received_to_run_created": summary(tick),
        "run_created_to_started": summary(start),
        "run_started_to_processed": summary(work),
    }


def webhook_paths(app_db: AppDatabaseResource) -> dict[str, int]:
    """How many inbox events each path took (`processed_inline`, `run_requested`, ...)."""
    from sqlalchemy import func

    from sync_pipeline.core.models import WebhookEvent

    with transaction(app_db.url) as s:
        rows = s.execute(
            select(WebhookEvent.outcome, func.count()).group_by(WebhookEvent.outcome)
        ).all()
    return {str(outcome): int(n) for outcome, n in rows}


def table_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows for the summary table."""
    p, b = result["pipeline"], result["baseline"]
    rows: list[list[Any]] = []
    if "manual" in p:
        pm, bm = p["manual"]["launch_to_data"], b["manual"]["launch_to_data"]
        rows += [
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
        rows += [
            ["latency manual", "pipeline", f"p50 {pm['p50']}s", f"p95 {pm['p95']}s",
             f"of which CLI p50 {p['manual']['cli_seconds']['p50']}s"],
            ["", "baseline", f"p50 {bm['p50']}s", f"p95 {bm['p95']}s",
             f"ratio p95 {result['ratios_p95']['manual']}"],
        ]  # fmt: skip
    if "webhook" in p:
        pw, bw = p["webhook"]["event_to_processed"], b["webhook"]["event_to_processed"]
        if "sensor_path" in p["webhook"]:
            sp = p["webhook"]["sensor_path"]
            rows.append(["sensor path", "p50 / p95",
                         f"tick wait {sp['received_to_run_created']['p50']}/"
                         f"{sp['received_to_run_created']['p95']}s",
                         f"run start {sp['run_created_to_started']['p50']}/"
                         f"{sp['run_created_to_started']['p95']}s",
                         f"work {sp['run_started_to_processed']['p50']}/"
                         f"{sp['run_started_to_processed']['p95']}s"])  # fmt: skip
        verdict = "meets" if result["meets_target"]["webhook"] else "MISSES"
        rows += [
            ["latency webhook", f"pipeline (fast path {result['inline_workers']})",
             f"p50 {pw['p50']}s", f"p95 {pw['p95']}s",
             f"target <= {WEBHOOK_TARGET_P95}s: {verdict}; paths {p['webhook']['paths']}"],
            ["", "baseline", f"p50 {bw['p50']}s", f"p95 {bw['p95']}s",
             f"ratio p95 {result['ratios_p95']['webhook']}"],
        ]  # fmt: skip
    return rows


def main() -> None:
    """Run and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--athletes", type=int, default=20)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--inline-workers",
        type=int,
        default=2,
        help="the receiver's fast-path threads (0: every event through the sensor and a run)",
    )
    parser.add_argument(
        "--only", choices=["manual", "webhook"], action="append", help="measure only these"
    )
    args = parser.parse_args()
    only = tuple(args.only or ("manual", "webhook"))
    result = run(args.samples, args.athletes, args.keep, args.inline_workers, only)
    print_table(table_rows(result), ["benchmark", "contender", "", "", ""])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
