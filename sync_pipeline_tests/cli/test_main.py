"""`sync-pipeline` (cli/main.py and a module per command group): set-up, athletes, syncs,
status, dead letters, cleanup, sandbox.

Commands run in this process through click's test runner, in a temporary working directory
with an environment of their own, against a fresh app database and the sandboxes on loopback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import dagster as dg
import pytest
import yaml
from dotenv import dotenv_values
from sqlalchemy import func, select

from sync_pipeline.cli import _launch, context
from sync_pipeline.cli import sandbox as cli_sandbox
from sync_pipeline.core import db, priorities
from sync_pipeline.core.crypto import TokenCipher, generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import (
    AppUser,
    Athlete,
    DailyActivity,
    OAuthToken,
    PlatformConnection,
    StravaActivity,
    StravaStream,
    StreetNodeHit,
    StreetProgress,
    SyncState,
)
from sync_pipeline.core.settings import sandbox_env
from sync_pipeline.defs.strava.partitions import strava_athletes
from sync_pipeline.defs.strava.resources import PROVIDER
from sync_pipeline.defs.strava.source import STREET_PROGRESS
from sync_pipeline.sandbox.strava.city import write_streets_geojson
from sync_pipeline_tests.cli.conftest import (
    PROJECT_ROOT,
    CliEnv,
    error_of,
    free_port,
    invoke,
    is_setting,
    new_process,
    run_cli,
)
from sync_pipeline_tests.conftest import CLIENT_ID, Sandbox
from sync_pipeline_tests.defs.strava.test_processing import gps_activity
from sync_pipeline_tests.platforms import Box
from sync_pipeline_tests.serving import wait_for_server

HEAD = db.head_revision()
SANDBOX_PORT = 18710
SOURCES = [
    "strava",
    "github",
    "youtube",
    "x",
    "instagram",
    "promidata",
    *(f"outreach_{job}" for job in ("website", "email", "send", "reply", "crm")),
]
TOKEN_KEY_MISSING = (
    "Error: SYNC_TOKEN_KEY is not set. Run `sync-pipeline init` (writes .env with a new key) "
    "or export SYNC_TOKEN_KEY=$(sync-pipeline keygen)."
)
#: Commands that read the app database (and so need the key and an up-to-date schema).
APP_DB_COMMANDS = [
    ["athletes", "list"],
    ["athletes", "connect"],
    ["status"],
    ["dead-letters", "list"],
    ["dead-letters", "redrive", "--all"],
    ["cleanup", "--dry-run"],
    ["sync", "strava", "--all"],
    ["users", "list"],
    ["users", "add", "ana"],
    ["users", "score", "ana"],
]


def count(db_url: str, model: type[Any]) -> int:
    """Rows of a table."""
    with transaction(db_url) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def athletes_in(db_url: str) -> dict[int, str]:
    """{athlete id: state} of the app database."""
    with transaction(db_url) as s:
        return {a.id: a.state for a in s.scalars(select(Athlete))}


def granted(sandbox: Sandbox) -> dict[int, bool]:
    """{sandbox athlete id: whether the app holds a grant}."""
    return {a["id"]: a["authorized"] for a in sandbox.state.list_athletes()}


def add_state(db_url: str, source: str, key: str, status: str, **fields: Any) -> None:
    """A sync_state row as the sync runner leaves it."""
    with transaction(db_url) as s:
        s.add(SyncState(source=source, partition_key=key, status=status, **fields))


def metadata_lines(out: str) -> dict[str, dict[str, Any]]:
    """`asset partition: {metadata}` lines of a direct run, by "asset partition"."""
    found = {}
    for line in out.splitlines():
        if ": {" in line:
            name, md = line.split(": ", 1)
            found[name] = json.loads(md)
    return found


def run_id_of(out: str) -> str:
    """The run id of a direct run's last line, `run ID succeeded`."""
    last = out.splitlines()[-1]
    assert last.startswith("run ") and last.endswith(" succeeded"), out
    return last.split()[1]


