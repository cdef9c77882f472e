"""The Dagster UI shows athletes as partitions: dagster-webserver + headless Chromium.

Skipped when Chromium is not installed (`apt-get install chromium`; `.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.source import STRAVA_ACTIVITIES
from sync_pipeline_tests.serving import wait_for_server

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ATHLETES = ["424242001", "424242002", "424242003"]

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(home: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNC_"))}
    env.update(
        DAGSTER_HOME=str(home),
        SYNC_DATABASE_URL=db_url,
        SYNC_TOKEN_KEY="unused-by-the-ui",
        STRAVA_CLIENT_ID="1",
        STRAVA_CLIENT_SECRET="unused",
        STRAVA_BASE_URL="http://127.0.0.1:9",
        STRAVA_TIME_SCALE="1",
        STRAVA_STREETS_FILE="",
    )
    for platform in ("GITHUB", "YOUTUBE", "X", "INSTAGRAM"):
        for key in ("CLIENT_ID", "CLIENT_SECRET"):
            env[f"{platform}_{key}"] = "unused"
        env[f"{platform}_BASE_URL"] = env[f"{platform}_OAUTH_URL"] = "http://127.0.0.1:9"
    return env


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """dagster-webserver on the project's workspace, with three athletes materialized."""
    root = tmp_path_factory.mktemp("ui")
    home = root / "home"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions(strava_athletes.name or "", ATHLETES)
            for key in ATHLETES[:2]:
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(STRAVA_ACTIVITIES, partition=key)
                )
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "dagster-webserver"),
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=root,
        env=_env(home, f"sqlite:///{root / 'app.db'}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(f"{url}/server_info", proc, 120, what="dagster-webserver")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def render(url: str) -> str:
    """The page's DOM after its scripts ran (headless Chromium, virtual time)."""
    assert CHROMIUM is not None
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_asset_page_lists_athletes_as_partitions(webserver: str) -> None:
    dom = render(f"{webserver}/assets/strava_activities?view=partitions")
    assert "strava_activities" in dom
    for key in ATHLETES:
        assert key in dom, f"partition {key} not rendered"
    assert "424242004" not in dom  # only what the instance holds
