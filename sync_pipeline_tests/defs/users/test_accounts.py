"""Users and connections in the app database: validation, privacy, disconnect, delete."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.daily import write_days
from sync_pipeline.core.db import transaction
from sync_pipeline.core.errors import ConfigError
from sync_pipeline.core.models import DailyActivity, PlatformConnection
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.tokens import TokenSet
from sync_pipeline.defs.users.accounts import (
    add_user,
    connected_user_ids,
    delete_user,
    disconnect,
    list_users,
    set_privacy,
)
from sync_pipeline.defs.users.scores import compute_user, public_scores, refresh_scores

DAY = dt.date(2026, 11, 20)


def connection(db_url: str, user: str, platform: str, account: str) -> None:
    with transaction(db_url) as s:
        s.add(PlatformConnection(user_id=user, platform=platform, account_id=account, extra={}))


@pytest.mark.parametrize(
    ("user_id", "tz", "message"),
    [
        ("bad id!", "UTC", "letters, digits"),
        ("", "UTC", "letters, digits"),
        ("x" * 65, "UTC", "letters, digits"),
        ("ok", "Mars/Olympus", "Unknown time zone"),
    ],
)
def test_bad_users_are_refused_with_what_to_do(
    db_url: str, user_id: str, tz: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        add_user(db_url, user_id, timezone=tz)


def test_add_user_twice_updates_the_time_zone(db_url: str) -> None:
    assert add_user(db_url, "ana", timezone="Europe/Berlin") is True
    assert add_user(db_url, "ana", timezone="Asia/Tokyo") is False
    [row] = list_users(db_url)
    assert (row.id, row.timezone) == ("ana", "Asia/Tokyo")


def test_disconnect_removes_tokens_rows_and_state_but_not_other_platforms(db_url: str) -> None:
    app_db = AppDatabaseResource(url=db_url, token_key=generate_key())
    add_user(db_url, "ana")
    for platform in ("github", "x"):
        connection(db_url, "ana", platform, f"{platform}-1")
        app_db.tokens(platform).save("ana", TokenSet("secret-access", None, None))
        write_days(db_url, "ana", platform, DAY, DAY, {DAY: 3})
    assert connected_user_ids(db_url) == ["ana"]

    assert disconnect(db_url, "ana", "github") is True

    assert app_db.tokens("github").get("ana") is None
    assert app_db.tokens("x").get("ana") is not None
    with transaction(db_url) as s:
        platforms = {r.platform for r in s.query(DailyActivity)}
    assert platforms == {"x"}
    assert disconnect(db_url, "ana", "github") is False
    assert connected_user_ids(db_url, "github") == []


def test_private_platforms_never_reach_the_public_score(db_url: str) -> None:
    add_user(db_url, "ana")
    connection(db_url, "ana", "github", "g")
    connection(db_url, "ana", "x", "x")
    today = dt.datetime.now(dt.UTC).date()
    write_days(db_url, "ana", "github", today - dt.timedelta(days=5), today, {today: 1})
    write_days(
        db_url,
        "ana",
        "x",
        today - dt.timedelta(days=5),
        today,
        {today - dt.timedelta(days=d): 4 for d in range(1, 6)},
    )
    set_privacy(db_url, "ana", "x", private=True)

    events = list(refresh_scores(db_url, ["ana"]))

    found = compute_user(db_url, "ana")
    assert found is not None
    owner, public = found
    assert owner.current_streak == 6 and owner.active_days == {"github": 1, "x": 5}
    assert public.current_streak == 1 and public.active_days == {"github": 1}
    served = public_scores(db_url, "ana")
    assert served is not None
    assert "x" not in served["active_days"]  # type: ignore[operator]
    assert {e.asset_key.to_user_string() for e in events} == {
        "user_consistency",
        "user_consistency_public",
    }
    public_md = next(e for e in events if e.asset_key.to_user_string().endswith("public"))
    assert public_md.metadata["current_streak"] == dg.MetadataValue.int(1)


def test_privacy_of_an_unknown_connection_is_refused(db_url: str) -> None:
    add_user(db_url, "ana")
    with pytest.raises(ConfigError, match="no github connection"):
        set_privacy(db_url, "ana", "github", private=True)
    with pytest.raises(ConfigError, match="Unknown platform"):
        set_privacy(db_url, "ana", "myspace", private=True)


def test_delete_user_removes_everything(db_url: str) -> None:
    add_user(db_url, "ana")
    connection(db_url, "ana", "github", "g")
    write_days(db_url, "ana", "github", DAY, DAY, {})
    assert delete_user(db_url, "ana") is True
    assert list_users(db_url) == []
    assert delete_user(db_url, "ana") is False