def runs(dagster_home: Path) -> list[dg.DagsterRun]:
    """Every run of a Dagster instance, oldest first."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(dagster_home))
        with dg.DagsterInstance.get() as instance:
            return [r.dagster_run for r in reversed(instance.get_run_records())]


# ---------------------------------------------------------------------------------------------
# keygen, init, db


def test_keygen_prints_a_new_working_key_each_time() -> None:
    first = invoke("keygen").stdout
    second = invoke("keygen").stdout

    assert first.endswith("\n") and first.count("\n") == 1
    key = first.strip()
    assert len(key) == 44 and key != second.strip()
    cipher = TokenCipher(key)
    assert cipher.decrypt(cipher.encrypt("refresh-me")) == "refresh-me"


def read_env(path: Path) -> dict[str, str]:
    """The `.env` file as a dict (asserting no key is written twice)."""
    keys = [line.split("=", 1)[0] for line in path.read_text().splitlines() if "=" in line]
    assert len(keys) == len(set(keys)), keys
    return {k: v or "" for k, v in dotenv_values(path).items()}


def test_init_writes_env_dagster_home_and_schema(tmp_path: Path) -> None:
    home = tmp_path.resolve() / ".sync_home"

    out = invoke("init", "--sandbox-port", str(SANDBOX_PORT)).stdout

    assert out == (
        f"home: {home}\nDAGSTER_HOME: {home / 'dagster'}\n"
        f"app database: sqlite:///{home / 'app.db'} at revision {HEAD}\n"
    )
    env_file = tmp_path / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = read_env(env_file)
    assert set(env) == set(sandbox_env(home, SANDBOX_PORT))
    assert {k: env[k] for k in ("SYNC_HOME", "DAGSTER_HOME", "SYNC_DATABASE_URL")} == {
        "SYNC_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "SYNC_DATABASE_URL": f"sqlite:///{home / 'app.db'}",
    }
    assert env["STRAVA_CLIENT_ID"] == "12345"
    assert env["STRAVA_BASE_URL"] == f"http://127.0.0.1:{SANDBOX_PORT}"
    assert env["INSTAGRAM_BASE_URL"] == f"http://127.0.0.1:{SANDBOX_PORT + 4}"
    assert env["STRAVA_WEBHOOK_VERIFY_TOKEN"]
    cipher = TokenCipher(env["SYNC_TOKEN_KEY"])
    assert cipher.decrypt(cipher.encrypt("t")) == "t"
    assert (home / "dagster" / "dagster.yaml").read_text() == (
        PROJECT_ROOT / "dagster.yaml"
    ).read_text()
    assert Path(env["STRAVA_STREETS_FILE"]).stat().st_size > 0
    assert db.current_revision(env["SYNC_DATABASE_URL"]) == HEAD


def test_init_again_keeps_env_key_and_data(tmp_path: Path) -> None:
    first = invoke("init", "--sandbox-port", str(SANDBOX_PORT)).stdout
    written = (tmp_path / ".env").read_bytes()
    new_process()
    invoke("users", "add", "ana")
    new_process()

    again = invoke("init", "--sandbox-port", str(SANDBOX_PORT)).stdout

    assert again == first
    assert (tmp_path / ".env").read_bytes() == written
    new_process()
    assert invoke("users", "list").stdout == "ana (UTC)\n"


def test_init_force_writes_a_new_key(tmp_path: Path) -> None:
    invoke("init", "--sandbox-port", str(SANDBOX_PORT))
    before = read_env(tmp_path / ".env")
    new_process()

    invoke("init", "--sandbox-port", str(SANDBOX_PORT), "--force")

    after = read_env(tmp_path / ".env")
    assert set(after) == set(before)
    assert after["SYNC_TOKEN_KEY"] != before["SYNC_TOKEN_KEY"]
    assert after["STRAVA_CLIENT_SECRET"] != before["STRAVA_CLIENT_SECRET"]
    assert after["SYNC_DATABASE_URL"] == before["SYNC_DATABASE_URL"]


def test_init_completes_an_older_sandbox_env_and_keeps_its_key(tmp_path: Path) -> None:
    home = tmp_path.resolve() / "home"
    old = (
        f"SYNC_HOME={home}\nSYNC_TOKEN_KEY=kept-key\nSTRAVA_CLIENT_SECRET=kept-secret\n"
        f"STRAVA_BASE_URL=http://127.0.0.1:{SANDBOX_PORT}\n"
    )
    (tmp_path / ".env").write_text(old)

    invoke("init", "--sandbox-port", str(SANDBOX_PORT))

    text = (tmp_path / ".env").read_text()
    assert text.startswith(old)
    env = read_env(tmp_path / ".env")
    assert set(env) == set(sandbox_env(home, SANDBOX_PORT))
    assert env["SYNC_TOKEN_KEY"] == "kept-key"
    assert env["STRAVA_CLIENT_SECRET"] == "kept-secret"
    assert env["GITHUB_BASE_URL"] == f"http://127.0.0.1:{SANDBOX_PORT + 1}"
    assert db.current_revision(f"sqlite:///{home / 'app.db'}") == HEAD


def test_init_leaves_an_env_for_the_real_api_alone(tmp_path: Path) -> None:
    real = "STRAVA_BASE_URL=https://www.strava.com\nSTRAVA_CLIENT_ID=777\nSYNC_TOKEN_KEY=k\n"
    (tmp_path / ".env").write_text(real)

    invoke("init")

    assert (tmp_path / ".env").read_text() == real
    home = tmp_path.resolve() / ".sync_home"
    assert not list(home.glob("streets-*.geojson"))
    assert db.current_revision(f"sqlite:///{home / 'app.db'}") == HEAD


def test_db_upgrade_and_current_on_the_default_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "h"
    monkeypatch.setenv("SYNC_HOME", str(home))
    url = f"sqlite:///{home / 'app.db'}"

    assert invoke("db", "current").stdout == f"database: None  code: {HEAD}\n"
    assert invoke("db", "upgrade", "--revision", "0004").stdout == f"{url} is at revision 0004\n"
    assert invoke("db", "current").stdout == f"database: 0004  code: {HEAD}\n"
    assert invoke("db", "upgrade").stdout == f"{url} is at revision {HEAD}\n"
    assert invoke("db", "current").stdout == f"database: {HEAD}  code: {HEAD}\n"
    assert invoke("db", "upgrade").stdout == f"{url} is at revision {HEAD}\n"  # idempotent


@pytest.mark.parametrize("command", APP_DB_COMMANDS, ids=" ".join)
def test_commands_need_the_token_key(
    cli_env: CliEnv, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.delenv("SYNC_TOKEN_KEY")
    monkeypatch.setenv("STRAVA_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("STRAVA_CLIENT_SECRET", "secret")

    result = invoke(*command, exit_code=1)

    assert error_of(result) == TOKEN_KEY_MISSING
    assert result.stdout == ""
    assert count(cli_env.db_url, AppUser) == 0


@pytest.mark.parametrize("command", APP_DB_COMMANDS, ids=" ".join)
def test_commands_refuse_an_out_of_date_schema_until_db_upgrade(
    cli_env: CliEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    old = f"sqlite:///{tmp_path / 'old.db'}"
    db.upgrade(old, "0004")
    monkeypatch.setenv("SYNC_DATABASE_URL", old)
    monkeypatch.setenv("STRAVA_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("STRAVA_CLIENT_SECRET", "secret")

    result = invoke(*command, exit_code=1)

    assert error_of(result) == (
        f"Error: The app database at {old} is at schema revision '0004', the code needs "
        f"'{HEAD}'. Run `sync-pipeline db upgrade` first."
    )
    assert db.current_revision(old) == "0004"


def test_db_upgrade_lets_commands_run_on_an_old_database(
    cli_env: CliEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = f"sqlite:///{tmp_path / 'old.db'}"
    db.upgrade(old, "0004")
    monkeypatch.setenv("SYNC_DATABASE_URL", old)
    invoke("users", "add", "ana", exit_code=1)

    assert invoke("db", "upgrade").stdout == f"{old} is at revision {HEAD}\n"

    assert invoke("users", "add", "ana").stdout == "added user ana (UTC)\n"
    assert count(old, AppUser) == 1


def test_settings_come_from_dotenv_and_the_environment_wins(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(f"SYNC_DATABASE_URL={db_url}\nSYNC_TOKEN_KEY={generate_key()}\n")
    assert invoke("users", "add", "from-dotenv").stdout == "added user from-dotenv (UTC)\n"
    assert count(db_url, AppUser) == 1
    new_process()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    db.upgrade(other)
    monkeypatch.setenv("SYNC_DATABASE_URL", other)

    invoke("users", "add", "from-env")

    assert count(other, AppUser) == 1
    assert count(db_url, AppUser) == 1


def test_status_without_a_dagster_home_says_what_to_do(
    cli_env: CliEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `db upgrade` + `export SYNC_TOKEN_KEY=$(sync-pipeline keygen)`, as the error message
    # for a missing key suggests, but no `init`: $SYNC_HOME/dagster does not exist.
    monkeypatch.delenv("DAGSTER_HOME")

    result = invoke("status", exit_code=1)

    assert error_of(result).startswith("Error: ") and "sync-pipeline init" in error_of(result)


def no_dagster_home(home: Path, named_by: str) -> str:
    """The error of a command that needs a Dagster home that is not there."""
    return (
        f"Error: The Dagster home {home} ({named_by}) does not exist or is not a directory. "
        "Run `sync-pipeline init` to create it, or create that directory with a dagster.yaml "
        "in it (a copy of the project's dagster.yaml)."
    )


def test_every_command_using_dagster_says_what_to_do_without_its_home(
    cli_env: CliEnv, strava_env: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect")
    add_state(cli_env.db_url, "strava", "1001", "dead", last_error="gone")
    commands = [
        ["status"],
        ["cleanup", "--dry-run"],
        ["sync", "strava", "--athlete", str(athlete)],
        ["sync", "strava", "--athlete", str(athlete), "--direct"],
        ["sync", "strava", "--all"],
        ["sync", "strava", "--all", "--direct"],
        ["dead-letters", "redrive", "--partition", "1001"],
    ]
    monkeypatch.delenv("DAGSTER_HOME")
    default = no_dagster_home(
        cli_env.home / "dagster", "the default, $SYNC_HOME/dagster; DAGSTER_HOME is not set"
    )
    for command in commands:
        assert error_of(invoke(*command, exit_code=1)) == default, command
        os.environ.pop("DAGSTER_HOME", None)  # as a new shell would have it
    missing = tmp_path / "no_such_home"
    monkeypatch.setenv("DAGSTER_HOME", str(missing))
    for command in commands:
        assert error_of(invoke(*command, exit_code=1)) == no_dagster_home(
            missing, "DAGSTER_HOME"
        ), command
    assert not missing.exists() and not (cli_env.home / "dagster").exists()


# ---------------------------------------------------------------------------------------------
# athletes


def test_athletes_connect_list_and_disconnect(cli_env: CliEnv, strava_env: Sandbox) -> None:
    sandbox = strava_env
    first, second = sandbox.state.add_athlete(2), sandbox.state.add_athlete(0)
    assert invoke("athletes", "list").stdout.splitlines()[1:] == []

    out = invoke("athletes", "connect", "--sandbox-athlete", str(second)).stdout

    assert out == f"connected athlete {second}\n"
    assert athletes_in(cli_env.db_url) == {second: "connected"}
    assert granted(sandbox) == {first: False, second: True}
    with transaction(cli_env.db_url) as s:
        [row] = s.scalars(select(OAuthToken))
        assert (row.provider, row.account_id) == (PROVIDER, str(second))
        # Encrypted with the configured key.
        assert TokenCipher(cli_env.token_key).decrypt(row.access_token_enc)

    invoke("athletes", "connect", "--sandbox-athlete", str(first))
    names = {a["id"]: f"{a['firstname']} {a['lastname']}" for a in sandbox.state.list_athletes()}
    listed = invoke("athletes", "list").stdout.splitlines()
    assert listed == [
        f"{'id':>10}  {'name':24} {'state':16} {'acts':>6}  {'sync':10} last success",
        *(
            f"{i:>10}  {names[i][:24]:24} {'connected':16} {0:>6}  {'never':10} -"
            for i in (first, second)
        ),
    ]
    as_json = json.loads(invoke("athletes", "list", "--json").stdout)
    assert [(a["id"], a["state"], a["activities"], a["sync_status"]) for a in as_json] == [
        (first, "connected", 0, "never"),
        (second, "connected", 0, "never"),
    ]
    assert {a["scopes"] for a in as_json} == {"read,activity:read_all"}

    out = invoke("athletes", "disconnect", str(first)).stdout

    assert out == f"disconnected athlete {first}; the partition sensor removes its partition\n"
    assert athletes_in(cli_env.db_url) == {second: "connected"}
    assert granted(sandbox) == {first: False, second: True}  # revoked at Strava too
    assert count(cli_env.db_url, OAuthToken) == 1


def test_athletes_connect_count_takes_the_next_unconnected(
    cli_env: CliEnv, strava_env: Sandbox
) -> None:
    ids = [strava_env.state.add_athlete(0) for _ in range(3)]

    out = invoke("athletes", "connect", "--count", "2").stdout

    assert out == f"connected athlete {ids[0]}\nconnected athlete {ids[1]}\n"
    assert athletes_in(cli_env.db_url) == {ids[0]: "connected", ids[1]: "connected"}


def test_athletes_connect_count_never_connects_an_athlete_twice(
    cli_env: CliEnv, strava_env: Sandbox
) -> None:
    ids = [strava_env.state.add_athlete(0) for _ in range(2)]
    invoke("athletes", "connect", "--sandbox-athlete", str(ids[0]))

    some = invoke("athletes", "connect", "--count", "3", exit_code=1)
    none = invoke("athletes", "connect", "--count", "3", exit_code=1)

    advice = (
        "all 2 sandbox athletes are connected already. Start the sandbox with more "
        "(`sync-pipeline sandbox --athletes N`), or connect one again with --sandbox-athlete ID."
    )
    assert some.stdout == f"connected athlete {ids[1]}\n"
    assert error_of(some) == f"Error: connected 1 of 3: {advice}"
    assert none.stdout == ""
    assert error_of(none) == f"Error: connected none: {advice}"
    assert athletes_in(cli_env.db_url) == {ids[0]: "connected", ids[1]: "connected"}


def test_disconnect_no_revoke_keeps_the_grant_at_strava(
    cli_env: CliEnv, strava_env: Sandbox
) -> None:
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect", "--sandbox-athlete", str(athlete))

    invoke("athletes", "disconnect", str(athlete), "--no-revoke")

    assert athletes_in(cli_env.db_url) == {}
    assert count(cli_env.db_url, OAuthToken) == 0
    assert granted(strava_env) == {athlete: True}


def test_unknown_athletes_are_clear_errors(cli_env: CliEnv, strava_env: Sandbox) -> None:
    connect = invoke("athletes", "connect", "--sandbox-athlete", "4242", exit_code=1)
    assert error_of(connect) == (
        "Error: Strava's consent page answered HTTP 400: "
        '{"message":"Bad Request","errors":[{"resource":"Athlete",'
        '"field":"sandbox_athlete_id","code":"invalid"}]} '
        "— check the client id and base URL settings."
    )
    disconnect = invoke("athletes", "disconnect", "4242", exit_code=1)
    assert error_of(disconnect) == "Error: No athlete 4242; see `sync-pipeline athletes list`."
    not_a_number = invoke("athletes", "disconnect", "ana", exit_code=2)
    assert "'ana' is not a valid integer" in error_of(not_a_number)
    assert athletes_in(cli_env.db_url) == {}


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({}, "STRAVA_CLIENT_ID, STRAVA_CLIENT_SECRET"),
        ({"STRAVA_CLIENT_ID": CLIENT_ID}, "STRAVA_CLIENT_SECRET"),
        ({"STRAVA_CLIENT_SECRET": "s"}, "STRAVA_CLIENT_ID"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [["athletes", "connect"], ["athletes", "disconnect", "1"], ["sync", "strava", "--all"]],
    ids=" ".join,
)
def test_strava_commands_name_missing_credentials(
    cli_env: CliEnv,
    monkeypatch: pytest.MonkeyPatch,
    present: dict[str, str],
    missing: str,
    command: list[str],
) -> None:
    for name, value in present.items():
        monkeypatch.setenv(name, value)

    result = invoke(*command, exit_code=1)

    assert error_of(result) == (
        f"Error: {missing} not set: put them in .env (see README) or run "
        "`sync-pipeline init` for the sandbox defaults."
    )


# ---------------------------------------------------------------------------------------------
# sync strava


def test_direct_syncs_store_activities_and_cleanup_keeps_the_latest(
    cli_env: CliEnv, strava_env: Sandbox
) -> None:
    sandbox = strava_env
    athlete = sandbox.state.add_athlete(5)
    invoke("athletes", "connect")

    out = invoke("sync", "strava", "--athlete", str(athlete), "--direct").stdout

    md = metadata_lines(out)[f"strava_activities {athlete}"]
    assert (md["mode"], md["status"], md["activities_added"]) == ("full", "succeeded", 5)
    first_run = run_id_of(out)
    with transaction(cli_env.db_url) as s:
        stored = set(s.scalars(select(StravaActivity.id)))
        state = s.get(SyncState, ("strava", str(athlete)))
        assert state is not None and state.status == "succeeded"
    assert stored == set(sandbox.state.activity_ids(athlete))
    [run] = runs(cli_env.dagster_home)
    assert run.run_id == first_run and run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == str(athlete)
    assert run.tags[priorities.PRIORITY_TAG] == str(priorities.MANUAL)
    assert run.tags[priorities.TRIGGER_TAG] == "cli"
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions(strava_athletes.name or "") == [str(athlete)]
    [new] = sandbox.state.add_activities(athlete, 1)

    again = invoke("sync", "strava", "--athlete", str(athlete), "--direct").stdout

    md2 = metadata_lines(again)[f"strava_activities {athlete}"]
    assert (md2["mode"], md2["activities_added"]) == ("incremental", 1)
    with transaction(cli_env.db_url) as s:
        assert set(s.scalars(select(StravaActivity.id))) == stored | {new}
    status = json.loads(invoke("status", "--json", "--source", "strava").stdout)
    calls = md["api_calls"] + md2["api_calls"]
    assert list(status) == ["strava"]
    assert status["strava"]["succeeded_24h"] == 2
    assert status["strava"]["partitions_by_status"] == {"succeeded": 1}
    assert {b["bucket"]: b["used"] for b in status["strava"]["budget"]} == {
        f"{CLIENT_ID}:overall:15min": calls,
        f"{CLIENT_ID}:overall:daily": calls,
        f"{CLIENT_ID}:read:15min": calls,
        f"{CLIENT_ID}:read:daily": calls,
    }

    # The first run no longer holds the partition's latest materialization: only it goes.
    dry = json.loads(invoke("cleanup", "--older-than", "0s", "--dry-run", "--json").stdout)
    assert (dry["examined"], dry["deleted_run_ids"], dry["kept_latest_materialization"]) == (
        2,
        [first_run],
        1,
    )
    assert len(runs(cli_env.dagster_home)) == 2
    done = json.loads(invoke("cleanup", "--older-than", "0s", "--json").stdout)
    assert (done["dry_run"], done["deleted_run_ids"]) == (False, [first_run])
    assert [r.run_id for r in runs(cli_env.dagster_home)] == [run_id_of(again)]


@pytest.fixture(scope="module")
def streets_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sandbox city's street network (seed 42, the sandbox default)."""
    return str(write_streets_geojson(tmp_path_factory.mktemp("streets") / "streets.geojson", 42))


