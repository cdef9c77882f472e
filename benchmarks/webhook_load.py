"""Webhook receiver under load: acknowledgement latency and events lost.

Starts `sync-pipeline webhooks serve` (uvicorn, one process) on a fresh SQLite app database,
then a load generator in a second process posts distinct Strava push events at a fixed rate
(open loop: requests are sent on schedule whether or not earlier ones were answered) for the
given duration. Afterwards it counts the events in the inbox: every acknowledged event must
be stored exactly once.

    .venv/bin/python benchmarks/webhook_load.py --rates 100 500 --seconds 30

Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import func, select

from sync_pipeline.core import db
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import WebhookEvent

BIN = Path(sys.executable).parent
VERIFY_TOKEN = "bench-verify-token"
REQUEST_TIMEOUT = 30.0


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, deadline: float) -> None:
    """Poll /healthz until the receiver answers (or fail at the deadline)."""
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling a starting server, bounded by the deadline
    raise RuntimeError("receiver did not start")


async def _load(
    url: str, rate: int, seconds: float, offset: int, connections: int
) -> dict[str, Any]:
    """Open-loop load: request i is due at start + i/rate; latency counts from when it was due
    (so waiting for a free connection is counted, not hidden). Raw keep-alive HTTP/1.1 over
    asyncio streams: the generator must cost far less than the receiver it measures."""
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    total = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    due_queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    def request(i: int) -> bytes:
        body = json.dumps(
            {
                "object_type": "activity",
                "object_id": offset + i,
                "aspect_type": "create",
                "owner_id": 1000 + i % 500,
                "subscription_id": 1,
                "event_time": 1_800_000_000 + i,
                "updates": {},
            }
        ).encode()
        head = (
            f"POST /webhooks/strava HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def worker() -> None:
        nonlocal errors
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while (item := await due_queue.get()) is not None:
            i, due = item
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request(i))
                status_line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
                status = int(status_line.split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
            except (OSError, ValueError, IndexError, TimeoutError, asyncio.IncompleteReadError):
                errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            latencies.append(time.perf_counter() - due)
            statuses[status] = statuses.get(status, 0) + 1
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # open-loop pacing of the sender
        due_queue.put_nowait((i, due))
    for _ in workers:
        due_queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "rate": rate,
        "sent": total,
        "acked_200": statuses.get(200, 0),
        "statuses": statuses,
        "errors": errors,
        "achieved_rate": round(total / elapsed, 1),
        "p50_ms": round(pct(0.50), 2) if latencies else None,
        "p99_ms": round(pct(0.99), 2) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
    }


def _generator(
    url: str, rate: int, seconds: float, offset: int, connections: int, out: Any
) -> None:
    load = _load(url, rate, seconds, offset, connections)
    try:
        import uvloop
    except ImportError:  # plain asyncio is fine, only slower
        out.put(asyncio.run(load))
    else:
        out.put(uvloop.run(load))


def stored(db_url: str, lo: int, hi: int) -> tuple[int, int]:
    """(rows, distinct object ids) of the inbox for object ids in [lo, hi)."""
    with transaction(db_url) as s:
        rows = s.scalar(
            select(func.count()).where(WebhookEvent.object_id >= lo, WebhookEvent.object_id < hi)
        )
        distinct = s.scalar(
            select(func.count(func.distinct(WebhookEvent.object_id))).where(
                WebhookEvent.object_id >= lo, WebhookEvent.object_id < hi
            )
        )
    return int(rows or 0), int(distinct or 0)


def main() -> None:
    """Run the load at each rate and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections")
    parser.add_argument("--workers", type=int, default=1, help="receiver worker processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/app.db"
        db.upgrade(db_url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "SYNC_DATABASE_URL": db_url,
            "SYNC_TOKEN_KEY": generate_key(),
            "STRAVA_WEBHOOK_VERIFY_TOKEN": VERIFY_TOKEN,
            "SYNC_HOME": tmp,
        }
        receiver = subprocess.Popen(
            [
                str(BIN / "sync-pipeline"),
                "webhooks",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--workers",
                str(args.workers),
            ],
            cwd=tmp,
            env=env,
            start_new_session=True,
        )
        results = []
        try:
            wait_healthy(url, time.monotonic() + 30)
            for n, rate in enumerate(args.rates):
                offset = (n + 1) * 10_000_000
                queue: Any = mp.get_context("spawn").Queue()
                proc = mp.get_context("spawn").Process(
                    target=_generator,
                    args=(url, rate, args.seconds, offset, args.connections, queue),
                )
                proc.start()
                # every request ends (answer, error or REQUEST_TIMEOUT) after the last is due
                figures = queue.get(timeout=args.seconds + REQUEST_TIMEOUT * 4 + 60)
                proc.join()
                rows, distinct = stored(db_url, offset, offset + figures["sent"])
                figures["stored_rows"] = rows
                figures["lost"] = figures["acked_200"] - distinct
                figures["duplicates"] = rows - distinct
                results.append(figures)
        finally:
            os.killpg(receiver.pid, signal.SIGTERM)
            receiver.wait(timeout=30)
    print(
        f"{'rate/s':>7} {'sent':>6} {'acked':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'achieved/s':>10} {'lost':>5} {'dup':>4}"
    )
    for r in results:
        print(
            f"{r['rate']:>7} {r['sent']:>6} {r['acked_200']:>6} {r['p50_ms']:>7} "
            f"{r['p99_ms']:>7} {r['max_ms']:>7} {r['achieved_rate']:>10} {r['lost']:>5} "
            f"{r['duplicates']:>4}"
        )
    print(json.dumps({"benchmark": "webhook_load", "seconds": args.seconds, "results": results}))


if __name__ == "__main__":
    main()
