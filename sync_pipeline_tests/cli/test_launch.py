"""Queueing runs (cli/_launch.py) through a real `dagster-webserver` on loopback, and with
`dagster job launch` when no webserver of the command's Dagster home answers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import dagster as dg
import httpx
import pytest

from sync_pipeline.cli import _launch, context
from sync_pipeline.core import priorities
from sync_pipeline.core.crypto import generate_key
from sync_pipeline_tests.cli.conftest import (
    BIN,
    PLATFORM_VARIABLES,
    PROJECT_ROOT,
    STARTUP_SECONDS,
    CliEnv,
    free_port,
    invoke,
)
from sync_pipeline_tests.conftest import Sandbox
from sync_pipeline_tests.serving import wait_for_server

pytestmark = pytest.mark.daemon

QUEUED = re.compile(r"^queued run ([0-9a-f-]{36}) ")
REPOSITORIES = "{repositoriesOrError{...on RepositoryConnection{nodes{name}}}}"


@dataclass(frozen=True)
class Webserver:
    """A running dagster-webserver and the Dagster home it serves."""

    url: str
    home: Path


def location_loaded(response: httpx.Response) -> bool:
    """Whether the webserver has loaded the project's code location."""
    nodes = (response.json().get("data") or {}).get("repositoriesOrError", {}).get("nodes")
    return bool(nodes)


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    """`dagster-webserver -w workspace.yaml` on a free loopback port, with its own home."""
    root = tmp_path_factory.mktemp("webserver")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:  # storage created before the server starts
            instance.get_runs_count()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNC_"))}
    env.update(
        DAGSTER_HOME=str(home),
        SYNC_DATABASE_URL=f"sqlite:///{root / 'unused.db'}",
        SYNC_TOKEN_KEY=generate_key(),
        STRAVA_CLIENT_ID="1",
        STRAVA_CLIENT_SECRET="unused",
        STRAVA_BASE_URL="http://127.0.0.1:9",
        STRAVA_TIME_SCALE="1",
        STRAVA_STREETS_FILE="",
        **{name: "http://127.0.0.1:9" for name in PLATFORM_VARIABLES if "URL" in name},
        **{name: "unused" for name in PLATFORM_VARIABLES if "CLIENT" in name},
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "dagster-webserver"),
            *("-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(
            f"{url}/graphql?query={REPOSITORIES}",
            proc,
            STARTUP_SECONDS * 2,
            what="dagster-webserver with the code location",
            ready=lambda r: r.status_code == 200 and location_loaded(r),
        )
        yield Webserver(url, home.resolve())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture
def dagster_home(webserver: Webserver) -> Path:
    """The CLI's Dagster home is the one the webserver serves (overrides cli/conftest's)."""
    return webserver.home


@pytest.fixture
def served(
    webserver: Webserver, cli_env: CliEnv, launchable: Path, monkeypatch: pytest.MonkeyPatch
) -> Webserver:
    """DAGSTER_WEBSERVER_URL names the running webserver."""
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", webserver.url)
    return webserver


def queued_run(home: Path, stdout: str) -> dg.DagsterRun:
    """The run a `sync` command printed as queued, read from the instance of `home`."""
    match = QUEUED.match(stdout)
    assert match, stdout
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            run = instance.get_run_by_id(match.group(1))
    assert run is not None, f"run {match.group(1)} is not in {home}"
    return run


def fallback_line(url: str, why: str) -> str:
    """What a command prints (stderr) when it queues with `dagster job launch`."""
    return (
        f"DAGSTER_WEBSERVER_URL={url}: {why}; queueing with `dagster job launch` instead "
        "(slower: a process of its own)\n"
    )


@pytest.mark.parametrize(
    "args",
    [["--athlete", "{athlete}", "--full"], ["--all", "--priority", "3"]],
    ids=["athlete", "all"],
)
def test_a_sync_queued_through_the_webserver_is_the_run_dagster_job_launch_queues(
    served: Webserver, strava_env: Sandbox, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    athlete = strava_env.state.add_athlete(1)
    invoke("athletes", "connect")
    command = ["sync", "strava", *(a.format(athlete=athlete) for a in args)]

    through_webserver = invoke(*command)
    elsewhere = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", elsewhere)
    through_launch = invoke(*command)

    assert through_webserver.stderr == ""  # no fallback: the webserver queued it
    assert through_launch.stderr == fallback_line(elsewhere, "no Dagster webserver answers there")
    first = queued_run(served.home, through_webserver.stdout)
    second = queued_run(served.home, through_launch.stdout)
    assert first.status == second.status == dg.DagsterRunStatus.QUEUED
    assert first.job_name == second.job_name
    assert first.tags == second.tags
    assert first.run_config == second.run_config
    assert through_webserver.stdout.replace(first.run_id, "<id>") == (
        through_launch.stdout.replace(second.run_id, "<id>")
    )


def test_a_webserver_of_another_dagster_home_is_not_used(
    served: Webserver, strava_env: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect")
    other = tmp_path / "other_home"
    other.mkdir()
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", other / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(other))

    result = invoke("sync", "strava", "--athlete", str(athlete))

    assert result.stderr == fallback_line(
        served.url, f"it serves another Dagster home ({served.home})"
    )
    run = queued_run(other, result.stdout)  # queued in the command's own home
    assert run.tags["dagster/partition"] == str(athlete)


def test_a_run_the_webserver_refuses_is_a_clear_error(served: Webserver) -> None:
    with pytest.raises(click.ClickException) as refused:
        _launch.launch(context.settings(), "no_such_job", tags={}, run_config={})

    message = refused.value.message
    assert message.startswith(f"The Dagster webserver at {served.url} did not queue no_such_job: ")
    assert "no_such_job" in message.split(": ", 1)[1]


@pytest.mark.parametrize(
    "source,partition,noun",
    [
        ("strava", "1001", "athlete"),
        ("github", "7", "user"),
        ("promidata", "A360", "supplier"),
        ("outreach_send", "p-1", "prospect"),
    ],
)
def test_the_queued_line_names_what_the_source_syncs(
    capsys: pytest.CaptureFixture[str], source: str, partition: str, noun: str
) -> None:
    tags = {
        "dagster/partition": partition,
        priorities.SOURCE_TAG: source,
        priorities.PRIORITY_TAG: "10",
    }
    _launch.echo_queued("r1", "some_job", tags)
    assert f"(some_job, {noun} {partition}, priority 10)" in capsys.readouterr().out
