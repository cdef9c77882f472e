"""The app database of a benchmark: migrated SQLite, bulk-connected and pre-synced athletes."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench_paths import SCOPES
from bench_sandbox import Sandbox
from sqlalchemy import insert

from sync_pipeline.core import db
from sync_pipeline.core.crypto import TokenCipher, generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Athlete, OAuthToken, StravaActivity, SyncState
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.tokens import TokenSet
from sync_pipeline.defs.strava.models import SummaryActivity
from sync_pipeline.defs.strava.sync import activity_row as sync_activity_row


def create_app_db(path: Path, token_key: str | None = None) -> AppDatabaseResource:
    """A new SQLite app database at `path`, migrated to head."""
    url = f"sqlite:///{path}"
    db.upgrade(url)
    return AppDatabaseResource(url=url, token_key=token_key or generate_key())


def copy_app_db(src: AppDatabaseResource, path: Path) -> AppDatabaseResource:
    """A file copy of a SQLite app database (checkpointed first), with the same key."""
    src_path = Path(src.url.split("///", 1)[1])
    engine = db.get_engine(src.url)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose_engines()
    shutil.copyfile(src_path, path)
    return AppDatabaseResource(url=f"sqlite:///{path}", token_key=src.token_key)


def activity_row(d: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The strava_activities row the sync writes for one API activity (the sync's own mapping)."""
    return sync_activity_row(SummaryActivity.from_api(d), now)


def connect_athletes(
    app_db: AppDatabaseResource, sandbox: Sandbox, athlete_ids: Sequence[int]
) -> float:
    """Connect athletes without OAuth round trips; returns the seconds it took.

    Tokens come from the sandbox (`issue_tokens`, the same grant the consent flow makes) and
    are stored encrypted: through `TokenStore.save` for up to 20,000 athletes, above that in
    bulk with the same cipher (one transaction instead of one per athlete).
    """
    started = time.perf_counter()
    grants = {a: sandbox.state.issue_tokens(a, SCOPES) for a in athlete_ids}
    rows = []
    for a, grant in grants.items():
        profile = grant["athlete"]
        rows.append(
            {
                "id": a,
                "username": profile.get("username"),
                "firstname": profile.get("firstname"),
                "lastname": profile.get("lastname"),
                "city": profile.get("city"),
                "country": profile.get("country"),
                "scopes": SCOPES,
                "state": "connected",
                "raw": {k: v for k, v in profile.items() if k != "email"},
            }
        )
    with transaction(app_db.url) as s:
        for chunk in chunks(rows, 2000):
            s.execute(insert(Athlete), chunk)
    tokens = {
        a: TokenSet(
            access_token=str(g["access_token"]),
            refresh_token=str(g["refresh_token"]),
            expires_at=int(g["expires_at"]),
            scopes=SCOPES,
        )
        for a, g in grants.items()
    }
    if len(tokens) <= 20_000:
        store = app_db.tokens("strava")
        for a, t in tokens.items():
            store.save(str(a), t)
    else:
        cipher = TokenCipher(app_db.token_key)
        token_rows = [
            {
                "provider": "strava",
                "account_id": str(a),
                "access_token_enc": cipher.encrypt(t.access_token),
                "refresh_token_enc": cipher.encrypt(t.refresh_token or ""),
                "expires_at": t.expires_at,
                "scopes": t.scopes,
                "version": 0,
            }
            for a, t in tokens.items()
        ]
        with transaction(app_db.url) as s:
            for chunk in chunks(token_rows, 2000):
                s.execute(insert(OAuthToken), chunk)
        sample = next(iter(tokens))
        assert app_db.tokens("strava").get(str(sample)) == tokens[sample]
    return time.perf_counter() - started


def seed_synced(app_db: AppDatabaseResource, sandbox: Sandbox, athlete_ids: Sequence[int]) -> int:
    """Store the athletes' current activities as a completed full sync would have.

    Rows are written straight from the sandbox state (no HTTP), processed, and each athlete
    gets a succeeded sync state with `last_full_sync_at`, so the next sweep is incremental.
    Returns the number of activities stored.
    """
    now = dt.datetime.now(dt.UTC)
    total = 0
    state_rows = []
    batch: list[dict[str, Any]] = []
    with transaction(app_db.url) as s:
        for a in athlete_ids:
            token = sandbox.state.authenticate(str(sandbox.state._grants[a].access_token))
            page = 1
            while True:
                items = sandbox.state.list_activities(token, page=page, per_page=200)
                for d in items:
                    row = activity_row(d, now)
                    row["processed_at"] = now
                    batch.append(row)
                if len(batch) >= 2000:
                    s.execute(insert(StravaActivity), batch)
                    total += len(batch)
                    batch = []
                if len(items) < 200:
                    break
                page += 1
            state_rows.append(
                {
                    "source": "strava",
                    "partition_key": str(a),
                    "status": "succeeded",
                    "pages_done": 0,
                    "items_synced": 0,
                    "last_success_at": now,
                    "last_full_sync_at": now,
                    "consecutive_failures": 0,
                    "failure_seq": 0,
                }
            )
        if batch:
            s.execute(insert(StravaActivity), batch)
            total += len(batch)
        for chunk in chunks(state_rows, 2000):
            s.execute(insert(SyncState), chunk)
    return total


def chunks(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most `n` items."""
    for i in range(0, len(items), n):
        yield items[i : i + n]
