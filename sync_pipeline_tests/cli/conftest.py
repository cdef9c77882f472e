"""CLI test fixtures: an isolated environment per test (no `.env`, no real home), the settings
the CLI reads pointed at a fresh app database, a temporary Dagster home and the sandboxes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sync_pipeline.cli import context
from sync_pipeline.cli.main import cli
from sync_pipeline.core import db
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.settings import PLATFORM_PORTS, outreach_sandbox_env
from sync_pipeline.sandbox.promidata import (
    PromidataSandboxConfig,
    PromidataSandboxState,
    create_app,
)
from sync_pipeline.sandbox.server import SandboxServer
from sync_pipeline_tests.conftest import CLIENT_ID, CLIENT_SECRET, Sandbox
from sync_pipeline_tests.platforms import CLIENT_ID as PLATFORM_CLIENT_ID
from sync_pipeline_tests.platforms import CLIENT_SECRET as PLATFORM_CLIENT_SECRET
from sync_pipeline_tests.platforms import Box
from sync_pipeline_tests.serving import wait_for_server

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Every variable the CLI reads (SYNC_TEST_* stay: the shared fixtures read them).
SETTINGS_PREFIXES = ("SYNC_", "STRAVA_", "DAGSTER_")
PLATFORM_VARIABLES = {
    f"{p.upper()}_{k}"
    for p in PLATFORM_PORTS
    for k in ("CLIENT_ID", "CLIENT_SECRET", "BASE_URL", "OAUTH_URL")
}


def is_setting(name: str) -> bool:
    """Whether the CLI reads this environment variable (test-only variables excepted)."""
    return (
        name.startswith(SETTINGS_PREFIXES) and not name.startswith("SYNC_TEST_")
    ) or name in PLATFORM_VARIABLES


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run every test in `tmp_path` with none of the CLI's settings set.

    Commands write `os.environ` themselves (`init`, `.env` loading, DAGSTER_HOME defaults), so
    the whole environment is restored afterwards, not only what monkeypatch changed.
    """
    saved = dict(os.environ)
    for name in list(os.environ):
        if is_setting(name):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    os.environ.clear()
    os.environ.update(saved)
    db.dispose_engines()


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def invoke(*args: str, exit_code: int = 0) -> Result:
    """Run `sync-pipeline ARGS` in this process; unexpected exceptions propagate."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == exit_code, (
        f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def error_of(result: Result) -> str:
    """The `Error: ...` message a failed command printed, on one line."""
    assert result.exit_code != 0
    return " ".join(result.stderr.split())


@dataclass(frozen=True)
class CliEnv:
    """The settings a test's commands run with."""

    home: Path
    dagster_home: Path
    db_url: str
    token_key: str


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    """A Dagster home holding the project's dagster.yaml (as `init` leaves it)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.fixture
def cli_env(
    tmp_path: Path, db_url: str, dagster_home: Path, monkeypatch: pytest.MonkeyPatch
) -> CliEnv:
    """SYNC_HOME, SYNC_DATABASE_URL (the migrated test database), SYNC_TOKEN_KEY, DAGSTER_HOME."""
    env = CliEnv(
        home=tmp_path / "sync_home",
        dagster_home=dagster_home,
        db_url=db_url,
        token_key=generate_key(),
    )
    monkeypatch.setenv("SYNC_HOME", str(env.home))
    monkeypatch.setenv("SYNC_DATABASE_URL", env.db_url)
    monkeypatch.setenv("SYNC_TOKEN_KEY", env.token_key)
    monkeypatch.setenv("DAGSTER_HOME", str(env.dagster_home))
    return env


@pytest.fixture
def strava_env(cli_env: CliEnv, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """`cli_env` plus the Strava settings pointed at the sandbox; returns the sandbox."""
    monkeypatch.setenv("STRAVA_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("STRAVA_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("STRAVA_BASE_URL", sandbox.url)
    monkeypatch.setenv("STRAVA_TIME_SCALE", "1")
    return sandbox


def new_process() -> None:
    """Forget the settings earlier commands loaded into `os.environ` (as a new shell would)."""
    for name in list(os.environ):
        if is_setting(name):
            del os.environ[name]


@pytest.fixture
def github(cli_env: CliEnv, boxes: Callable[..., Box], monkeypatch: pytest.MonkeyPatch) -> Box:
    """The GitHub sandbox with one account (10 days of history); GITHUB_* point at it."""
    box = boxes("github")
    box.account(history_days=10)
    monkeypatch.setenv("GITHUB_CLIENT_ID", PLATFORM_CLIENT_ID)
    monkeypatch.setenv("GITHUB_CLIENT_SECRET", PLATFORM_CLIENT_SECRET)
    monkeypatch.setenv("GITHUB_BASE_URL", box.url)
    monkeypatch.setenv("GITHUB_OAUTH_URL", box.url)
    return box


@pytest.fixture
def launchable(tmp_path: Path, cli_env: CliEnv, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Let commands queue runs with `dagster job launch`; returns a temporary "project root".

    The CLI launches with `-w PROJECT_ROOT/workspace.yaml`, in the Dagster home and with its
    own resolved environment; a copy of the workspace file in a temporary project root keeps
    the checkout out of the test (tests may put a `.env` there: it must not be read). Every
    variable the definitions bind is set, as `init`'s `.env` sets them. No webserver answers
    at DAGSTER_WEBSERVER_URL (a free port: not the default, where a demo may run), so runs
    are queued with `dagster job launch`.
    """
    root = tmp_path / "project"
    root.mkdir()
    shutil.copyfile(PROJECT_ROOT / "workspace.yaml", root / "workspace.yaml")
    monkeypatch.setattr(context, "PROJECT_ROOT", root)
    defaults = {
        "STRAVA_CLIENT_ID": CLIENT_ID,
        "STRAVA_CLIENT_SECRET": CLIENT_SECRET,
        "STRAVA_BASE_URL": "http://127.0.0.1:9",
        "STRAVA_TIME_SCALE": "1",
        "STRAVA_STREETS_FILE": "",
        "DAGSTER_WEBSERVER_URL": f"http://127.0.0.1:{free_port()}",
        **{name: "http://127.0.0.1:9" for name in PLATFORM_VARIABLES if "URL" in name},
        **{name: "unused" for name in PLATFORM_VARIABLES if "CLIENT" in name},
        **outreach_sandbox_env(9),  # nothing listens there: queued runs do not start here
    }
    for name, value in defaults.items():
        if name not in os.environ:
            monkeypatch.setenv(name, value)
    return root


