"""The no-orchestration baseline: a plain asyncio + httpx + SQLAlchemy sync of every athlete.

Same API calls as the pipeline (`GET /api/v3/athlete/activities` with after/page or before,
per_page=200, and for an incremental sync `GET /activities/{id}/streams` of the newly found
non-trainer, non-manual activities, newest first, at most `--streams-per-sync`), the same
writes into the same app database tables (activities upserted page by page with the same
columns and JSON payload, streams upserted and the activity marked processed, activities no
longer on Strava deleted after a full sync, one `sync_state` row per athlete marked
succeeded), at a fixed concurrency; with `--read-limit-15min` a plain fixed-window limiter keeps it
within the read limits. What it leaves out is exactly what the pipeline adds: no
Dagster, no shared rate budget, no per-page checkpoint or lease, the token decrypted once
per athlete instead of once per call.

Run: ``SYNC_TOKEN_KEY=... python benchmarks/baseline.py --db-url sqlite:///app.db
--base-url http://127.0.0.1:PORT --mode incremental --concurrency 12``; prints one JSON line.
It imports neither Dagster nor the pipeline's sync code (only the table definitions).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.fernet import Fernet, MultiFernet
from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from sync_pipeline.core.models import Athlete, OAuthToken, StravaActivity, StravaStream, SyncState
from sync_pipeline.defs.strava.models import SummaryActivity
from sync_pipeline.defs.strava.sync import UPDATABLE
from sync_pipeline.defs.strava.sync import activity_row as sync_activity_row

PER_PAGE = 200
STREAM_KEYS = "latlng,time,distance,altitude"
STREAM_UPDATABLE = ["points", "latlng", "time_s", "distance_m", "altitude_m", "fetched_at"]


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "foreign_keys=ON",
        "synchronous=NORMAL",
        "busy_timeout=30000",
    ):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def engine_for(url: str) -> Engine:
    """SQLAlchemy engine with the app's SQLite settings."""
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _pragmas)
    return engine


def start_date(value: str) -> dt.datetime:
    """Strava's UTC timestamp."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def row(d: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A strava_activities row from one API activity: the same mapping the sync writes."""
    return sync_activity_row(SummaryActivity.from_api(d), now)


@dataclass
class Totals:
    """What the run did."""

    athletes: int = 0
    succeeded: int = 0
    failed: int = 0
    api_calls: int = 0
    activities_written: int = 0
    streams_written: int = 0
    deleted: int = 0
    responses_429: int = 0
    rate_wait_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class Store:
    """The app database, written from one thread (SQLite has one writer anyway)."""

    def __init__(self, url: str, token_key: str) -> None:
        self.engine = engine_for(url)
        keys = [k.strip() for k in token_key.split(",") if k.strip()]
        self.cipher = MultiFernet([Fernet(k.encode()) for k in keys])

    def athletes(self) -> list[int]:
        """Connected athletes."""
        with Session(self.engine) as s:
            return list(
                s.scalars(
                    select(Athlete.id).where(Athlete.state == "connected").order_by(Athlete.id)
                )
            )

    def access_token(self, athlete_id: int) -> str:
        """The athlete's decrypted access token."""
        with Session(self.engine) as s:
            enc = s.scalar(
                select(OAuthToken.access_token_enc).where(
                    OAuthToken.provider == "strava", OAuthToken.account_id == str(athlete_id)
                )
            )
        if enc is None:
            raise RuntimeError(f"no token for athlete {athlete_id}")
        return self.cipher.decrypt(enc).decode()

    def newest_start(self, athlete_id: int) -> int:
        """`after` of an incremental sync."""
        with Session(self.engine) as s:
            value = s.scalar(
                select(func.max(StravaActivity.start_epoch)).where(
                    StravaActivity.athlete_id == athlete_id
                )
            )
        return int(value or 0)

    def write_page(self, items: list[dict[str, Any]], now: dt.datetime) -> None:
        """Upsert one page of activities."""
        # One cached single-row statement, the rows as parameter sets (executemany): the
        # fastest form SQLAlchemy offers, as the pipeline's `core.db.upsert` uses.
        stmt = sqlite_insert(StravaActivity)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={c: stmt.excluded[c] for c in UPDATABLE}
        )
        with Session(self.engine) as s, s.begin():
            s.execute(stmt, [row(d, now) for d in items])

    def write_streams(self, athlete_id: int, activity_id: int, streams: dict[str, Any]) -> None:
        """Store an activity's streams and mark it processed."""

        def data(key: str) -> list[Any]:
            value = streams.get(key)
            return list(value.get("data") or []) if isinstance(value, dict) else []

        latlng, times = data("latlng"), data("time")
        now = dt.datetime.now(dt.UTC)
        stmt = sqlite_insert(StravaStream).values(
            [
                {
                    "activity_id": activity_id,
                    "athlete_id": athlete_id,
                    "points": len(latlng) or len(times),
                    "latlng": latlng,
                    "time_s": times,
                    "distance_m": data("distance"),
                    "altitude_m": data("altitude"),
                    "fetched_at": now,
                }
            ]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["activity_id"], set_={c: stmt.excluded[c] for c in STREAM_UPDATABLE}
        )
        with Session(self.engine) as s, s.begin():
            s.execute(stmt)
            s.execute(
                update(StravaActivity)
                .where(StravaActivity.id == activity_id)
                .values(processed_at=now)
            )

    def delete_gone(self, athlete_id: int, started: dt.datetime) -> int:
        """After a full sync: remove activities Strava no longer lists."""
        with Session(self.engine) as s, s.begin():
            result = s.execute(
                delete(StravaActivity).where(
                    StravaActivity.athlete_id == athlete_id, StravaActivity.synced_at < started
                )
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def succeeded(self, athlete_id: int, full: bool) -> None:
        """Record the athlete's sync as succeeded."""
        now = dt.datetime.now(dt.UTC)
        values: dict[str, Any] = {
            "source": "strava",
            "partition_key": str(athlete_id),
            "status": "succeeded",
            "last_success_at": now,
        }
        if full:
            values["last_full_sync_at"] = now
        stmt = sqlite_insert(SyncState).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["source", "partition_key"],
            set_={k: stmt.excluded[k] for k in values if k not in ("source", "partition_key")},
        )
        with Session(self.engine) as s, s.begin():
            s.execute(stmt)