def test_sync_one_activity_directly_matches_it_to_streets(
    cli_env: CliEnv, strava_env: Sandbox, streets_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRAVA_STREETS_FILE", streets_file)
    athlete = strava_env.state.add_athlete(3)
    invoke("athletes", "connect")
    invoke("sync", "strava", "--athlete", str(athlete), "--direct")  # summaries only
    activity = gps_activity(strava_env, athlete)
    with transaction(cli_env.db_url) as s:
        assert s.get(StravaStream, activity) is None

    out = invoke(
        "sync", "strava", "--athlete", str(athlete), "--activity", str(activity), "--direct"
    ).stdout

    md = metadata_lines(out)
    assert md[f"strava_activities {athlete}"]["activities_processed"] == 1
    progress = md[f"{STREET_PROGRESS.to_user_string()} {athlete}"]
    with transaction(cli_env.db_url) as s:
        row = s.get(StravaActivity, activity)
        assert row is not None and row.processed_at is not None
        stream = s.get(StravaStream, activity)
        assert stream is not None and stream.points > 0
        nodes = s.scalar(
            select(func.count(func.distinct(StreetNodeHit.node_id))).where(
                StreetNodeHit.athlete_id == athlete
            )
        )
        streets = s.scalar(select(func.count()).where(StreetProgress.athlete_id == athlete))
    assert nodes is not None and streets is not None
    assert progress["activities_processed"] == 1
    assert progress["nodes_hit"] == nodes > 0
    assert progress["streets_touched"] == streets > 0


def test_sync_all_directly_sweeps_every_connected_athlete(
    cli_env: CliEnv, strava_env: Sandbox
) -> None:
    a, b = strava_env.state.add_athlete(2), strava_env.state.add_athlete(3)
    invoke("athletes", "connect", "--count", "2")

    out = invoke("sync", "strava", "--all", "--direct").stdout

    md = metadata_lines(out)
    assert {k: v["activities_added"] for k, v in md.items()} == {
        f"strava_activities {a}": 2,
        f"strava_activities {b}": 3,
    }
    run_id_of(out)
    with transaction(cli_env.db_url) as s:
        per_athlete = dict(
            s.execute(
                select(StravaActivity.athlete_id, func.count()).group_by(StravaActivity.athlete_id)
            ).all()
        )
    assert per_athlete == {a: 2, b: 3}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Give exactly one of --athlete ID or --all."),
        (["--athlete", "1001", "--all"], "Give exactly one of --athlete ID or --all."),
        (["--all", "--activity", "5"], "--activity needs --athlete (the activity's owner)."),
    ],
)
def test_sync_strava_usage_errors(args: list[str], message: str) -> None:
    result = invoke("sync", "strava", *args, exit_code=2)

    assert error_of(result).endswith(f"Error: {message}")


