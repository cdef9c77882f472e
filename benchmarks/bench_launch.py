"""Runs submitted to the instance queue through one workspace load (``launch_runs.py``)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_paths import BENCH_DIR, PYTHON, WORKSPACE


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
