"""The users partition set follows the app database; new users get first syncs."""

from collections import defaultdict

import dagster as dg
from sqlalchemy import select

from sync_pipeline.core import batching, priorities
from sync_pipeline.core.dagster_events import forget_partitions
from sync_pipeline.core.db import transaction
from sync_pipeline.core.models import PlatformConnection
from sync_pipeline.core.resources import AppDatabaseResource
from sync_pipeline.defs.github.assets import github_sweep_job, github_user_sync
from sync_pipeline.defs.instagram.assets import instagram_sweep_job, instagram_user_sync
from sync_pipeline.defs.users.accounts import PLATFORMS, connected_user_ids
from sync_pipeline.defs.users.partitions import users
from sync_pipeline.defs.users.scores import CONSISTENCY, CONSISTENCY_PUBLIC
from sync_pipeline.defs.x.assets import x_sweep_job, x_user_sync
from sync_pipeline.defs.youtube.assets import youtube_sweep_job, youtube_user_sync


@dg.sensor(
    jobs=[
        github_user_sync,
        youtube_user_sync,
        x_user_sync,
        instagram_user_sync,
        github_sweep_job,
        youtube_sweep_job,
        x_sweep_job,
        instagram_sweep_job,
    ],
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def users_sensor(
    context: dg.SensorEvaluationContext, app_db: AppDatabaseResource
) -> dg.SensorResult | dg.SkipReason:
    """Keeps `users` equal to users with a connection; new users get a first sync per platform."""
    wanted = set(connected_user_ids(app_db.url))
    existing = set(context.instance.get_dynamic_partitions(users.name or ""))
    added, removed = sorted(wanted - existing), sorted(existing - wanted)
    if not added and not removed:
        return dg.SkipReason(f"{len(existing)} users, none connected or disconnected")
    for platform in PLATFORMS:
        if removed:
            forget_partitions(
                context.instance, dg.AssetKey(f"{platform}_daily_activity"), platform, removed
            )
    if removed:
        for key in (CONSISTENCY, CONSISTENCY_PUBLIC):
            forget_partitions(context.instance, key, "consistency", removed)
    with transaction(app_db.url) as s:
        connections = s.execute(
            select(PlatformConnection.user_id, PlatformConnection.platform).where(
                PlatformConnection.user_id.in_(added), PlatformConnection.state == "connected"
            )
        ).all()
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(users.build_add_request(added))
    if removed:
        requests.append(users.build_delete_request(removed))
    new_users: dict[str, list[str]] = defaultdict(list)
    for user_id, platform in sorted(connections):
        new_users[platform].append(user_id)
    return dg.SensorResult(
        dynamic_partitions_requests=requests,
        run_requests=[
            req
            for platform, user_ids in sorted(new_users.items())
            for req in first_sync_requests(platform, user_ids)
        ],
    )


def first_sync_requests(platform: str, user_ids: list[str]) -> list[dg.RunRequest]:
    """A single-user run per new user of `platform`, or its sweep runs when many join at once."""
    if len(user_ids) <= batching.SINGLE_FIRST_SYNC_MAX:
        return [
            dg.RunRequest(
                job_name=f"{platform}_user_sync",
                partition_key=user_id,
                run_key=f"first-sync-{platform}-{user_id}",
                tags=priorities.run_tags(priorities.NEW_USER, platform, "new_user"),
            )
            for user_id in user_ids
        ]
    # Each user's outcome still lands on its own partition; failures go to the retry sensor.
    return [
        dg.RunRequest(
            job_name=f"{platform}_sweep_job",
            run_key=batching.batch_run_key(f"first-sync-batch-{platform}", chunk),
            run_config={"ops": {f"{platform}_sweep": {"config": {"users": chunk}}}},
            tags=priorities.run_tags(priorities.NEW_USER, platform, "new_users", lane_name="batch"),
        )
        for chunk in batching.chunked(user_ids, batching.SWEEP_BATCH)
    ]