def test_sync_strava_refuses_unknown_athletes_and_an_empty_sweep(
    cli_env: CliEnv, strava_env: Sandbox
) -> None:
    one = invoke("sync", "strava", "--athlete", "4242", "--direct", exit_code=1)
    assert error_of(one) == (
        "Error: Athlete 4242 is not connected; see `sync-pipeline athletes list`."
    )
    every = invoke("sync", "strava", "--all", "--direct", exit_code=1)
    assert error_of(every) == (
        "Error: No connected athletes; connect some with `athletes connect`."
    )
    assert runs(cli_env.dagster_home) == []


@pytest.mark.parametrize(
    ("args", "job", "tags", "config"),
    [
        (
            ["--athlete", "{athlete}", "--full"],
            "strava_athlete_sync",
            {"dagster/partition": "{athlete}", priorities.PRIORITY_TAG: "10"},
            {"ops": {"strava_activities": {"config": {"full": True, "activity_ids": []}}}},
        ),
        (
            ["--all", "--priority", "3"],
            "strava_sweep_job",
            {priorities.PRIORITY_TAG: "3"},
            {"ops": {"strava_sweep": {"config": {"shard": 0, "shards": 1}}}},
        ),
    ],
    ids=["athlete", "all"],
)
def test_sync_without_direct_queues_a_run(
    cli_env: CliEnv,
    strava_env: Sandbox,
    launchable: Path,
    args: list[str],
    job: str,
    tags: dict[str, str],
    config: dict[str, Any],
) -> None:
    athlete = strava_env.state.add_athlete(1)
    invoke("athletes", "connect")
    fill = {"athlete": athlete}

    invoke("sync", "strava", *(a.format(**fill) for a in args))

    [run] = runs(cli_env.dagster_home)
    assert (run.job_name, run.status) == (job, dg.DagsterRunStatus.QUEUED)
    expected = {k: v.format(**fill) for k, v in tags.items()}
    assert {k: run.tags.get(k) for k in expected} == expected
    assert run.tags[priorities.TRIGGER_TAG] == "cli"
    assert run.run_config == config
    assert count(cli_env.db_url, StravaActivity) == 0  # nothing ran: no daemon
    status = json.loads(invoke("status", "--json", "--source", "strava").stdout)["strava"]
    assert (status["queued"], status["running"]) == (1, 0)
    assert status["oldest_queued_seconds"] > 0


