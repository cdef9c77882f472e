"""The consistency score of each user, for the owner and for the public."""

from collections.abc import Iterator

import dagster as dg

from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.users.partitions import users
from sync_pipeline.defs.users.scores import (
    CONSISTENCY,
    CONSISTENCY_PUBLIC,
    compute_user,
    refresh_scores,
)
from sync_pipeline.sources import PLATFORMS, SOURCES


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            CONSISTENCY,
            deps=[SOURCES[p].asset_key for p in PLATFORMS],
            description="Active days, current and longest streak, 7/30-day rates over every "
            "platform (recomputed in the run that syncs any of the user's platforms).",
            group_name="consistency",
            kinds={"pandas"},
        ),
        dg.AssetSpec(
            CONSISTENCY_PUBLIC,
            deps=[CONSISTENCY],
            description="The same figures without the platforms the user marked private.",
            group_name="consistency",
            kinds={"pandas"},
        ),
    ],
    partitions_def=users,
)
def user_consistency(
    context: dg.AssetExecutionContext, app_db: AppDatabaseResource
) -> Iterator[dg.MaterializeResult]:
    """Recompute one user's consistency scores from their synced daily activity."""
    app_db.check()
    key = context.partition_key
    if compute_user(app_db.url, key) is None:
        raise dg.Failure(f"User {key!r} does not exist; remove the partition.", allow_retries=False)
    for event in refresh_scores(app_db.url, [key]):
        yield dg.MaterializeResult(asset_key=event.asset_key, metadata=dict(event.metadata))


defs = dg.Definitions(assets=[user_consistency])