class Limiter:
    """A plain fixed-window read limiter: count calls per window, sleep to the next window
    when one is spent; usage reported in the headers only raises the counts."""

    def __init__(self, limit: int, seconds: float, daily: int, day_seconds: float) -> None:
        self.limits = ((limit, seconds), (daily, day_seconds))
        self.used: list[dict[int, int]] = [{}, {}]

    async def admit(self) -> float:
        """Wait until both windows have room and count the call; returns seconds waited."""
        waited = 0.0
        while True:
            now = time.time()
            resets = []
            for (limit, seconds), used in zip(self.limits, self.used, strict=True):
                index = math.floor(now / seconds)
                if used.get(index, 0) >= limit:
                    resets.append((index + 1) * seconds)
            if not resets:
                for (_limit, seconds), used in zip(self.limits, self.used, strict=True):
                    index = math.floor(now / seconds)
                    used[index] = used.get(index, 0) + 1
                return waited
            pause = max(resets) - now + 0.01
            await asyncio.sleep(pause)
            waited += pause

    def observe(self, headers: httpx.Headers, sent: float) -> None:
        """Raise the counts to the provider's X-ReadRateLimit-Usage."""
        value = headers.get("x-readratelimit-usage")
        if not value:
            return
        try:
            short, daily = (int(p) for p in value.split(",")[:2])
        except ValueError:
            return
        for (_limit, seconds), used, seen in zip(
            self.limits, self.used, (short, daily), strict=True
        ):
            index = math.floor(sent / seconds)
            used[index] = max(used.get(index, 0), seen)