def test_queueing_a_sync_prints_the_run_id(
    cli_env: CliEnv, strava_env: Sandbox, launchable: Path
) -> None:
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect")

    out = invoke("sync", "strava", "--athlete", str(athlete)).stdout

    [run] = runs(cli_env.dagster_home)
    assert run.run_id in out


def test_queueing_uses_the_callers_dagster_home(
    cli_env: CliEnv, strava_env: Sandbox, launchable: Path, tmp_path: Path
) -> None:
    # A developer's `.env` in the project root (as `make demo` leaves it) names another home.
    other = tmp_path / "project_home"
    other.mkdir()
    (launchable / ".env").write_text(f"DAGSTER_HOME={other}\n")
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect")

    invoke("sync", "strava", "--athlete", str(athlete))

    assert runs(other) == []
    assert len(runs(cli_env.dagster_home)) == 1


def test_queueing_prints_one_line_per_run_and_not_dagsters_log(
    cli_env: CliEnv, strava_env: Sandbox, launchable: Path
) -> None:
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect")

    result = invoke("sync", "strava", "--athlete", str(athlete))

    [run] = runs(cli_env.dagster_home)
    assert result.stdout == (
        f"queued run {run.run_id} (strava_athlete_sync, athlete {athlete}, priority 10); "
        f"follow it in the UI at /runs/{run.run_id}\n"
    )
    # No webserver answers (see `launchable`): one line says which path queued the run.
    assert result.stderr == fallback_line()


def fallback_line() -> str:
    """What a command queueing a run prints when no webserver answers (see `launchable`)."""
    return (
        f"DAGSTER_WEBSERVER_URL={os.environ['DAGSTER_WEBSERVER_URL']}: no Dagster webserver "
        "answers there; queueing with `dagster job launch` instead (slower: a process of its "
        "own)\n"
    )


def test_queueing_refuses_a_dotenv_in_the_dagster_home(
    cli_env: CliEnv, strava_env: Sandbox, launchable: Path
) -> None:
    # `dagster job launch` runs in the Dagster home: a `.env` there would override settings.
    (cli_env.dagster_home / ".env").write_text("DAGSTER_HOME=/elsewhere\n")
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect")

    result = invoke("sync", "strava", "--athlete", str(athlete), exit_code=1)

    # No webserver answers (see `launchable`): the line saying so, then the error.
    assert result.stderr.startswith(fallback_line())
    assert error_of(result).split(" Error: ", 1)[1] == (
        f"{cli_env.dagster_home / '.env'} would override the settings of `dagster job "
        "launch`, which runs in the Dagster home; move that file out of the Dagster home."
    )
    assert runs(cli_env.dagster_home) == []


