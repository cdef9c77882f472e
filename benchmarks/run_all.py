"""Run the benchmarks of issue #5 and print one table plus one final JSON line.

Every benchmark runs against the Strava sandbox on loopback with a fresh temporary Dagster
home, through the real daemon and run queue, side by side with the plain baseline
(`baseline.py`) in the same invocation, and reports ratios. Benchmarks are never tests.

    .venv/bin/python benchmarks/run_all.py                      # everything, full scale
    .venv/bin/python benchmarks/run_all.py --quick              # small scale, minutes
    .venv/bin/python benchmarks/run_all.py --only sweep --athletes 1000,3000,10000
    .venv/bin/python benchmarks/run_all.py --snapshot HEAD      # measure a committed tree

`--snapshot REV` measures `git archive REV` of the project instead of the working tree (the
run re-executes itself with that tree first on PYTHONPATH), so edits made meanwhile do not
leak into a long run. Progress goes to stderr; stdout carries the table and the JSON line.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
ALL = ["sweep", "profile", "rate", "latency", "footprint", "scale"]


def reexec_with_snapshot(rev: str) -> None:
    """Extract `rev` into a temp dir and run this script again against it."""
    dest = Path(tempfile.mkdtemp(prefix="bench-src-"))
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(dest), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "BENCH_SOURCE": f"{rev} ({commit})",
        "BENCH_SNAPSHOT_DIR": str(dest),
    }
    args = [a for a in sys.argv[1:]]
    i = args.index("--snapshot")
    del args[i : i + 2]
    # The snapshot's own benchmark scripts run too (the baseline included), so edits to the
    # working tree cannot leak into a measurement.
    script = dest / "benchmarks" / "run_all.py"
    os.execve(sys.executable, [sys.executable, str(script), *args], env)


def main() -> None:
    """Parse arguments, run the chosen benchmarks, print the table and the JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated of {ALL}")
    parser.add_argument("--quick", action="store_true", help="small scale (validation)")
    parser.add_argument(
        "--athletes",
        type=lambda v: [int(x) for x in v.split(",")],
        help="incremental sweep size(s), comma-separated (10000; e.g. 1000,3000,10000)",
    )
    parser.add_argument("--full-athletes", type=int, help="full sweep size (1000)")
    parser.add_argument("--rate-athletes", type=int, help="rate-budget benchmark size (200)")
    parser.add_argument(
        "--time-scale",
        type=int,
        action="append",
        help="rate benchmark time scale(s); 60 = 15-minute windows of 15 s (repeatable)",
    )
    parser.add_argument("--samples", type=int, help="latency samples (20)")
    parser.add_argument("--scale-athletes", type=int, help="partitions for the scale test")
    parser.add_argument("--snapshot", metavar="REV", help="measure `git archive REV`")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.snapshot:
        reexec_with_snapshot(args.snapshot)
    snapshot = os.environ.get("BENCH_SNAPSHOT_DIR")
    if snapshot and Path(snapshot).name.startswith("bench-src-"):
        atexit.register(shutil.rmtree, snapshot, True)

    sys.path.insert(0, str(BENCH_DIR))
    from bench_paths import PROJECT_ROOT
    from bench_report import log, print_table

    quick = args.quick
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {ALL}")
    results: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    started = time.time()
    load_start = Path("/proc/loadavg").read_text().split()[:3]

    def record(name: str, fn: Callable[[], dict[str, Any]], to_rows: Callable[..., Any]) -> None:
        log(f"=== {name}")
        try:
            result = fn()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            results.append({"benchmark": name, "error": f"{type(exc).__name__}: {exc}"})
            rows.append([name, "ERROR", str(exc)[:80]])
            return
        results.append(result)
        if args.json_out:  # partial results survive a later failure
            args.json_out.write_text(json.dumps({"partial": True, "benchmarks": results}))
        try:
            rows.extend(to_rows(result))
        except Exception as exc:
            rows.append([name, "table rows failed", f"{type(exc).__name__}: {exc}"])

    if "sweep" in chosen:
        import dagster_floor
        import sweep

        log("=== dagster_floor")
        floor = dagster_floor.measure(events=200 if quick else 2000)
        results.append(floor)
        sizes = args.athletes or [200 if quick else 10_000]
        full = args.full_athletes or (20 if quick else 1_000)
        for n in sizes:
            record(
                f"sweep_incremental_{n}",
                lambda n=n: sweep.run("incremental", n, floor=floor),  # type: ignore[misc]
                sweep.table_rows,
            )
        record("sweep_full", lambda: sweep.run("full", full, floor=floor), sweep.table_rows)
    if "profile" in chosen:
        import profile_sync

        n = 100 if quick else 500
        record("profile_incremental", lambda: profile_sync.run(n, "incremental"), prof_rows)
        record("profile_full", lambda: profile_sync.run(max(n // 25, 4), "full"), prof_rows)
    if "rate" in chosen:
        import rate_budget

        n = args.rate_athletes or (100 if quick else 200)
        for factor in args.time_scale or ([90] if quick else [60, 15]):
            record(
                f"rate_budget_x{factor}",
                lambda factor=factor: rate_budget.run(n, factor),  # type: ignore[misc]
                rate_budget.table_rows,
            )
    if "latency" in chosen:
        import latency

        samples = args.samples or (5 if quick else 20)
        record("latency", lambda: latency.run(samples), latency.table_rows)
    if "footprint" in chosen:
        import footprint

        record("footprint", lambda: footprint.run(results, quick=quick), footprint.table_rows)
    if "scale" in chosen:
        import scale as scale_bench

        n = args.scale_athletes or (10_000 if quick else 100_000)
        joining = 100 if quick else 1000
        record("scale", lambda: scale_bench.run(n, connect=joining), scale_bench.table_rows)

    out = {
        "issue": 5,
        "source": os.environ.get("BENCH_SOURCE", str(PROJECT_ROOT)),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start_end": [load_start, Path("/proc/loadavg").read_text().split()[:3]],
        },
        "seconds": round(time.time() - started, 1),
        "benchmarks": results,
    }
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2))
    print()
    print_table(rows, ["benchmark", "contender / figure", "values ..."])
    print(json.dumps(out))


def prof_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Compact rows of a profile result."""
    loop = result["sync_athlete_loop"]
    shares = sorted(loop["share_of_cpu_by_part"].items(), key=lambda kv: -kv[1])[:4]
    return [
        [
            result["benchmark"],
            "CPU ms/athlete: pipeline loop / baseline / sweep job",
            f"{loop['cpu_ms_per_athlete']} / {result['baseline_cpu_ms_per_athlete']} / "
            f"{result['sweep_job_in_process']['cpu_ms_per_athlete']}",
        ],
        [
            "",
            "DB txns / statements / decrypts / HTTP per athlete",
            f"{loop['db_transactions_per_athlete']} / {loop['db_statements_per_athlete']} / "
            f"{loop['token_decrypts_per_athlete']} / {loop['http_requests_per_athlete']}",
        ],
        ["", "top CPU shares", ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares)],
    ]


if __name__ == "__main__":
    main()
