"""`sync-pipeline users` (cli/users.py): app users, their platform connections and scores."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select

from sync_pipeline.core.crypto import TokenCipher
from sync_pipeline.core.daily import write_days
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import (
    AppUser,
    ConsistencyScore,
    DailyActivity,
    OAuthToken,
    PlatformConnection,
)
from sync_pipeline_tests.cli.conftest import CliEnv, error_of, invoke
from sync_pipeline_tests.platforms import Box


def users_in(db_url: str) -> dict[str, tuple[str, str | None]]:
    """{user id: (time zone, display name)}."""
    with transaction(db_url) as s:
        return {u.id: (u.timezone, u.display_name) for u in s.scalars(select(AppUser))}


def connections(db_url: str) -> dict[tuple[str, str], tuple[str, bool]]:
    """{(user, platform): (state, private)}."""
    with transaction(db_url) as s:
        return {
            (c.user_id, c.platform): (c.state, c.private)
            for c in s.scalars(select(PlatformConnection))
        }


def scores(db_url: str) -> dict[tuple[str, str], tuple[int, dict[str, Any]]]:
    """{(user, variant): (current streak, active days per platform)} as stored."""
    with transaction(db_url) as s:
        return {
            (c.user_id, c.variant): (c.current_streak, dict(c.active_days))
            for c in s.scalars(select(ConsistencyScore))
        }


def test_users_add_and_update(cli_env: CliEnv) -> None:
    assert invoke("users", "list").stdout == (
        "no users; add one with `sync-pipeline users add USER_ID`\n"
    )

    added = invoke("users", "add", "ana", "--timezone", "Europe/Berlin", "--name", "Ana").stdout
    updated = invoke("users", "add", "ana", "--timezone", "Asia/Tokyo").stdout

    assert added == "added user ana (Europe/Berlin)\n"
    assert updated == "updated user ana (Asia/Tokyo)\n"
    assert users_in(cli_env.db_url) == {"ana": ("Asia/Tokyo", "Ana")}
    assert invoke("users", "list").stdout == 'ana "Ana" (Asia/Tokyo)\n'
    assert json.loads(invoke("users", "list", "--json").stdout) == [
        {"id": "ana", "name": "Ana", "timezone": "Asia/Tokyo", "platforms": {}}
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["bad id!"],
            "Error: User id 'bad id!' must be 1-64 letters, digits, '-' or '_' "
            "(it is a partition key).",
        ),
        (
            ["ana", "--timezone", "Mars/Olympus"],
            "Error: Unknown time zone 'Mars/Olympus'; set an IANA name such as Europe/Berlin "
            "with `sync-pipeline users add --timezone`.",
        ),
    ],
)
def test_users_add_refuses_bad_input(cli_env: CliEnv, args: list[str], message: str) -> None:
    result = invoke("users", "add", *args, exit_code=1)

    assert error_of(result) == message
    assert users_in(cli_env.db_url) == {}


def test_users_connect_through_the_sandbox_consent(cli_env: CliEnv, github: Box) -> None:
    [account] = github.state.list_accounts()
    invoke("users", "add", "ana")

    out = invoke("users", "connect", "ana", "github", "--sandbox-account", str(account["id"]))

    assert out.stdout == f"connected ana to github account {account['handle']}\n"
    assert connections(cli_env.db_url) == {("ana", "github"): ("connected", False)}
    with transaction(cli_env.db_url) as s:
        [token] = s.scalars(select(OAuthToken))
        assert (token.provider, token.account_id) == ("github", "ana")
        assert TokenCipher(cli_env.token_key).decrypt(token.access_token_enc)
    assert invoke("users", "list").stdout == (
        f"ana (UTC)\n  {'github':9} {account['handle']:20} connected: 0 days, 0 items, sync never\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bob", "github"], "Error: No user 'bob'; add them first: `sync-pipeline users add`."),
        (
            ["ana", "github", "--sandbox-account", "4242"],
            "Error: Github's consent page answered HTTP 4",
        ),
    ],
)
def test_users_connect_errors(cli_env: CliEnv, github: Box, args: list[str], message: str) -> None:
    invoke("users", "add", "ana")

    result = invoke("users", "connect", *args, exit_code=1)

    assert error_of(result).startswith(message)
    assert connections(cli_env.db_url) == {}


def test_users_connect_names_missing_platform_credentials(cli_env: CliEnv) -> None:
    invoke("users", "add", "ana")

    result = invoke("users", "connect", "ana", "x", exit_code=1)

    assert error_of(result) == (
        "Error: X_CLIENT_ID, X_CLIENT_SECRET not set: put them in .env (see README) or run "
        "`sync-pipeline init` for the sandbox defaults."
    )


@pytest.fixture
def ana(cli_env: CliEnv, github: Box) -> dt.date:
    """User ana (UTC) connected to GitHub, active the last three days; returns today."""
    invoke("users", "add", "ana")
    invoke("users", "connect", "ana", "github")
    today = dt.datetime.now(dt.UTC).date()
    counts = {today - dt.timedelta(days=d): 2 for d in range(3)}
    write_days(cli_env.db_url, "ana", "github", today - dt.timedelta(days=9), today, counts)
    return today


def test_users_score_owner_and_public(cli_env: CliEnv, ana: dt.date) -> None:
    owner = json.loads(invoke("users", "score", "ana").stdout)
    public = json.loads(invoke("users", "score", "ana", "--public").stdout)

    figures = {
        "user_id": "ana",
        "as_of": ana.isoformat(),
        "current_streak": 3,
        "longest_streak": 3,
        "rate_7d": round(3 / 7, 4),
        "rate_30d": 0.1,
        "active_days": {"github": 3},
    }
    assert owner == {**figures, "variant": "owner"}
    assert public == {**figures, "variant": "public"}
    assert (
        invoke("users", "list")
        .stdout.splitlines()[1]
        .endswith("connected: 10 days, 6 items, sync never")
    )


def test_users_privacy_leaves_private_platforms_out_of_public_scores(
    cli_env: CliEnv, ana: dt.date
) -> None:
    out = invoke("users", "privacy", "ana", "github", "--private").stdout

    assert out == "ana/github is now private\n"
    assert connections(cli_env.db_url) == {("ana", "github"): ("connected", True)}
    # The stored scores are refreshed at once, not at the next sync.
    assert scores(cli_env.db_url) == {
        ("ana", "owner"): (3, {"github": 3}),
        ("ana", "public"): (0, {}),
    }
    public = json.loads(invoke("users", "score", "ana", "--public").stdout)
    assert (public["current_streak"], public["active_days"]) == (0, {})
    assert "private" in invoke("users", "list").stdout.splitlines()[1]

    invoke("users", "privacy", "ana", "github", "--public")

    assert connections(cli_env.db_url) == {("ana", "github"): ("connected", False)}
    assert scores(cli_env.db_url)[("ana", "public")] == (3, {"github": 3})


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ana", "x", "--private"], 1, "Error: User 'ana' has no x connection."),
        (["bob", "github", "--private"], 1, "Error: User 'bob' has no github connection."),
        (["ana", "github"], 2, "Error: Missing option '--private'."),
        (["ana", "myspace", "--private"], 2, "Error: Invalid value for '{github|instagram|x"),
    ],
)
def test_users_privacy_errors(
    cli_env: CliEnv, ana: dt.date, args: list[str], code: int, message: str
) -> None:
    result = invoke("users", "privacy", *args, exit_code=code)

    assert message in error_of(result)
    assert connections(cli_env.db_url) == {("ana", "github"): ("connected", False)}


def test_users_disconnect_deletes_the_connection_and_its_data(
    cli_env: CliEnv, ana: dt.date
) -> None:
    invoke("users", "add", "ben")
    write_days(cli_env.db_url, "ben", "github", ana, ana, {ana: 1})

    out = invoke("users", "disconnect", "ana", "github").stdout

    assert out == "disconnected ana from github; their github data is deleted\n"
    assert connections(cli_env.db_url) == {}
    with transaction(cli_env.db_url) as s:
        assert list(s.scalars(select(OAuthToken))) == []
        assert list(s.scalars(select(DailyActivity.user_id).distinct())) == ["ben"]
    assert scores(cli_env.db_url) == {("ana", "owner"): (0, {}), ("ana", "public"): (0, {})}
    again = invoke("users", "disconnect", "ana", "github", exit_code=1)
    assert error_of(again) == "Error: ana has no github connection."
    assert users_in(cli_env.db_url) == {"ana": ("UTC", None), "ben": ("UTC", None)}


def test_users_remove_deletes_everything_of_the_user(cli_env: CliEnv, ana: dt.date) -> None:
    invoke("users", "privacy", "ana", "github", "--private")  # stores scores
    invoke("users", "add", "ben")

    out = invoke("users", "remove", "ana").stdout

    assert out == "removed ana; the users sensor drops their partition\n"
    assert users_in(cli_env.db_url) == {"ben": ("UTC", None)}
    assert connections(cli_env.db_url) == {}
    assert scores(cli_env.db_url) == {}
    with transaction(cli_env.db_url) as s:
        assert list(s.scalars(select(OAuthToken))) == []
        assert list(s.scalars(select(DailyActivity))) == []


@pytest.mark.parametrize("command", [["remove"], ["score"], ["score", "--public"]], ids=" ".join)
def test_unknown_users_are_clear_errors(cli_env: CliEnv, command: list[str]) -> None:
    invoke("users", "add", "ben")

    result = invoke("users", command[0], "ana", *command[1:], exit_code=1)

    assert error_of(result) == "Error: No user 'ana'."
    assert users_in(cli_env.db_url) == {"ben": ("UTC", None)}