def test_a_failed_launch_shows_dagsters_output(cli_env: CliEnv, launchable: Path) -> None:
    with pytest.raises(click.ClickException) as failed:
        _launch.launch(context.settings(), "no_such_job", tags={}, run_config={})

    header, output = failed.value.message.split("\n", 1)
    assert re.fullmatch(
        re.escape(
            "Could not queue no_such_job (`dagster job launch` with the project's "
            f"workspace.yaml, Dagster home {cli_env.dagster_home}, exit "
        )
        + r"[1-9][0-9]*\); the end of Dagster's output:",
        header,
    )
    assert 'Error: Job "no_such_job" not found in repository' in output.splitlines()[-1]
    assert "\x1b[" not in output
    assert runs(cli_env.dagster_home) == []


def test_queueing_through_an_unreachable_code_server_names_sync_code_server(
    cli_env: CliEnv, strava_env: Sandbox, launchable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strava_env.state.add_athlete(0)
    invoke("athletes", "connect")
    port = free_port()  # nothing listens there
    monkeypatch.setenv("SYNC_CODE_SERVER", f"127.0.0.1:{port}")

    result = invoke("sync", "strava", "--all", exit_code=1)

    assert result.stderr.startswith(fallback_line())  # no webserver: `dagster job launch`
    message = "Error: " + error_of(result).split(" Error: ", 1)[1]
    assert message.startswith(f"Error: Cannot reach the Dagster code server at 127.0.0.1:{port} (")
    assert message.endswith(
        "), named by SYNC_CODE_SERVER. Start it (`dagster code-server start -m "
        f"sync_pipeline.definitions -h 127.0.0.1 -p {port}`, in the daemon's environment) or "
        "unset SYNC_CODE_SERVER to load the code for each launch."
    )
    assert runs(cli_env.dagster_home) == []


@pytest.mark.parametrize("value", ["4266", "localhost", "host:port", "127.0.0.1:0", ":4266"])
def test_a_malformed_sync_code_server_is_a_clear_error(
    cli_env: CliEnv, launchable: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    add_state(cli_env.db_url, "strava", "1001", "dead", last_error="gone")
    monkeypatch.setenv("SYNC_CODE_SERVER", value)

    result = invoke("dead-letters", "redrive", "--partition", "1001", exit_code=1)

    assert result.stderr.startswith(fallback_line())  # no webserver: `dagster job launch`
    assert "Error: " + error_of(result).split(" Error: ", 1)[1] == (
        f"Error: SYNC_CODE_SERVER={value!r} is not host:port (e.g. 127.0.0.1:4266). Set it to "
        "the address of a running `dagster code-server start -m sync_pipeline.definitions "
        "-p PORT`, or unset it to load the code for each launch."
    )


def test_a_code_server_workspace_keeps_the_project_location_name(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        path = _launch.code_server_workspace(tmp_path, "127.0.0.1", port, "SYNC_CODE_SERVER")

    # The daemon finds a queued run's code by location name: `--grpc-host/--grpc-port`
    # would name it grpc:127.0.0.1:PORT, which the project's workspace does not have.
    server_entry = {"host": "127.0.0.1", "port": port, "location_name": "sync_pipeline"}
    assert yaml.safe_load(path.read_text()) == {"load_from": [{"grpc_server": server_entry}]}
    project = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    assert [e["python_module"]["location_name"] for e in project["load_from"]] == ["sync_pipeline"]


# ---------------------------------------------------------------------------------------------
# sync <platform>


def test_sync_github_user_directly_stores_days_and_scores(cli_env: CliEnv, github: Box) -> None:
    invoke("users", "add", "ana")
    invoke("users", "connect", "ana", "github")

    out = invoke("sync", "github", "--user", "ana", "--direct").stdout

    md = metadata_lines(out)
    assert set(md) == {
        "github_daily_activity ana",
        "user_consistency ana",
        "user_consistency_public ana",
    }
    daily = md["github_daily_activity ana"]
    assert daily["status"] == "succeeded" and daily["items"] > 0
    with transaction(cli_env.db_url) as s:
        days, items = s.execute(
            select(func.count(), func.sum(DailyActivity.count)).where(
                DailyActivity.user_id == "ana", DailyActivity.platform == "github"
            )
        ).one()
    assert (days, items) == (daily["days_synced"], daily["items"])
    [run] = runs(cli_env.dagster_home)
    assert (run.run_id, run.status) == (run_id_of(out), dg.DagsterRunStatus.SUCCESS)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "Error: Give exactly one of --user ID or --all."),
        (["--user", "ana", "--all"], 2, "Error: Give exactly one of --user ID or --all."),
        (
            ["--user", "ana", "--direct"],
            1,
            "Error: User 'ana' has no working github connection; see `sync-pipeline users list`.",
        ),
        (["--all", "--direct"], 1, "Error: No users are connected to github."),
    ],
)
def test_sync_github_errors(
    cli_env: CliEnv, github: Box, args: list[str], code: int, message: str
) -> None:
    invoke("users", "add", "ana")  # a user without a github connection

    result = invoke("sync", "github", *args, exit_code=code)

    assert error_of(result).endswith(message)
    assert runs(cli_env.dagster_home) == []


def test_sync_platform_names_missing_credentials(cli_env: CliEnv) -> None:
    result = invoke("sync", "youtube", "--all", exit_code=1)

    assert error_of(result) == (
        "Error: YOUTUBE_CLIENT_ID, YOUTUBE_CLIENT_SECRET not set: put them in .env (see README) "
        "or run `sync-pipeline init` for the sandbox defaults."
    )


# ---------------------------------------------------------------------------------------------
# status, dead letters, cleanup


