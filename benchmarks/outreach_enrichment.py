"""Outreach enrichment against Hunter's limits: time taken vs the bound the limits set.

N prospects each need one e-mail-finder call; the Hunter sandbox enforces Hunter's real
limits (15 requests per second, 500 per minute, fixed windows) on wall-clock time. The lower
bound is the time a perfect client would need: each call at the earliest instant both
windows have room, from the benchmark's start. The pipeline runs `enrich_email` per prospect
from a pool of workers (as a sweep does); any 403 would mean the shared budget let a call
through that Hunter refuses.

Run: ``python benchmarks/outreach_enrichment.py --prospects 600 --workers 4``; prints one
line, `OUTREACH_ENRICHMENT ` and JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sync_pipeline.core import db
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import Campaign, Prospect
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.outreach.resources import HunterResource
from sync_pipeline.defs.outreach.sync import enrich_email
from sync_pipeline.sandbox.hunter.app import (
    Company,
    HunterConfig,
    HunterState,
    Person,
    create_app,
)
from sync_pipeline.sandbox.server import SandboxServer

KEY = "bench-key"


def lower_bound(calls: int, start: float, per_second: int, per_minute: int) -> float:
    """Seconds a perfect client needs for `calls` under aligned 1 s and 60 s windows."""
    t, done = start, 0
    while done < calls:
        minute_end = (math.floor(t / 60) + 1) * 60
        in_minute = 0
        while done < calls and in_minute < per_minute and t < minute_end:
            take = min(per_second, per_minute - in_minute, calls - done)
            done += take
            in_minute += take
            if done < calls:
                t = math.floor(t) + 1 if in_minute < per_minute else minute_end
        if done < calls and t < minute_end:
            t = minute_end
    return t - start


def main() -> None:
    """Enrich N prospects and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prospects", type=int, default=600)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    n = args.prospects
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'app.db'}"
        db.upgrade(url)
        app_db = AppDatabaseResource(url=url, token_key=generate_key())
        state = HunterState(HunterConfig(api_keys={KEY}), clock=time.time)
        people = [Person(f"P{i}", "Doe", f"p{i}@bench.test", 90) for i in range(n)]
        state.add_company(Company("Bench", "bench.test", people=people))
        with transaction(url) as s:
            s.add(
                Campaign(
                    name="bench",
                    sender="s@acme.test",
                    subject_template="x",
                    body_template="x",
                    followups=[],
                    daily_cap=50,
                    min_gap_seconds=0,
                    state="active",
                )
            )
            s.add_all(
                Prospect(
                    id=f"p{i}",
                    campaign="bench",
                    tier="cold",
                    first_name=f"P{i}",
                    last_name="Doe",
                    company="Bench",
                    domain="bench.test",
                    timezone="UTC",
                    state="new",
                )
                for i in range(n)
            )
        with SandboxServer(create_app(state)) as server:
            hunter = HunterResource(app_db=app_db, api_key=KEY, base_url=server.url)
            ctx = RunContext(owner="bench")
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            start = time.time()
            keys = [f"p{i}" for i in range(n)]
            outcomes = []
            while keys:  # parked work comes back when its wait is over (the parked sensor)
                with ThreadPoolExecutor(max_workers=args.workers) as pool:
                    done = list(pool.map(lambda k: enrich_email(hunter, k, ctx), keys))
                outcomes += [o for o in done if o.status != "parked"]
                parked = [o for o in done if o.status == "parked"]
                keys = [o.key for o in parked]
                if parked:
                    due = min(o.retry_at or 0.0 for o in parked)
                    threading.Event().wait(max(0.0, due - time.time()))
            elapsed = time.time() - start
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            hunter.close()
        bound = lower_bound(n, start, 15, 500)
        statuses: dict[str, int] = {}
        for o in outcomes:
            statuses[o.status] = statuses.get(o.status, 0) + 1
        cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
        figures = {
            "prospects": n,
            "workers": args.workers,
            "statuses": statuses,
            "seconds": round(elapsed, 2),
            "lower_bound_seconds": round(bound, 2),
            "ratio_to_bound": round(elapsed / bound, 3) if bound else None,
            "hunter_rejected": state.rejected,
            "hunter_requests": state.requests,
            "process_cpu_ms_per_prospect_incl_sandbox": round(1000 * cpu / n, 2),
        }
        db.dispose_engines()
    print("OUTREACH_ENRICHMENT " + json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