class Baseline:
    """Syncs every connected athlete with `concurrency` athletes in flight."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.store = Store(args.db_url, args.token_key)
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="db")
        self.totals = Totals()
        self.limiter = (
            Limiter(
                args.read_limit_15min,
                args.window_seconds,
                args.read_limit_daily,
                args.day_seconds,
            )
            if args.read_limit_15min
            else None
        )

    async def _db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.db, fn, *args)

    async def _get(
        self, client: httpx.AsyncClient, token: str, path: str, params: dict[str, Any]
    ) -> Any:
        while True:
            if self.limiter is not None:
                self.totals.rate_wait_seconds += await self.limiter.admit()
            self.totals.api_calls += 1
            sent = time.time()
            response = await client.get(
                f"/api/v3{path}", params=params, headers={"Authorization": f"Bearer {token}"}
            )
            if self.limiter is not None:
                self.limiter.observe(response.headers, sent)
            if response.status_code == 429 and self.limiter is not None:
                self.totals.responses_429 += 1
                continue  # the headers marked the window spent: admit() waits for the reset
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status_code}")
            return response.json()

    async def sync(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, athlete: int) -> None:
        """One athlete's full or incremental sync."""
        async with sem:
            try:
                await self._sync(client, athlete)
                self.totals.succeeded += 1
            except Exception as exc:  # counted and reported, never hides other athletes
                self.totals.failed += 1
                if len(self.totals.errors) < 20:
                    self.totals.errors.append(f"{athlete}: {type(exc).__name__}: {exc}")

    async def _sync(self, client: httpx.AsyncClient, athlete: int) -> None:
        token = await self._db(self.store.access_token, athlete)
        now = dt.datetime.now(dt.UTC)
        if self.args.mode == "full":
            before: int | None = None
            while True:
                params: dict[str, Any] = {"page": 1, "per_page": PER_PAGE}
                if before is not None:
                    params["before"] = before
                items = await self._get(client, token, "/athlete/activities", params)
                if items:
                    await self._db(self.store.write_page, items, now)
                    self.totals.activities_written += len(items)
                    before = min(int(start_date(d["start_date"]).timestamp()) for d in items)
                if len(items) < PER_PAGE:
                    break
            self.totals.deleted += await self._db(self.store.delete_gone, athlete, now)
            await self._db(self.store.succeeded, athlete, True)
            return
        after = await self._db(self.store.newest_start, athlete)
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            params = {"after": after, "page": page, "per_page": PER_PAGE}
            items = await self._get(client, token, "/athlete/activities", params)
            if items:
                await self._db(self.store.write_page, items, now)
                self.totals.activities_written += len(items)
                found.extend(items)
            if len(items) < PER_PAGE:
                break
            page += 1
        wanted = sorted(
            (d for d in found if not d.get("trainer") and not d.get("manual")),
            key=lambda d: d["start_date"],
            reverse=True,
        )[: self.args.streams_per_sync]
        for d in wanted:
            streams = await self._get(
                client,
                token,
                f"/activities/{int(d['id'])}/streams",
                {"keys": STREAM_KEYS, "key_by_type": "true"},
            )
            await self._db(self.store.write_streams, athlete, int(d["id"]), streams)
            self.totals.streams_written += 1
        await self._db(self.store.succeeded, athlete, False)

    async def run(self) -> Totals:
        """Sync everyone."""
        athletes = self.args.athlete or await self._db(self.store.athletes)
        self.totals.athletes = len(athletes)
        sem = asyncio.Semaphore(self.args.concurrency)
        limits = httpx.Limits(
            max_connections=self.args.concurrency, max_keepalive_connections=self.args.concurrency
        )
        async with httpx.AsyncClient(
            base_url=self.args.base_url, timeout=httpx.Timeout(30.0, connect=10.0), limits=limits
        ) as client:
            await asyncio.gather(*(self.sync(client, sem, a) for a in athletes))
        self.db.shutdown()
        return self.totals


def main() -> None:
    """Parse arguments, sync, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db-url", required=True)
    parser.add_argument(
        "--token-key",
        default=os.environ.get("SYNC_TOKEN_KEY", ""),
        help="Token encryption key(s); default $SYNC_TOKEN_KEY.",
    )
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--mode", choices=["incremental", "full"], default="incremental")
    parser.add_argument("--concurrency", type=int, default=12)
    parser.add_argument(
        "--athlete", type=int, action="append", help="only these athletes (repeatable)"
    )
    parser.add_argument("--streams-per-sync", type=int, default=10)
    parser.add_argument(
        "--read-limit-15min", type=int, default=0, help="enable the limiter (0: off)"
    )
    parser.add_argument("--read-limit-daily", type=int, default=1000)
    parser.add_argument("--window-seconds", type=float, default=900.0)
    parser.add_argument("--day-seconds", type=float, default=86400.0)
    args = parser.parse_args()
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_SELF)
    totals = asyncio.run(Baseline(args).run())
    finished = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    work_cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    print(
        json.dumps(
            {
                "started_at": started,
                "finished_at": finished,
                "seconds": round(finished - started, 3),
                "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
                "cpu_seconds_work": round(work_cpu, 3),
                "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
                **{k: v for k, v in totals.__dict__.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
