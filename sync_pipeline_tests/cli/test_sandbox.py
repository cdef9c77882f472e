"""`sync-pipeline sandbox fault ...` against the sandboxes `sync-pipeline sandbox` runs, with
only the `.env` that `init` wrote (as a user runs them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values

from sync_pipeline_tests.cli.conftest import (
    error_of,
    free_port,
    invoke,
    new_process,
    project_sandboxes,
)

SANDBOXES = ["strava", "github", "youtube", "x", "instagram"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project directory after `init`, every sandbox running (one set for the module)."""
    cwd = tmp_path_factory.mktemp("project")
    with project_sandboxes(cwd, platforms=True):
        yield cwd


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Commands run in the project directory, with none of its faults left from before."""
    monkeypatch.chdir(project)
    new_process()
    invoke("sandbox", "fault", "clear")
    new_process()
    yield project


def url_of(project: Path, sandbox: str) -> str:
    """The sandbox's URL as `.env` has it."""
    variable = "STRAVA_BASE_URL" if sandbox == "strava" else f"{sandbox.upper()}_BASE_URL"
    return str(dotenv_values(project / ".env")[variable])


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_fault_add_list_clear_on_every_sandbox(in_project: Path, sandbox: str) -> None:
    added = invoke("sandbox", "fault", "add", sandbox, "5xx", "--count", "3", "--status", "502")
    listed = invoke("sandbox", "fault", "list", sandbox)
    at_sandbox = httpx.get(f"{url_of(in_project, sandbox)}/_sandbox/faults", timeout=10).json()
    cleared = invoke("sandbox", "fault", "clear", sandbox)

    [fault] = at_sandbox
    assert added.stdout == (
        f"{sandbox}: fault {fault['id']} added: the next 3 request(s) get 5xx; clear with "
        f"`sync-pipeline sandbox fault clear {sandbox}`\n"
    )
    assert (fault["kind"], fault["remaining"], fault["status"]) == ("5xx", 3, 502)
    assert listed.stdout == f"{sandbox}: fault {fault['id']} 5xx, 3 more, status 502\n"
    assert cleared.stdout == f"{sandbox}: 1 fault(s) cleared\n"
    assert httpx.get(f"{url_of(in_project, sandbox)}/_sandbox/faults", timeout=10).json() == []


def test_a_fault_fires_on_the_api_and_is_used_up(in_project: Path) -> None:
    invoke("sandbox", "fault", "add", "github", "5xx", "--status", "503", "--path-contains", "/")
    url = url_of(in_project, "github")

    first = httpx.get(f"{url}/rate_limit", timeout=10)
    second = httpx.get(f"{url}/rate_limit", timeout=10)

    assert first.status_code == 503
    assert second.status_code != 503
    assert invoke("sandbox", "fault", "list", "github").stdout == "github: no faults\n"


def test_fault_list_covers_every_sandbox_by_default(in_project: Path) -> None:
    invoke("sandbox", "fault", "add", "strava", "slow", "--delay", "0.5", "--account", "1001")

    out = invoke("sandbox", "fault", "list").stdout

    assert out.splitlines()[0].startswith("strava: fault ")
    assert out.splitlines()[0].endswith(" slow, 1 more, account 1001, delay 0.5 s")
    assert out.splitlines()[1:] == [f"{name}: no faults" for name in SANDBOXES[1:]]


def test_strava_revoked_applies_at_once(in_project: Path) -> None:
    out = invoke("sandbox", "fault", "add", "strava", "revoked", "--account", "1001").stdout

    assert out == "strava: revoked applied\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["strava", "error"], "the strava sandbox knows 5xx, timeout, slow, 429, revoked, deleted"),
        (["x", "revoked"], "the x sandbox knows 5xx, timeout, slow, 429, error"),
        (["strava", "revoked"], "revoked needs --account ATHLETE_ID."),
        (["strava", "deleted"], "deleted needs --activity ID."),
    ],
)
def test_fault_add_refuses_what_the_sandbox_cannot_do(
    in_project: Path, args: list[str], message: str
) -> None:
    result = invoke("sandbox", "fault", "add", *args, exit_code=2)

    assert message in error_of(result)


def test_fault_help_lists_every_kind() -> None:
    out = invoke("sandbox", "fault", "add", "--help").stdout

    for kind in ("5xx", "timeout", "slow", "429", "error", "secondary", "revoked", "deleted"):
        assert f"\n    {kind:9} " in out


def test_faults_without_a_running_sandbox_say_how_to_start_it(tmp_path: Path) -> None:
    port = str(free_port())  # nothing listens there
    (tmp_path / ".env").write_text(f"STRAVA_BASE_URL=http://127.0.0.1:{port}\n")

    result = invoke("sandbox", "fault", "list", "strava", exit_code=1)

    assert error_of(result).startswith(f"Error: The strava sandbox at http://127.0.0.1:{port}")
    assert error_of(result).endswith("start it with `sync-pipeline sandbox` or `make demo`.")


def test_faults_refuse_a_real_api(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STRAVA_BASE_URL=https://www.strava.com\n")

    result = invoke("sandbox", "fault", "clear", "strava", exit_code=1)

    assert error_of(result).startswith(
        "Error: STRAVA_BASE_URL is https://www.strava.com, not a sandbox on loopback"
    )
