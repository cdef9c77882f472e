"""Status figures are exact against a known history of runs and sync states."""

import datetime as dt
import time

import dagster as dg

from sync_pipeline.core.budget import RateBudget, Window
from sync_pipeline.core.db import transaction
from sync_pipeline.core.health import current_budget, source_health
from sync_pipeline.core.models import SyncState
from sync_pipeline.core.priorities import SOURCE_TAG


class Cfg(dg.Config):
    fail: bool = False


@dg.asset
def probe(config: Cfg) -> None:
    """Succeeds or fails on request."""
    if config.fail:
        raise dg.Failure("asked to fail")


def run(instance: dg.DagsterInstance, source: str, *, fail: bool = False) -> None:
    dg.materialize(
        [probe],
        instance=instance,
        tags={SOURCE_TAG: source},
        run_config={"ops": {"probe": {"config": {"fail": fail}}}},
        raise_on_error=False,
    )


def test_status_figures_match_a_known_history(db_url: str) -> None:
    with dg.instance_for_test() as instance:
        for _ in range(3):
            run(instance, "strava")
        run(instance, "strava", fail=True)
        run(instance, "github")  # another source: not counted
        with transaction(db_url) as s:
            for key, status in enumerate(["succeeded"] * 5 + ["failed"] * 2 + ["dead", "parked"]):
                s.add(SyncState(source="strava", partition_key=str(key), status=status))
            s.add(SyncState(source="github", partition_key="ana", status="dead"))
        budget = RateBudget(db_url)
        now = time.time()
        for _ in range(7):
            budget.try_acquire([Window("strava:1:read:15min", 900, 100)], now=now)
        for user, used in (("1", 3), ("2", 9)):
            for _ in range(used):
                budget.try_acquire([Window(f"github:core:user:{user}", 3600, 5000)], now=now)

        health = source_health(
            instance, db_url, "strava", needs_reconnect=2, budget=current_budget(db_url, "strava")
        )
        github = current_budget(db_url, "github", now=now)

    # (Queued runs need a code location; the daemon tests cover the queue itself.)
    assert (health.queued, health.running, health.oldest_queued_seconds) == (0, 0, None)
    assert (health.succeeded_24h, health.failed_24h) == (3, 1)
    assert health.partitions_by_status == {"succeeded": 5, "failed": 2, "dead": 1, "parked": 1}
    assert (health.dead_letters, health.needs_reconnect) == (1, 2)
    [row] = health.budget
    assert (row["bucket"], row["used"], row["left"]) == ("1:read:15min", 7, 93)
    # Per-user buckets fold into the tightest user.
    [folded] = github
    assert (folded.bucket, folded.used) == ("github:core:per-user", 9)
    assert dt.datetime.fromisoformat(row["resets_at"]).timestamp() > now