BIN = Path(sys.executable).parent
STARTUP_SECONDS = 90.0


def user_env() -> dict[str, str]:
    """The environment of a user's shell: none of the CLI's settings (they are in `.env`)."""
    return {k: v for k, v in os.environ.items() if not is_setting(k)}


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sync-pipeline ARGS` as a user runs it: a new process in `cwd`, to its end."""
    return subprocess.run(
        [str(BIN / "sync-pipeline"), *args],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def start_cli(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`sync-pipeline ARGS` in `cwd`, running in the background (its own session)."""
    return subprocess.Popen(
        [str(BIN / "sync-pipeline"), *args],
        cwd=cwd,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@contextmanager
def project_sandboxes(cwd: Path, *, platforms: bool) -> Iterator[str]:
    """`sync-pipeline init` in `cwd`, then `sync-pipeline sandbox` (the platforms too, if
    asked) running on the ports `init` wrote; yields the Strava sandbox's URL."""
    port = free_port()
    done = run_cli(cwd, "init", "--sandbox-port", str(port))
    assert done.returncode == 0, done.stderr
    args = ["sandbox", "--athletes", "2", *([] if platforms else ["--no-platforms"])]
    proc = start_cli(cwd, *args)
    last = f"http://127.0.0.1:{port + (len(PLATFORM_PORTS) if platforms else 0)}"
    try:
        wait_for_server(f"{last}/_sandbox/faults", proc, STARTUP_SECONDS, what="the sandboxes")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)


@pytest.fixture
def promidata_env(
    cli_env: CliEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PromidataSandboxState]:
    """The Promidata sandbox; PROMIDATA_* point at it and at a temporary image directory."""
    state = PromidataSandboxState(PromidataSandboxConfig(suppliers={"A23": 4, "B7": 2}))
    with SandboxServer(create_app(state)) as server:
        monkeypatch.setenv("PROMIDATA_BASE_URL", server.url)
        monkeypatch.setenv("PROMIDATA_IMAGES_DIR", str(tmp_path / "images"))
        yield state
