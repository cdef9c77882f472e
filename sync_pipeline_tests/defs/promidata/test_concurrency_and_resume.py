"""Limits across concurrent runs, and resuming after a SIGKILL without redoing done work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from typing import Any

from sqlalchemy import func, select

from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import ConcurrencySlot, PromidataFamily, PromidataImage
from sync_pipeline.core.sync_runner import RunContext
from sync_pipeline.defs.promidata.sync import sync_products, sync_supplier_direct
from sync_pipeline_tests.defs.promidata.conftest import Promidata
from sync_pipeline_tests.serving import wait_until


def test_two_runs_together_keep_3_families_and_10_images_in_flight(promidata: Promidata) -> None:
    promidata.fault("slow", ".json", count=1000, delay=0.3)
    promidata.fault("slow", "/Images/", count=1000, delay=0.3)
    results: dict[str, dict[str, Any]] = {}

    def run(code: str) -> None:
        results[code] = promidata.sync(code, owner=f"run-{code}")

    threads = [threading.Thread(target=run, args=(code,)) for code in ("A23", "A360")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r["status"] == "succeeded" for r in results.values()), results
    stats = promidata.requests()
    assert stats["product"] == 10
    # Each run has 3 family threads and 10 image threads; the shared slots cap both runs.
    assert stats["peak:product"] == 3
    assert stats["peak:image"] == 10
    with transaction(promidata.db_url) as s:
        assert s.scalar(select(func.count()).select_from(ConcurrencySlot)) == 0


CHILD = textwrap.dedent(
    """
    import sys
    from sync_pipeline.core.crypto import generate_key
    from sync_pipeline.core.resources import AppDatabaseResource
    from sync_pipeline.core.sync_runner import RunContext
    from sync_pipeline.defs.promidata.resources import PromidataResource
    from sync_pipeline.defs.promidata.sync import Limits, sync_products

    db_url, base_url = sys.argv[1], sys.argv[2]
    app_db = AppDatabaseResource(url=db_url, token_key=generate_key())
    api = PromidataResource(app_db=app_db, base_url=base_url, timeout_seconds=10.0)
    sync_products(api, db_url, "BIG", RunContext(owner="doomed-run"), limits=Limits(families=2))
    """
)


def synced(db_url: str) -> int:
    """Families of BIG stored so far."""
    with transaction(db_url) as s:
        return int(
            s.scalar(
                select(func.count()).where(
                    PromidataFamily.supplier == "BIG",
                    PromidataFamily.synced_hash == PromidataFamily.listed_hash,
                )
            )
            or 0
        )


def test_a_sigkilled_sync_resumes_without_refetching_done_families(promidata: Promidata) -> None:
    from sync_pipeline.defs.promidata.sync import add_supplier, sync_catalog

    promidata.control("/suppliers", {"code": "BIG", "families": 30})
    add_supplier(promidata.db_url, "BIG")
    assert sync_catalog(promidata.api, promidata.db_url, "BIG", RunContext(owner="c")).status == (
        "succeeded"
    )
    promidata.fault("slow", "/BIG/", count=1000, delay=0.15)
    promidata.requests()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, promidata.db_url, promidata.url],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )

    def progressed() -> bool:
        if synced(promidata.db_url) >= 6:
            return True
        assert child.poll() is None, "the child finished before it could be killed"
        return False

    wait_until(progressed, 60, what="six products synced by the child")
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    done = synced(promidata.db_url)
    assert 6 <= done < 30
    promidata.state.faults.clear()
    # The killed run's last requests drain.
    wait_until(lambda: not promidata.state.in_flight("product"), 60, what="requests drained")
    promidata.requests()
    # The dead run's lease and slots are taken over because its owner is known to be dead.
    ctx = RunContext(owner="retry-run", owner_is_dead=lambda owner: owner == "doomed-run")
    outcome = sync_products(promidata.api, promidata.db_url, "BIG", ctx)
    assert outcome.status == "succeeded", outcome.error
    assert outcome.resumed
    assert promidata.requests()["product:BIG"] == 30 - done
    assert synced(promidata.db_url) == 30


def test_direct_mode_returns_the_seed_result(promidata: Promidata) -> None:
    result = sync_supplier_direct(
        promidata.api, promidata.storage, promidata.db_url, "D170", RunContext(owner="direct")
    )
    assert {"productsProcessed", "errors", "skipped", "duration"} <= set(result)
    assert result["productsProcessed"] == 3 and result["duration"].endswith("s")
    with transaction(promidata.db_url) as s:
        assert s.scalar(select(func.count()).select_from(PromidataImage)) == len(
            promidata.expected("D170")["images"]
        )
