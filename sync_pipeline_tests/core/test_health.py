"""Status figures are exact against a known history of runs and sync states."""

import datetime as dt
import time

import dagster as dg
import pytest

from sync_pipeline.core.budget import RateBudget, Window
from sync_pipeline.core.checkpoints import Checkpoints
from sync_pipeline.core.db import transaction
from sync_pipeline.core.health import (
    current_budget,
    dead_letter_check,
    reason_summary,
    source_health,
)
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


STRAVA_503 = (
    'Strava list activities: HTTP 503 {"message": "Service Unavailable", "errors": '
    '[{"resource": "Server", "field": "", "code": "unavailable"}]}'
)


@pytest.mark.parametrize(
    ("message", "summary"),
    [
        (STRAVA_503, "Strava list activities: HTTP 503 Service Unavailable"),
        (STRAVA_503[:110], "Strava list activities: HTTP 503 Service Unavailable"),  # body cut
        ('GET /x: HTTP 500 {"oops": 1}', "GET /x: HTTP 500 (error body)"),
        ("token revoked", "token revoked"),
        ("  spread\n over  lines ", "spread over lines"),
        ("word " * 40, ("word " * 31).strip() + " …"),
        (None, ""),
    ],
    ids=["json-body", "cut-json-body", "json-without-message", "plain", "spaces", "long", "none"],
)
def test_reason_summary_reads_as_one_line(message: str | None, summary: str) -> None:
    assert reason_summary(message, 160) == summary


def test_dead_letter_check_names_the_newest_reason_in_its_metadata(db_url: str) -> None:
    now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    with transaction(db_url) as s:
        for key, error, age in (("1001", STRAVA_503, 2), ("1002", "token revoked", 1)):
            s.add(
                SyncState(
                    source="strava",
                    partition_key=key,
                    status="dead",
                    last_error=error,
                    last_error_class="transient" if key == "1001" else "needs_reconnect",
                    last_error_at=now - dt.timedelta(hours=age),
                    consecutive_failures=4,
                    last_run_id=f"run-of-{key}",
                )
            )
    states = Checkpoints(db_url, "strava").dead_letters()

    check = dead_letter_check(dg.AssetKey("strava_activities"), "no_dead_letters", states)
    empty = dead_letter_check(dg.AssetKey("strava_activities"), "no_dead_letters", [])

    assert not check.passed
    md = {k: getattr(v, "value", v) for k, v in check.metadata.items()}
    assert (md["dead_letters"], md["newest_partition"], md["newest_error_class"]) == (
        2,
        "1002",
        "needs_reconnect",
    )
    assert md["newest_reason"] == "token revoked"
    table = str(md["list"]).splitlines()
    assert table[0] == "| partition | error | attempts | last failure | reason | run |"
    assert table[3].startswith("| 1001 | transient | 4 | ")
    assert table[3].endswith(
        "| Strava list activities: HTTP 503 Service Unavailable | [run-of-1](/runs/run-of-1001) |"
    )
    assert check.description == (
        "2 partition(s) failed for good, newest 1002: token revoked. "
        "Redrive with `sync-pipeline dead-letters redrive`."
    )
    assert empty.passed and empty.description is None
    assert {k: getattr(v, "value", v) for k, v in empty.metadata.items()} == {
        "dead_letters": 0,
        "list": "none",
    }