def test_status_reports_the_figures_of_a_known_state(cli_env: CliEnv, strava_env: Sandbox) -> None:
    ids = [strava_env.state.add_athlete(0) for _ in range(3)]
    invoke("athletes", "connect", "--count", "3")
    url = cli_env.db_url
    with transaction(url) as s:
        reconnect = s.get(Athlete, ids[2])
        assert reconnect is not None
        reconnect.state = "needs_reconnect"
        s.add(AppUser(id="ana", timezone="UTC"))
        s.add(
            PlatformConnection(
                user_id="ana", platform="github", account_id="g1", state="needs_reconnect"
            )
        )
    add_state(url, "strava", str(ids[0]), "succeeded")
    add_state(url, "strava", str(ids[1]), "dead")
    add_state(url, "github", "ana", "failed")

    report = json.loads(invoke("status", "--json").stdout)

    assert list(report) == SOURCES
    idle: dict[str, Any] = {
        "queued": 0,
        "running": 0,
        "succeeded_24h": 0,
        "failed_24h": 0,
        "oldest_queued_seconds": None,
        "budget": [],
    }
    assert report["strava"] == {
        "source": "strava",
        **idle,
        "partitions_by_status": {"dead": 1, "succeeded": 1},
        "dead_letters": 1,
        "needs_reconnect": 1,
    }
    assert report["github"] == {
        "source": "github",
        **idle,
        "partitions_by_status": {"failed": 1},
        "dead_letters": 0,
        "needs_reconnect": 1,
    }
    for name in ("youtube", "x", "instagram"):
        assert report[name] == {
            "source": name,
            **idle,
            "partitions_by_status": {},
            "dead_letters": 0,
            "needs_reconnect": 0,
        }
    listed = json.loads(invoke("athletes", "list", "--json").stdout)
    assert [a["state"] for a in listed] == ["connected", "connected", "needs_reconnect"]

    text = invoke("status", "--source", "strava").stdout

    assert text == (
        "strava\n"
        "  runs: queued 0 (oldest -), running 0, succeeded 24h 0, failed 24h 0\n"
        "  partitions by sync status: dead 1, succeeded 1\n"
        "  dead letters: 1   needing reconnect: 1\n"
    )


def test_status_of_an_unknown_source_is_a_usage_error() -> None:
    result = invoke("status", "--source", "myspace", exit_code=2)

    assert "Invalid value for '--source': 'myspace' is not one of" in error_of(result)


def test_dead_letters_list(cli_env: CliEnv) -> None:
    assert invoke("dead-letters", "list").stdout == "no dead letters\n"
    assert json.loads(invoke("dead-letters", "list", "--json").stdout) == []
    failed_at = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    fields = {
        "last_error_class": "permanent",
        "consecutive_failures": 3,
        "last_error_at": failed_at,
        "first_failure_at": failed_at - dt.timedelta(hours=1),
    }
    add_state(cli_env.db_url, "strava", "1001", "dead", last_error="gone", **fields)
    add_state(
        cli_env.db_url, "github", "ana", "dead", last_error="nope", last_run_id="r1", **fields
    )
    add_state(cli_env.db_url, "strava", "1002", "failed", last_error="retrying")

    # As the database gives the times back (SQLite drops the zone, PostgreSQL keeps it).
    with transaction(cli_env.db_url) as s:
        state = s.get(SyncState, ("github", "ana"))
        assert state is not None and state.first_failure_at and state.last_error_at
        first, last = state.first_failure_at.isoformat(), state.last_error_at.isoformat()
    assert dt.datetime.fromisoformat(last).replace(tzinfo=dt.UTC) == failed_at

    out = invoke("dead-letters", "list").stdout

    assert out == (
        f"strava/1001: permanent after 3 attempt(s), last {last} (run None)\n"
        "    gone\n"
        f"github/ana: permanent after 3 attempt(s), last {last} (run r1)\n"
        "    nope\n"
    )
    rows = json.loads(invoke("dead-letters", "list", "--source", "github", "--json").stdout)
    assert rows == [
        {
            "source": "github",
            "partition": "ana",
            "error_class": "permanent",
            "message": "nope",
            "attempts": 3,
            "first_failure_at": first,
            "last_failure_at": last,
            "run_id": "r1",
        }
    ]


@pytest.mark.parametrize(
    ("args", "code", "output"),
    [
        ([], 2, "Error: Give exactly one of --partition P, --key K or --all."),
        (
            ["--partition", "1001", "--all"],
            2,
            "Error: Give exactly one of --partition P, --key K or --all.",
        ),
        (
            ["--source", "myspace", "--all"],
            2,
            "Error: Invalid value for '--source': 'myspace' is not one of "
            + ", ".join(f"'{name}'" for name in SOURCES)
            + ".",
        ),
        (
            ["--partition", "1001"],
            1,
            "Error: strava/1001 is not a dead letter; see `sync-pipeline dead-letters list`.",
        ),
        (
            ["--source", "github", "--partition", "ana"],
            1,
            "Error: github/ana is not a dead letter; see `sync-pipeline dead-letters list`.",
        ),
        (["--all"], 0, "no dead letters"),
        (["--source", "instagram", "--all"], 0, "no dead letters"),
    ],
)
def test_dead_letters_redrive_with_nothing_to_redrive(
    cli_env: CliEnv, args: list[str], code: int, output: str
) -> None:
    add_state(cli_env.db_url, "strava", "1001", "failed")  # failing, not dead: still retried
    add_state(cli_env.db_url, "github", "ana", "succeeded")

    result = invoke("dead-letters", "redrive", *args, exit_code=code)

    if code == 0:
        assert result.stdout == f"{output}\n"
    else:
        assert error_of(result).endswith(output)
    assert runs(cli_env.dagster_home) == []


def test_dead_letters_redrive_queues_one_partition(cli_env: CliEnv, launchable: Path) -> None:
    add_state(cli_env.db_url, "strava", "1001", "dead", last_error="gone")

    out = invoke("dead-letters", "redrive", "--partition", "1001").stdout

    assert out.endswith("redriving 1 dead letter(s): 1001\n")
    [run] = runs(cli_env.dagster_home)
    assert (run.job_name, run.status) == ("strava_athlete_sync", dg.DagsterRunStatus.QUEUED)
    assert run.tags["dagster/partition"] == "1001"
    assert run.tags[priorities.PRIORITY_TAG] == str(priorities.MANUAL)
    assert run.tags[priorities.TRIGGER_TAG] == "redrive"


