"""Run retention keeps partition status and the runs behind current failures."""

import datetime as dt

import dagster as dg
import pytest

from sync_pipeline.core.cleanup import cleanup_runs, parse_age
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import SyncState

parts = dg.StaticPartitionsDefinition(["a", "b", "c"])


class Cfg(dg.Config):
    fail: bool = False


@dg.asset(partitions_def=parts)
def thing(context: dg.AssetExecutionContext, config: Cfg) -> dg.MaterializeResult:
    """A partitioned asset that fails on request."""
    if config.fail:
        raise dg.Failure("asked to fail")
    return dg.MaterializeResult(metadata={"key": context.partition_key})


def run(instance: dg.DagsterInstance, key: str, *, fail: bool = False) -> str:
    result = dg.materialize(
        [thing],
        instance=instance,
        partition_key=key,
        run_config={"ops": {"thing": {"config": {"fail": fail}}}},
        raise_on_error=False,
    )
    return result.run_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", dt.timedelta(days=7)),
        ("12h", dt.timedelta(hours=12)),
        (" 30m", dt.timedelta(minutes=30)),
    ],
)
def test_parse_age(text: str, expected: dt.timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["7", "d", "7w", "-1d", ""])
def test_parse_age_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="7d, 12h"):
        parse_age(text)


@pytest.mark.parametrize("dry_run", [True, False])
def test_cleanup_keeps_latest_materializations_and_failure_runs(db_url: str, dry_run: bool) -> None:
    with dg.instance_for_test() as instance:
        a_old = run(instance, "a")
        a_new = run(instance, "a")
        b_ok = run(instance, "b")
        b_failed = run(instance, "b", fail=True)  # explains b's current failure
        c_failed_old = run(instance, "c", fail=True)  # c later succeeded: nothing to explain
        c_ok = run(instance, "c")
        with transaction(db_url) as s:
            s.add(SyncState(source="t", partition_key="b", status="failed", last_run_id=b_failed))
            s.add(SyncState(source="t", partition_key="c", status="succeeded", last_run_id=c_ok))
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)

        report = cleanup_runs(
            instance, db_url, older_than=dt.timedelta(days=7), dry_run=dry_run, now=later
        )

        assert sorted(report.deleted) == sorted([a_old, c_failed_old])
        assert report.examined == 6
        assert report.kept_latest_materialization == 3  # a_new, b_ok, c_ok
        assert report.kept_explains_failure == 1
        remaining = {r.run_id for r in instance.get_runs()}
        kept = {a_new, b_ok, b_failed, c_ok}
        assert remaining == (kept | {a_old, c_failed_old} if dry_run else kept)
        assert instance.get_materialized_partitions(thing.key) == {"a", "b", "c"}


def test_cleanup_keeps_recent_runs(db_url: str) -> None:
    with dg.instance_for_test() as instance:
        first = run(instance, "a")
        run(instance, "a")
        report = cleanup_runs(instance, db_url, older_than=dt.timedelta(days=7))
        assert report.examined == 0
        assert instance.get_run_by_id(first) is not None
