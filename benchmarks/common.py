"""Shared benchmark plumbing: sandbox, app database, bulk-connected athletes, the real daemon,
run submission and waiting, and CPU/memory accounting of process trees.

Everything runs on loopback in a temp directory: a Dagster home holding the project's
`dagster.yaml`, a migrated SQLite app database, the Strava sandbox served in this process
(`SandboxServer`), and `dagster-daemon run -w workspace.yaml` in its own session with a temp
working directory (so a project `.env` cannot redirect it). Runs are submitted to the
instance's queue the way `dagster job launch` does (`launch_runs.py`) and awaited by polling
the instance's run records against a deadline.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.scheduler.instigation import TickStatus
from sqlalchemy import insert

import sync_pipeline
from sync_pipeline.core import db
from sync_pipeline.core.crypto import TokenCipher, generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Athlete, OAuthToken, StravaActivity, SyncState
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.tokens import TokenSet
from sync_pipeline.defs.strava.models import SummaryActivity
from sync_pipeline.defs.strava.sync import activity_row as sync_activity_row
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline.sandbox.strava import data as sandbox_data
from sync_pipeline.sandbox.strava.app import create_app
from sync_pipeline.sandbox.strava.state import StravaSandboxConfig, StravaSandboxState

PROJECT_ROOT = Path(sync_pipeline.__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
BIN = Path(sys.executable).parent
PYTHON = sys.executable
CLIENT_ID = "12345"
CLIENT_SECRET = "bench-secret"
SCOPES = "read,activity:read_all"
PARTITIONS = "strava_athletes"
UNLIMITED = 1_000_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
DUMMY_PLATFORM_ENV = {
    f"{p}_{k}": v
    for p in ("GITHUB", "YOUTUBE", "X", "INSTAGRAM")
    for k, v in (
        ("CLIENT_ID", "bench"),
        ("CLIENT_SECRET", "bench"),
        ("BASE_URL", "http://127.0.0.1:9"),
        ("OAUTH_URL", "http://127.0.0.1:9"),
    )
}


def log(message: str) -> None:
    """Progress on stderr (stdout carries the table and the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- sandbox


_polyline_cache: dict[str, str] = {}


def cheap_polylines() -> None:
    """Make the sandbox's summary polylines cheap (one real polyline per city, reused).

    The sandbox routes each activity along its city's streets to draw `map.summary_polyline`
    (~1 ms per activity), which would make the in-process sandbox, not the contenders, the
    bottleneck of a 1M-activity sync. Payload shape and size stay realistic; both contenders
    receive identical bytes.
    """
    real = sandbox_data.summary_polyline
    if getattr(real, "_bench_cheap", False):
        return

    def cheap(spec: sandbox_data.ActivitySpec) -> str:
        if not spec.sport.gps or spec.manual:
            return ""
        line = _polyline_cache.get(spec.city.name)
        if line is None:
            line = _polyline_cache[spec.city.name] = real(spec)
        return line

    cheap._bench_cheap = True  # type: ignore[attr-defined]
    sandbox_data.summary_polyline = cheap


@dataclass
class Sandbox:
    """The Strava sandbox served on loopback by this process."""

    state: StravaSandboxState
    server: SandboxServer

    @property
    def url(self) -> str:
        """Base URL of the sandbox."""
        return self.server.url

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the thread serving the sandbox."""
        thread = self.server._thread
        native = thread.native_id if thread is not None else None
        return thread_cpu(native) if native is not None else 0.0

    def stop(self) -> None:
        """Stop serving and the push worker."""
        self.state.close(timeout=2.0)
        self.server.stop()

    def reset(self) -> None:
        """Zero the request counters and the rate-limit usage (between contenders)."""
        self.state.reset_stats()
        self.state.reset_usage()

    def live_counts(self, athlete_ids: Iterable[int]) -> dict[int, int]:
        """Live activities per athlete, as the API would list them with activity:read_all."""
        return {a: len(self.state.activity_ids(a)) for a in athlete_ids}


def start_sandbox(
    counts: Sequence[int],
    *,
    rate_limits: bool = False,
    time_scale: float = 1.0,
    seed: int = 42,
) -> Sandbox:
    """A sandbox with one athlete per entry of `counts` (ids 1001, 1002, ...)."""
    cheap_polylines()
    limits: dict[str, int] = {}
    if not rate_limits:
        # The sandbox still counts usage and sends X-RateLimit headers with its limits; the
        # pipeline's budget adopts the limits it is told. "Limits off" is therefore an API
        # that advertises (and enforces) limits nobody reaches.
        limits = {
            f"{kind}_limit_{window}": UNLIMITED
            for kind in ("read", "overall")
            for window in ("15min", "daily")
        }
    config = StravaSandboxConfig(
        seed=seed,
        athletes=len(counts),
        activity_counts=dict(enumerate(counts)),
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        rate_limits_enabled=rate_limits,
        time_scale=time_scale,
        **limits,  # type: ignore[arg-type]
    )
    state = StravaSandboxState(config)
    server = SandboxServer(create_app(state), log_level="error").start()
    return Sandbox(state, server)


# ----------------------------------------------------------------------- app database


def create_app_db(path: Path, token_key: str | None = None) -> AppDatabaseResource:
    """A new SQLite app database at `path`, migrated to head."""
    url = f"sqlite:///{path}"
    db.upgrade(url)
    return AppDatabaseResource(url=url, token_key=token_key or generate_key())


def copy_app_db(src: AppDatabaseResource, path: Path) -> AppDatabaseResource:
    """A file copy of a SQLite app database (checkpointed first), with the same key."""
    src_path = Path(src.url.split("///", 1)[1])
    engine = db.get_engine(src.url)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose_engines()
    shutil.copyfile(src_path, path)
    return AppDatabaseResource(url=f"sqlite:///{path}", token_key=src.token_key)


def activity_row(d: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The strava_activities row the sync writes for one API activity (the sync's own mapping)."""
    return sync_activity_row(SummaryActivity.from_api(d), now)


def connect_athletes(
    app_db: AppDatabaseResource, sandbox: Sandbox, athlete_ids: Sequence[int]
) -> float:
    """Connect athletes without OAuth round trips; returns the seconds it took.

    Tokens come from the sandbox (`issue_tokens`, the same grant the consent flow makes) and
    are stored encrypted: through `TokenStore.save` for up to 20,000 athletes, above that in
    bulk with the same cipher (one transaction instead of one per athlete).
    """
    started = time.perf_counter()
    grants = {a: sandbox.state.issue_tokens(a, SCOPES) for a in athlete_ids}
    rows = []
    for a, grant in grants.items():
        profile = grant["athlete"]
        rows.append(
            {
                "id": a,
                "username": profile.get("username"),
                "firstname": profile.get("firstname"),
                "lastname": profile.get("lastname"),
                "city": profile.get("city"),
                "country": profile.get("country"),
                "scopes": SCOPES,
                "state": "connected",
                "raw": {k: v for k, v in profile.items() if k != "email"},
            }
        )
    with transaction(app_db.url) as s:
        for chunk in chunks(rows, 2000):
            s.execute(insert(Athlete), chunk)
    tokens = {
        a: TokenSet(
            access_token=str(g["access_token"]),
            refresh_token=str(g["refresh_token"]),
            expires_at=int(g["expires_at"]),
            scopes=SCOPES,
        )
        for a, g in grants.items()
    }
    if len(tokens) <= 20_000:
        store = app_db.tokens("strava")
        for a, t in tokens.items():
            store.save(str(a), t)
    else:
        cipher = TokenCipher(app_db.token_key)
        token_rows = [
            {
                "provider": "strava",
                "account_id": str(a),
                "access_token_enc": cipher.encrypt(t.access_token),
                "refresh_token_enc": cipher.encrypt(t.refresh_token or ""),
                "expires_at": t.expires_at,
                "scopes": t.scopes,
                "version": 0,
            }
            for a, t in tokens.items()
        ]
        with transaction(app_db.url) as s:
            for chunk in chunks(token_rows, 2000):
                s.execute(insert(OAuthToken), chunk)
        sample = next(iter(tokens))
        assert app_db.tokens("strava").get(str(sample)) == tokens[sample]
    return time.perf_counter() - started


def seed_synced(app_db: AppDatabaseResource, sandbox: Sandbox, athlete_ids: Sequence[int]) -> int:
    """Store the athletes' current activities as a completed full sync would have.

    Rows are written straight from the sandbox state (no HTTP), processed, and each athlete
    gets a succeeded sync state with `last_full_sync_at`, so the next sweep is incremental.
    Returns the number of activities stored.
    """
    now = dt.datetime.now(dt.UTC)
    total = 0
    state_rows = []
    batch: list[dict[str, Any]] = []
    with transaction(app_db.url) as s:
        for a in athlete_ids:
            token = sandbox.state.authenticate(str(sandbox.state._grants[a].access_token))
            page = 1
            while True:
                items = sandbox.state.list_activities(token, page=page, per_page=200)
                for d in items:
                    row = activity_row(d, now)
                    row["processed_at"] = now
                    batch.append(row)
                if len(batch) >= 2000:
                    s.execute(insert(StravaActivity), batch)
                    total += len(batch)
                    batch = []
                if len(items) < 200:
                    break
                page += 1
            state_rows.append(
                {
                    "source": "strava",
                    "partition_key": str(a),
                    "status": "succeeded",
                    "pages_done": 0,
                    "items_synced": 0,
                    "last_success_at": now,
                    "last_full_sync_at": now,
                    "consecutive_failures": 0,
                    "failure_seq": 0,
                }
            )
        if batch:
            s.execute(insert(StravaActivity), batch)
            total += len(batch)
        for chunk in chunks(state_rows, 2000):
            s.execute(insert(SyncState), chunk)
    return total


def chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most `n` items."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


# --------------------------------------------------------------------- process usage


@dataclass(frozen=True)
class ProcStat:
    """One line of /proc/<pid>/stat, the fields we use."""

    pid: int
    ppid: int
    sid: int
    cpu: float  # own + waited-for children, seconds
    rss: int  # bytes
    start: int  # clock ticks after boot (with pid: a process identity)
    own_cpu: float = 0.0  # own utime + stime only, seconds


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat (None if the process is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    ticks = sum(int(rest[i]) for i in (11, 12, 13, 14))
    return ProcStat(
        pid=pid,
        ppid=int(rest[1]),
        sid=int(rest[3]),
        cpu=ticks / CLK_TCK,
        rss=int(rest[21]) * PAGE_SIZE,
        start=int(rest[19]),
        own_cpu=(int(rest[11]) + int(rest[12])) / CLK_TCK,
    )


def read_hwm(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process in bytes; 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def cmdline(pid: int) -> str:
    """The process's command line, spaces between arguments."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def process_kind(command: str) -> str:
    """A label for a process in a Dagster deployment (by its command line)."""
    head = command[:200]
    rules = [
        ("resource_tracker", "other"),
        ("dagster-daemon", "daemon"),
        ("dagster._daemon", "daemon"),
        ("dagster_webserver", "webserver"),
        ("dagster-webserver", "webserver"),
        ("dagster dev", "dagster_dev"),
        ("api grpc", "code_server"),
        ("code-server start", "code_server"),
        ("multiprocessing.spawn", "run_worker"),
        ("api execute_run", "run_worker"),
        ("sync-pipeline dev", "main_job_cli_and_sandboxes"),
        ("launch_runs.py", "launcher"),
    ]
    for needle, kind in rules:
        if needle in head:
            return kind
    return "other"


def tree(root: int) -> list[ProcStat]:
    """`root` and its descendants (by session when `root` leads one, and by parent links)."""
    stats = [s for p in os.listdir("/proc") if p.isdigit() and (s := read_stat(int(p)))]
    root_stat = next((s for s in stats if s.pid == root), None)
    children: dict[int, list[ProcStat]] = {}
    for s in stats:
        children.setdefault(s.ppid, []).append(s)
    found = {s.pid: s for s in stats if root_stat is not None and s.sid == root == root_stat.sid}
    todo = [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            if child.pid not in found:
                found[child.pid] = child
            todo.append(child.pid)
    if root_stat is not None:
        found[root] = root_stat
    return list(found.values())


@dataclass
class TreeUsage:
    """CPU and memory of a process tree over a sampled interval."""

    cpu_seconds: float = 0.0
    # Own CPU of each process between samples, by kind (a process that starts and ends
    # between two samples is missed: `cpu_seconds` minus their sum is reported unattributed).
    cpu_seconds_by_kind: dict[str, float] = field(default_factory=dict)
    peak_rss_sum: int = 0
    peak_hwm_by_kind: dict[str, int] = field(default_factory=dict)
    processes_seen_by_kind: dict[str, int] = field(default_factory=dict)
    commands_by_kind: dict[str, set[str]] = field(default_factory=dict)
    samples: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON form (MB, seconds)."""
        return {
            "cpu_seconds": round(self.cpu_seconds, 2),
            "cpu_seconds_by_kind": {
                **{k: round(v, 2) for k, v in sorted(self.cpu_seconds_by_kind.items())},
                "unattributed": round(
                    max(0.0, self.cpu_seconds - sum(self.cpu_seconds_by_kind.values())), 2
                ),
            },
            "peak_rss_sum_mb": mb(self.peak_rss_sum),
            "peak_rss_by_kind_mb": {k: mb(v) for k, v in sorted(self.peak_hwm_by_kind.items())},
            "processes_by_kind": dict(sorted(self.processes_seen_by_kind.items())),
            "commands_by_kind": {k: sorted(v) for k, v in sorted(self.commands_by_kind.items())},
        }


def mb(n: int) -> float:
    """Bytes to MB, one decimal."""
    return round(n / 1_048_576, 1)


class TreeSampler:
    """Samples a process tree every `interval` seconds in a thread.

    CPU is utime+stime+cutime+cstime summed over the live tree, so time of processes that
    exited and were reaped inside the tree is kept (it moves into the parent's cutime).
    Memory: the peak of the summed RSS, and each process's VmHWM by kind.
    """

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root = root
        self.interval = interval
        self.usage = TreeUsage()
        self._first_cpu: float | None = None
        self._last_cpu = 0.0
        self._seen: dict[tuple[int, int], str] = {}
        self._own_cpu: dict[tuple[int, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def sample(self) -> None:
        """Take one sample."""
        procs = tree(self.root)
        if not procs:
            return
        cpu = sum(p.cpu for p in procs)
        if self._first_cpu is None:
            self._first_cpu = cpu
        self._last_cpu = max(self._last_cpu, cpu)
        self.usage.peak_rss_sum = max(self.usage.peak_rss_sum, sum(p.rss for p in procs))
        for p in procs:
            key = (p.pid, p.start)
            kind = self._seen.get(key)
            if kind is None:
                command = cmdline(p.pid)
                kind = self._seen[key] = process_kind(command)
                counts = self.usage.processes_seen_by_kind
                counts[kind] = counts.get(kind, 0) + 1
                examples = self.usage.commands_by_kind.setdefault(kind, set())
                if len(examples) < 4:
                    examples.add(command[:160])
            peaks = self.usage.peak_hwm_by_kind
            peaks[kind] = max(peaks.get(kind, 0), read_hwm(p.pid))
            # A process first seen after the first sample started inside the interval: all
            # of its CPU so far counts; processes present at the first sample start at 0.
            before = self._own_cpu.get(key, p.own_cpu if self.usage.samples == 0 else 0.0)
            self._own_cpu[key] = p.own_cpu
            by_kind = self.usage.cpu_seconds_by_kind
            by_kind[kind] = by_kind.get(kind, 0.0) + p.own_cpu - before
        self.usage.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> TreeSampler:
        """Take a first sample and keep sampling in the background."""
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> TreeUsage:
        """Take a last sample and return the usage over the interval."""
        self._stop.set()
        self._thread.join()
        self.sample()
        self.usage.cpu_seconds = self._last_cpu - (self._first_cpu or 0.0)
        return self.usage


def loadavg() -> float:
    """The 1-minute load average (other work on this machine disturbs timings)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def thread_cpu(native_id: int) -> float:
    """CPU seconds of one thread of this process (/proc/self/task/<tid>/stat)."""
    try:
        raw = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    rest = raw[raw.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def self_cpu() -> float:
    """CPU seconds of this process (the harness and the in-process sandbox)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------- Dagster


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
            return bool(ticks) and ticks[0].status != TickStatus.STARTED
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


@dataclass
class Launch:
    """Runs submitted by `launch_runs.py`."""

    run_ids: list[str]
    started_at: float  # launcher process start
    loaded_at: float  # workspace loaded: the first run is being created
    first_submit_at: float
    last_submit_at: float
    workspace_load_seconds: float
    cpu_seconds: float


def launch_runs(specs: Sequence[dict[str, Any]], env: dict[str, str], workdir: Path) -> Launch:
    """Submit runs to the instance queue through one workspace load (as `dagster job launch`
    does for one run), in a subprocess with the deployment's environment."""
    spec_file = workdir / f"launch-{time.time_ns()}.json"
    spec_file.write_text(json.dumps(list(specs)))
    started = time.time()
    proc = subprocess.Popen(
        [PYTHON, str(BENCH_DIR / "launch_runs.py"), "-w", str(WORKSPACE), str(spec_file)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"launch_runs failed ({proc.returncode}):\n{err.decode()[-3000:]}")
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("LAUNCHED ")]
    if not lines:
        raise RuntimeError(f"launch_runs printed no result:\n{out.decode()[-2000:]}")
    result = json.loads(lines[-1].removeprefix("LAUNCHED "))
    return Launch(
        run_ids=list(result["run_ids"]),
        started_at=started,
        loaded_at=float(result["loaded_at"]),
        first_submit_at=float(result["first_submit_at"]),
        last_submit_at=float(result["last_submit_at"]),
        workspace_load_seconds=float(result["workspace_load_seconds"]),
        cpu_seconds=float(result["cpu_seconds"]),
    )


def temp_root(prefix: str, keep: bool = False) -> contextlib.AbstractContextManager[str]:
    """A temp directory, removed afterwards unless `keep`."""
    if keep:
        return contextlib.nullcontext(tempfile.mkdtemp(prefix=prefix))
    return tempfile.TemporaryDirectory(prefix=prefix)


def pct(values: Sequence[float], q: float) -> float:
    """Percentile by linear interpolation (q in 0..100)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def dir_size(path: Path) -> int:
    """Bytes under a directory (files only)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    """A plain aligned table on stdout (rows may differ in length; numbers right-aligned)."""
    width = max([len(header), *(len(r) for r in rows)])
    cells = [[*map(str, header), *[""] * (width - len(header))]]
    numeric: list[list[bool]] = [[False] * width]
    for r in rows:
        cells.append([*(fmt(c) for c in r), *[""] * (width - len(r))])
        numeric.append([isinstance(c, int | float) for c in r] + [False] * (width - len(r)))
    widths = [max(len(r[i]) for r in cells) for i in range(width)]
    for n, (r, nums) in enumerate(zip(cells, numeric, strict=True)):
        line = "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, nums, strict=True)
        )
        print(line.rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def fmt(value: Any) -> str:
    """Compact number formatting for tables."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