def test_dead_letters_redrive_uses_the_default_dagster_home(
    cli_env: CliEnv, launchable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No DAGSTER_HOME: `sync`, `status` and `cleanup` use $SYNC_HOME/dagster.
    monkeypatch.delenv("DAGSTER_HOME")
    home = cli_env.home / "dagster"
    home.mkdir(parents=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    add_state(cli_env.db_url, "strava", "1001", "dead", last_error="gone")

    invoke("dead-letters", "redrive", "--partition", "1001")

    [run] = runs(home)
    assert run.tags["dagster/partition"] == "1001"


def test_cleanup_dry_run_on_an_empty_instance(cli_env: CliEnv) -> None:
    before = dt.datetime.now(dt.UTC)

    report = json.loads(invoke("cleanup", "--dry-run", "--json").stdout)

    cutoff = dt.datetime.fromisoformat(report.pop("cutoff"))
    week = dt.timedelta(days=7)
    assert before - week <= cutoff <= dt.datetime.now(dt.UTC) - week
    assert report == {
        "dry_run": True,
        "examined": 0,
        "deleted": 0,
        "deleted_run_ids": [],
        "kept_latest_materialization": 0,
        "kept_explains_failure": 0,
    }
    text = invoke("cleanup", "--dry-run", "--older-than", "12h").stdout
    assert text.startswith("runs finished before ")
    assert text.endswith(
        ": examined 0, would delete 0, kept 0 holding a partition's latest materialization "
        "and 0 explaining a current failure\n"
    )


def test_cleanup_refuses_a_bad_age() -> None:
    result = invoke("cleanup", "--older-than", "3 weeks", exit_code=2)

    assert error_of(result).endswith(
        "Error: Invalid value for --older-than: '3 weeks' is not an age; "
        "use e.g. 7d, 12h, 30m or 90s"
    )


# ---------------------------------------------------------------------------------------------
# sandbox


def test_sandbox_listens_on_loopback_only() -> None:
    result = invoke("sandbox", "--host", "0.0.0.0", exit_code=2)

    assert error_of(result).endswith(
        "Error: Invalid value for --host: the sandbox listens on loopback only"
    )


def test_sandbox_on_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = invoke("sandbox", "--port", str(port), "--no-platforms", exit_code=1)

    assert error_of(result).startswith(
        f"Error: Cannot start the Strava sandbox on 127.0.0.1:{port} ("
    )
    assert "is another one running?" in error_of(result)


def test_sandbox_on_a_taken_port_names_its_own_option() -> None:
    handler = signal.getsignal(signal.SIGTERM)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = invoke("sandbox", "--port", str(port), "--no-platforms", exit_code=1)

    assert error_of(result).endswith("Pick another port with --port.")
    assert signal.getsignal(signal.SIGTERM) == handler  # the command's own is gone


def test_dev_on_a_taken_sandbox_port_names_its_option() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(click.ClickException) as failed:
            cli_sandbox.start_sandbox(
                host="127.0.0.1",
                port=port,
                port_option="--sandbox-port",
                athletes=1,
                seed=42,
                time_scale=1,
                client_secret="secret",
            )

    assert failed.value.message.endswith("Pick another port with --sandbox-port.")


def test_sandbox_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not is_setting(k)}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "sync-pipeline"),
            "sandbox",
            "--port",
            str(port),
            "--athletes",
            "3",
            "--no-platforms",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        response = wait_for_server(
            f"{url}/_sandbox/athletes", proc, 60, what="the sandbox", ready=lambda r: True
        )
        assert [a["id"] for a in response.json()] == [1001, 1002, 1003]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert stdout.decode() == f"Strava sandbox on {url} (3 athletes)\nCtrl-C stops them\n"


# ---------------------------------------------------------------------------------------------
# every command with only the `.env` that `init` wrote


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["db", "current"], f"database: {HEAD}  code: {HEAD}\n"),
        (["athletes", "list"], "        id  name                     state"),
        (["users", "list"], "no users; add one with `sync-pipeline users add USER_ID`\n"),
        (["status", "--source", "github"], "github\n  runs: queued 0"),
        (["dead-letters", "list"], "no dead letters\n"),
        (["cleanup", "--dry-run"], "runs finished before "),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_commands_run_with_only_the_env_init_wrote(
    tmp_path: Path, command: list[str], expected: str
) -> None:
    invoke("init", "--sandbox-port", str(SANDBOX_PORT))
    new_process()

    result = invoke(*command)

    assert result.stdout.startswith(expected), result.stdout
    home = tmp_path.resolve() / ".sync_home"
    assert not (tmp_path / "dagster").exists()  # the Dagster home of .env, not a default one
    assert (home / "dagster" / "dagster.yaml").is_file()


def test_sandbox_serves_on_the_port_init_wrote(tmp_path: Path) -> None:
    port = free_port()
    assert run_cli(tmp_path, "init", "--sandbox-port", str(port)).returncode == 0
    env = {k: v for k, v in os.environ.items() if not is_setting(k)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "sync-pipeline"), "sandbox", "--athletes", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # the last sandbox started (the platforms start after Strava, in order)
        wait_for_server(f"http://127.0.0.1:{port + 4}/_sandbox/faults", proc, 60, what="sandboxes")
        athletes = wait_for_server(
            f"http://127.0.0.1:{port}/_sandbox/athletes", proc, 5, what="the Strava sandbox"
        ).json()
        assert [a["id"] for a in athletes] == [1001, 1002]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert stdout.decode().startswith(f"Strava sandbox on http://127.0.0.1:{port} (2 athletes)\n")
    assert f"github sandbox on http://127.0.0.1:{port + 1}" in stdout.decode()


def test_athletes_list_prints_the_reason_summarized_on_its_own_line(
    cli_env: CliEnv, strava_env: Sandbox
) -> None:
    athlete = strava_env.state.add_athlete(0)
    invoke("athletes", "connect", "--sandbox-athlete", str(athlete))
    error = (
        "Strava list activities: HTTP 503 "
        + json.dumps({"message": "Service Unavailable", "errors": [{"code": "x" * 120}]})[:190]
    )
    add_state(cli_env.db_url, "strava", str(athlete), "dead", last_error=error)

    lines = invoke("athletes", "list").stdout.splitlines()

    assert lines[1].startswith(f"{athlete:>10}  ") and lines[1].endswith(" dead       -")
    assert lines[2:] == ["            reason: Strava list activities: HTTP 503 Service Unavailable"]
    [row] = json.loads(invoke("athletes", "list", "--json").stdout)
    assert row["last_error"] == error  # in full
