"""Platforms are independent: one failing leaves the user's others green, and the score
reflects what did sync."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from sync_pipeline.core.daily import DailyActivityClient
from sync_pipeline.defs.instagram.source import instagram_defs
from sync_pipeline.defs.users.partitions import users
from sync_pipeline.defs.users.scores import CONSISTENCY, compute_user
from sync_pipeline.defs.x.source import x_defs
from sync_pipeline_tests.platforms import Box, join


def sweep(
    job: dg.JobDefinition, platform: str, client: DailyActivityClient, instance: dg.DagsterInstance
) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(
        run_config={"ops": {f"{platform}_sweep": {"config": {"keys": ["ana"]}}}},
        resources={platform: client},
        instance=instance,
    )


def test_one_platform_failing_leaves_the_others_green(
    boxes: Callable[..., Box],
    clients: Callable[..., DailyActivityClient],
    instance: dg.DagsterInstance,
) -> None:
    x_box, ig_box = boxes("x"), boxes("instagram")
    x, ig = clients(x_box), clients(ig_box)
    join(x, "ana", x_box.account(count=20, history_days=30), tz="Europe/Berlin")
    join(ig, "ana", ig_box.account(count=15, history_days=30), tz="Europe/Berlin")
    instance.add_dynamic_partitions(users.name or "", ["ana"])
    # X is down for longer than the in-process retries last.
    x_box.control("/faults", {"kind": "5xx", "count": 1000, "path_contains": "/tweets"})

    x_result = sweep(x_defs.sweep_job, "x", x, instance)
    ig_result = sweep(instagram_defs.sweep_job, "instagram", ig, instance)

    # Batch runs succeed; the failure is the user's X partition, handed over for a retry run.
    assert x_result.success and ig_result.success
    x_state = x.app_db.checkpoints("x").get("ana")
    assert x_state is not None and x_state.status == "failed" and x_state.pending_mode
    ig_state = ig.app_db.checkpoints("instagram").get("ana")
    assert ig_state is not None and ig_state.status == "succeeded"
    materialized = instance.get_materialized_partitions(dg.AssetKey("instagram_daily_activity"))
    assert materialized == {"ana"}
    assert not instance.get_materialized_partitions(dg.AssetKey("x_daily_activity"))
    assert instance.get_materialized_partitions(CONSISTENCY) == {"ana"}
    found = compute_user(ig.app_db.url, "ana")
    assert found is not None
    owner, _ = found
    assert set(owner.active_days) == {"instagram"}
