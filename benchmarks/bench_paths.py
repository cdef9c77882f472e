"""Paths, commands and credentials every benchmark shares."""

from __future__ import annotations

import sys
from pathlib import Path

import sync_pipeline

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
