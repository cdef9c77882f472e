"""CPU and memory accounting of process trees (``/proc``), sampled while a benchmark runs."""

from __future__ import annotations

import os
import resource
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


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
