"""Where a sweep's per-athlete time goes: cProfile of `sync_athlete` plus operation counts.

Three measurements over the same data (sandbox on loopback, SQLite app database):

1. `sync_athlete` called in a loop in this process (one thread), profiled with cProfile on
   the thread's CPU clock, so waiting for the sandbox (served by another thread here) does
   not count. Reported per athlete: CPU and wall, DB transactions and statements by table
   and verb, token decrypts, HTTP requests, and the inclusive CPU of the pipeline's parts
   (token store, rate budget, checkpoints and leases, page writes, streams, HTTP client).
2. The plain baseline's work for the same athletes (`baseline.py`, in a subprocess): CPU per
   athlete, as the floor.
3. `strava_sweep_job` executed in-process on a temporary SQLite Dagster instance, so the
   cost of Dagster's per-athlete events (one materialization per partition) shows up:
   CPU per athlete of the job minus that of the bare loop, and the job again with the
   per-athlete events dropped.
4. Ablations (no profiler): the loop again with one cost removed at a time (the rate
   budget stubbed out, one sessionmaker per URL instead of one per transaction, the access
   token cached per athlete), so each suggested change has a measured saving.

Run: ``.venv/bin/python benchmarks/profile_sync.py --athletes 300 [--mode full]``; prints
the top functions, a table and one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import json
import os
import pstats
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from bench_appdb import connect_athletes, copy_app_db, create_app_db, seed_synced
from bench_paths import BENCH_DIR, CLIENT_ID, CLIENT_SECRET, PYTHON
from bench_report import log, print_table
from bench_sandbox import Sandbox, start_sandbox
from sqlalchemy import event

from sync_pipeline.core import db
from sync_pipeline.core import source as assets_module
from sync_pipeline.core.budget import RateBudget
from sync_pipeline.core.crypto import TokenCipher
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.strava.resources import StravaResource
from sync_pipeline.defs.strava.source import STRAVA, strava_defs
from sync_pipeline.defs.strava.sync import sync_athlete

# Inclusive CPU of these functions is reported (substring of pstats' "file:line(name)").
PARTS: dict[str, str] = {
    "token store (read + decrypt)": "tokens.py:.*\\(access_token\\)",
    "rate budget acquire": "budget.py:.*\\(acquire\\)",
    "rate budget observe headers": "budget.py:.*\\(observe\\)",
    "lease claim": "checkpoints.py:.*\\(claim\\)",
    "session begin": "checkpoints.py:.*\\(begin\\)",
    "succeed/release/get": "checkpoints.py:.*\\((succeed|release|get)\\)",
    "page write (upsert + checkpoint)": "sync.py:.*\\(_write_page\\)",
    "incremental cursor": "checkpoints.py:.*\\(checkpoint\\)",
    "streams fetch + store": "processing.py:.*\\(process_activity\\)",
    "unprocessed query": "processing.py:.*\\(unprocessed_gps_activities\\)",
    "HTTP client (httpx)": "_client.py:.*\\(request\\)",
    "JSON decode": "_models.py:.*\\(json\\)",
    "SQLAlchemy commit": "session.py:.*\\(commit\\)",
    "SQLite execute (C)": "method 'execute' of 'sqlite3.Cursor'",
    "Fernet decrypt": "crypto.py:.*\\(decrypt\\)",
    "parse activities": "models.py:.*\\(from_api\\)",
}


class DbCounter:
    """Counts transactions and statements (verb + table) on an engine."""

    def __init__(self) -> None:
        self.transactions = 0
        self.statements: Counter[str] = Counter()
        self._lock = threading.Lock()

    def install(self, url: str) -> Callable[[], None]:
        """Listen on the URL's engine; returns a function that stops listening."""
        engine = db.get_engine(url)

        def on_begin(conn: Any) -> None:
            with self._lock:
                self.transactions += 1

        def on_execute(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            with self._lock:
                self.statements[classify(statement)] += 1

        event.listen(engine, "begin", on_begin)
        event.listen(engine, "before_cursor_execute", on_execute)

        def remove() -> None:
            event.remove(engine, "begin", on_begin)
            event.remove(engine, "before_cursor_execute", on_execute)

        return remove


def classify(statement: str) -> str:
    """'UPDATE rate_windows', 'SELECT sync_state', ... for a SQL statement."""
    words = statement.split()
    verb = words[0].upper() if words else "?"
    match = re.search(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", statement, re.IGNORECASE)
    return f"{verb} {match.group(1) if match else '?'}"


@contextmanager
def counting_decrypts() -> Iterator[Counter[str]]:
    """Count TokenCipher.decrypt calls while active."""
    counts: Counter[str] = Counter()
    original = TokenCipher.decrypt

    def counted(self: TokenCipher, value: bytes) -> str:
        counts["decrypt"] += 1
        return original(self, value)

    TokenCipher.decrypt = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        TokenCipher.decrypt = original  # type: ignore[method-assign]


def make_strava(app_db: AppDatabaseResource, sandbox: Sandbox) -> StravaResource:
    """The Strava resource the pipeline would build, pointed at the sandbox."""
    return StravaResource(
        app_db=app_db, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, base_url=sandbox.url
    )


def prepare(
    root: Path, athletes: int, mode: str, full_counts: tuple[int, int]
) -> tuple[Sandbox, AppDatabaseResource, list[int]]:
    """Sandbox and a template database in the state a sweep of `mode` starts from."""
    if mode == "incremental":
        counts = [3] * athletes
    else:
        lo, hi = full_counts
        counts = [lo + (hi - lo) * i // max(athletes - 1, 1) for i in range(athletes)]
    sandbox = start_sandbox(counts)
    ids = sandbox.state.athlete_ids()
    template = create_app_db(root / "template.db")
    connect_athletes(template, sandbox, ids)
    if mode == "incremental":
        seed_synced(template, sandbox, ids)
        for a in ids:
            sandbox.state.add_activities(a, 1)
    return sandbox, template, ids


def plain_loop(
    app_db: AppDatabaseResource, sandbox: Sandbox, ids: list[int], mode: str
) -> dict[str, float]:
    """sync_athlete over every athlete without the profiler: CPU and wall per athlete."""
    strava = make_strava(app_db, sandbox)
    sandbox.reset()
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    outcomes = [sync_athlete(strava, a, mode=mode, owner="plain", run_id=None) for a in ids]
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    strava.close()
    check(outcomes)
    n = len(ids)
    return {
        "cpu_ms_per_athlete": round(1000 * cpu / n, 2),
        "wall_ms_per_athlete": round(1000 * wall / n, 2),
    }


def check(outcomes: list[Any]) -> None:
    """Every sync must have succeeded."""
    bad = [o for o in outcomes if o.status != "succeeded"]
    if bad:
        raise RuntimeError(f"{len(bad)} syncs did not succeed, e.g. {bad[0].error}")


@contextmanager
def no_budget() -> Iterator[None]:
    """Rate budget stubbed out (acquire admits at once, observe does nothing)."""
    acquire, observe = RateBudget.acquire, RateBudget.observe

    def admit(self: RateBudget, windows: Any, cost: int = 1, *, max_wait: float) -> float:
        return 0.0

    def ignore(self: RateBudget, observations: Any, now: float | None = None) -> None:
        return None

    RateBudget.acquire = admit  # type: ignore[method-assign]
    RateBudget.observe = ignore  # type: ignore[method-assign]
    try:
        yield
    finally:
        RateBudget.acquire = acquire  # type: ignore[method-assign]
        RateBudget.observe = observe  # type: ignore[method-assign]


@contextmanager
def cached_sessionmaker() -> Iterator[None]:
    """One sessionmaker per URL instead of a new one (a new Session subclass) per
    transaction."""
    original = db.session_factory
    db.session_factory = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        db.session_factory = original


@contextmanager
def cached_tokens() -> Iterator[None]:
    """The decrypted access token kept per athlete instead of read per API call."""
    original = StravaResource.access_token
    cache: dict[str, str] = {}

    def access_token(self: StravaResource, account: str, *, stale: str | None = None) -> str:
        if stale is None and account in cache:
            return cache[account]
        token = original(self, account, stale=stale)
        cache[account] = token
        return token

    StravaResource.access_token = access_token  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        StravaResource.access_token = original  # type: ignore[method-assign]


@contextmanager
def all_three() -> Iterator[None]:
    """Every ablation at once."""
    with no_budget(), cached_sessionmaker(), cached_tokens():
        yield


ABLATIONS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "rate budget stubbed out": no_budget,
    "sessionmaker cached per URL": cached_sessionmaker,
    "access token cached per athlete": cached_tokens,
    "all three": all_three,
}


def ablations(
    template: AppDatabaseResource, sandbox: Sandbox, ids: list[int], mode: str, root: Path
) -> dict[str, float]:
    """Unprofiled CPU ms per athlete of the loop with each cost removed."""
    out: dict[str, float] = {}
    for n, (name, patch) in enumerate(ABLATIONS.items()):
        app_db = copy_app_db(template, root / f"ablation{n}.db")
        with patch():
            out[name] = plain_loop(app_db, sandbox, ids, mode)["cpu_ms_per_athlete"]
        db.dispose_engines()
    return out


def profile_loop(
    app_db: AppDatabaseResource, sandbox: Sandbox, ids: list[int], mode: str
) -> dict[str, Any]:
    """cProfile (thread CPU clock) of sync_athlete over every athlete, with counts.

    cProfile roughly doubles the CPU of this Python-heavy code; the parts are reported in
    profiled milliseconds and as shares of the profiled total (apply the shares to the
    unprofiled CPU).
    """
    strava = make_strava(app_db, sandbox)
    counter = DbCounter()
    remove = counter.install(app_db.url)
    sandbox.reset()
    profiler = cProfile.Profile(time.thread_time)
    with counting_decrypts() as decrypts:
        cpu0 = time.thread_time()
        profiler.enable()
        outcomes = [sync_athlete(strava, a, mode=mode, owner="profile", run_id=None) for a in ids]
        profiler.disable()
        cpu = time.thread_time() - cpu0
    remove()
    strava.close()
    check(outcomes)
    n = len(ids)
    stats = pstats.Stats(profiler)
    parts = inclusive_parts(stats)
    top = io.StringIO()
    pstats.Stats(profiler, stream=top).sort_stats("tottime").print_stats(25)
    requests = sandbox.state.stats()["requests_total"]
    return {
        "athletes": n,
        "profiled_cpu_ms_per_athlete": round(1000 * cpu / n, 2),
        "db_transactions_per_athlete": round(counter.transactions / n, 2),
        "db_statements_per_athlete": round(sum(counter.statements.values()) / n, 2),
        "db_statements_by_kind_per_athlete": {
            k: round(v / n, 2) for k, v in counter.statements.most_common()
        },
        "token_decrypts_per_athlete": round(decrypts["decrypt"] / n, 2),
        "http_requests_per_athlete": round(requests / n, 2),
        "profiled_cpu_ms_per_athlete_by_part": {
            k: round(1000 * v / n, 2) for k, v in parts.items()
        },
        "share_of_cpu_by_part": {k: round(v / cpu, 3) for k, v in parts.items()},
        "top_tottime": top.getvalue(),
    }


def inclusive_parts(stats: pstats.Stats) -> dict[str, float]:
    """Inclusive (cumulative) seconds of the functions named in PARTS."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for label, pattern in PARTS.items():
        regex = re.compile(pattern)
        total = 0.0
        for (filename, line, name), (_cc, _nc, _tt, ct, _callers) in table.items():
            if regex.search(f"{filename}:{line}({name})"):
                total += ct
        out[label] = total
    return out


def baseline_cpu(app_db: AppDatabaseResource, sandbox: Sandbox, mode: str, n: int) -> float:
    """CPU ms per athlete of baseline.py (concurrency 4) over the same athletes."""
    sandbox.reset()
    proc = subprocess.run(
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
            "4",
        ],
        env={**os.environ, "SYNC_TOKEN_KEY": app_db.token_key},
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["failed"]:
        raise RuntimeError(f"baseline failures: {result['errors']}")
    return round(1000 * float(result["cpu_seconds_work"]) / n, 2)


def in_process_job(
    app_db: AppDatabaseResource,
    sandbox: Sandbox,
    ids: list[int],
    mode: str,
    root: Path,
    *,
    events: bool = True,
) -> dict[str, Any]:
    """strava_sweep_job in-process on a SQLite Dagster instance: CPU per athlete (this
    process's CPU minus the sandbox thread's)."""
    strava = make_strava(app_db, sandbox)
    home = root / "dagster_inprocess"
    home.mkdir(parents=True)
    original = assets_module.batch_events
    if not events:
        assets_module.batch_events = lambda key, outcome: iter(())  # type: ignore[assignment]
    sandbox.reset()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        instance.add_dynamic_partitions("strava_athletes", [str(a) for a in ids])
        cpu0, wall0, box0 = time.process_time(), time.perf_counter(), sandbox.cpu_seconds()
        result = strava_defs.sweep_job.execute_in_process(
            run_config=STRAVA.sweep_run_config(keys=[str(a) for a in ids], full=mode == "full"),
            resources={"strava": strava},
            instance=instance,
        )
        box = sandbox.cpu_seconds() - box0
        cpu, wall = time.process_time() - cpu0 - box, time.perf_counter() - wall0
        assets_module.batch_events = original
        assert result.success
        logged = len(instance.all_logs(result.run_id))
    n = len(ids)
    return {
        "cpu_ms_per_athlete": round(1000 * cpu / n, 2),
        "wall_ms_per_athlete": round(1000 * wall / n, 2),
        "dagster_events_per_athlete": round(logged / n, 2),
    }


def run(athletes: int, mode: str, full_counts: tuple[int, int] = (200, 2000)) -> dict[str, Any]:
    """Profile one mode; returns the JSON-ready result."""
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        root = Path(tmp)
        sandbox, template, ids = prepare(root, athletes, mode, full_counts)
        try:
            log(f"profile {mode}: {len(ids)} athletes, sync_athlete loop")
            plain = plain_loop(copy_app_db(template, root / "plain.db"), sandbox, ids, mode)
            loop = profile_loop(copy_app_db(template, root / "loop.db"), sandbox, ids, mode)
            log("profile: ablations")
            cut = ablations(template, sandbox, ids, mode, root)
            log("profile: baseline")
            base = baseline_cpu(copy_app_db(template, root / "base.db"), sandbox, mode, len(ids))
            log("profile: strava_sweep_job in-process")
            job = in_process_job(
                copy_app_db(template, root / "job.db"), sandbox, ids, mode, root / "job"
            )
            log("profile: strava_sweep_job in-process, per-athlete events dropped")
            silent = in_process_job(
                copy_app_db(template, root / "silent.db"),
                sandbox,
                ids,
                mode,
                root / "silent",
                events=False,
            )
        finally:
            sandbox.stop()
            db.dispose_engines()
    return {
        "benchmark": f"profile_{mode}",
        "athletes": athletes,
        "sync_athlete_loop": {**plain, **loop},
        "baseline_cpu_ms_per_athlete": base,
        "cpu_ms_per_athlete_with_cost_removed": cut,
        "sweep_job_in_process": job,
        "sweep_job_in_process_without_partition_events": silent,
        "dagster_event_overhead_cpu_ms_per_athlete": round(
            job["cpu_ms_per_athlete"] - plain["cpu_ms_per_athlete"], 2
        ),
    }


def table_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows: one per part of the per-athlete CPU."""
    loop = result["sync_athlete_loop"]
    rows: list[list[Any]] = [
        ["sync_athlete loop, CPU", loop["cpu_ms_per_athlete"]],
        ["  wall (one thread)", loop["wall_ms_per_athlete"]],
        ["  CPU under cProfile", loop["profiled_cpu_ms_per_athlete"]],
    ]
    shares = loop["share_of_cpu_by_part"]
    for part, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        rows.append([f"  {part} (% of CPU, inclusive)", round(100 * share, 1)])
    for name, ms in result["cpu_ms_per_athlete_with_cost_removed"].items():
        rows.append([f"loop CPU with {name}", ms])
    rows += [
        ["baseline.py, total CPU", result["baseline_cpu_ms_per_athlete"]],
        ["sweep job in-process, total CPU", result["sweep_job_in_process"]["cpu_ms_per_athlete"]],
        ["  minus the bare loop", result["dagster_event_overhead_cpu_ms_per_athlete"]],
        [
            "  without per-athlete events",
            result["sweep_job_in_process_without_partition_events"]["cpu_ms_per_athlete"],
        ],
        ["DB transactions / athlete", loop["db_transactions_per_athlete"]],
        ["DB statements / athlete", loop["db_statements_per_athlete"]],
        ["token decrypts / athlete", loop["token_decrypts_per_athlete"]],
        ["HTTP requests / athlete", loop["http_requests_per_athlete"]],
    ]
    return rows


def main() -> None:
    """Profile, print the top functions, the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--athletes", type=int, default=300)
    parser.add_argument("--mode", choices=["incremental", "full"], default="incremental")
    args = parser.parse_args()
    result = run(args.athletes, args.mode)
    print(result["sync_athlete_loop"]["top_tottime"])
    print_table(table_rows(result), [f"{result['benchmark']} (ms per athlete)", "value"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
