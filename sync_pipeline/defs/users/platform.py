"""What the consistency-tracker platforms share as sources: the `users` partition set, the
daily-activity sync, the 6-hourly sweep and the consistency scores recomputed after a sync.

Each platform folder declares itself with `platform_source(name, title)`; the builder in
`core/source.py` makes its asset `<platform>_daily_activity`, jobs, schedule and check.
"""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field

from sync_pipeline.core.daily import DEFAULT_TRAILING_DAYS, DailyActivityClient, sync_daily
from sync_pipeline.core.health import needs_reconnect_connections
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.core.settings import Env
from sync_pipeline.core.source import PartitionSet, SweepSchedule, SyncSource
from sync_pipeline.core.sync_runner import RunContext, SyncOutcome
from sync_pipeline.defs.users.accounts import connected_user_ids
from sync_pipeline.defs.users.partitions import users
from sync_pipeline.defs.users.scores import CONSISTENCY, CONSISTENCY_PUBLIC, refresh_scores

USERS = PartitionSet(
    users,
    members=connected_user_ids,
    also_forget=((CONSISTENCY, "consistency"), (CONSISTENCY_PUBLIC, "consistency")),
)


class DailyOptions(dg.Config):
    """Options of a platform sync (single user or sweep)."""

    trailing_days: int = Field(
        default=DEFAULT_TRAILING_DAYS, ge=1, le=366, description="Days re-synced before today."
    )


def _sync(
    client: DailyActivityClient, key: str, ctx: RunContext, options: DailyOptions
) -> SyncOutcome:
    return sync_daily(client, key, ctx, trailing_days=options.trailing_days)


def _scores(client: DailyActivityClient, keys: list[str]) -> Iterator[dg.AssetMaterialization]:
    return refresh_scores(client.app_db.url, keys)


def platform_source(name: str, title: str, client: type[DailyActivityClient]) -> SyncSource:
    """The declaration of one consistency platform (`name` is also its resource key); its
    settings are `<NAME>_CLIENT_ID`, `_CLIENT_SECRET`, `_BASE_URL` and `_OAUTH_URL`."""
    prefix = name.upper()

    def resource(app_db: AppDatabaseResource, env: Env) -> DailyActivityClient:
        return client(
            app_db=app_db,
            client_id=env(f"{prefix}_CLIENT_ID"),
            client_secret=env(f"{prefix}_CLIENT_SECRET"),
            base_url=env(f"{prefix}_BASE_URL", default=client.model_fields["base_url"].default),
            oauth_base_url=env(f"{prefix}_OAUTH_URL", default=""),
        )

    return SyncSource(
        name=name,
        title=title,
        entity="daily_activity",
        noun="user",
        description=f"Items per local day of one user on {title} (trailing days re-synced).",
        group="consistency",
        kinds=frozenset({name}),
        partitions=USERS,
        sync=_sync,
        sweep_keys=lambda db_url: connected_user_ids(db_url, name),
        needs_reconnect=lambda db_url: needs_reconnect_connections(db_url, name),
        options=DailyOptions,
        schedules=(
            SweepSchedule(
                f"{name}_sync_all",
                "0 */6 * * *",
                f"Every 6 hours: sync every user connected to {title}, in batches.",
            ),
        ),
        after_sync=_scores,
        resource=resource,
    )
