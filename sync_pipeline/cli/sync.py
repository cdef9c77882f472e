"""`sync-pipeline sync`: queue syncs, or run them in this process with --direct."""

from __future__ import annotations

import click
import dagster as dg

from sync_pipeline.cli import _direct, _launch, context
from sync_pipeline.core import priorities
from sync_pipeline.sources import PLATFORMS, defs_of


@click.group()
def sync() -> None:
    """Queue syncs in Dagster's run queue, or run them in-process with --direct."""


@sync.command("strava")
@click.option("--athlete", "athlete_id", type=int, help="One athlete (Strava id).")
@click.option("--all", "all_athletes", is_flag=True, help="Every connected athlete.")
@click.option("--full", is_flag=True, help="Full re-sync instead of incremental.")
@click.option("--priority", type=int, help="Run priority (default 10 for one athlete, 0 for all).")
@click.option("--direct", is_flag=True, help="Run in this process now, bypassing the queue.")
@click.option(
    "--wait",
    "wait_seconds",
    type=click.FloatRange(0),
    default=0,
    help="With --direct: if another run is syncing the athlete, wait up to SECONDS for it "
    "to finish first (default: do not wait; the command fails).",
)
@click.option(
    "--activity",
    "activity_ids",
    type=int,
    multiple=True,
    help="With --athlete: also fetch this activity in detail with its streams and match it "
    "to streets (as a push event does). Repeatable.",
)
def sync_strava(
    athlete_id: int | None,
    all_athletes: bool,
    full: bool,
    priority: int | None,
    direct: bool,
    wait_seconds: float,
    activity_ids: tuple[int, ...],
) -> None:
    """Sync one athlete (--athlete ID) or all of them (--all)."""
    from sync_pipeline.core.batching import sweep_shards
    from sync_pipeline.defs.strava.athletes import connected_athlete_ids
    from sync_pipeline.defs.strava.partitions import strava_athletes
    from sync_pipeline.defs.strava.source import STRAVA, strava_defs

    if (athlete_id is None) == (not all_athletes):
        raise click.UsageError("Give exactly one of --athlete ID or --all.")
    if activity_ids and athlete_id is None:
        raise click.UsageError("--activity needs --athlete (the activity's owner).")
    if wait_seconds and not (direct and athlete_id is not None):
        raise click.UsageError("--wait needs --direct and --athlete.")
    s = context.settings()
    strava = context.strava(s)
    if athlete_id is not None:
        known = connected_athlete_ids(strava.app_db.url)
        if athlete_id not in known:
            raise click.ClickException(
                f"Athlete {athlete_id} is not connected; see `sync-pipeline athletes list`."
            )
        prio = priorities.MANUAL if priority is None else priority
        tags = {**priorities.run_tags(prio, "strava", "cli"), "dagster/partition": str(athlete_id)}
        run_config = STRAVA.single_run_config(full=full, activity_ids=sorted(set(activity_ids)))
        with context.dagster_instance(s) as instance:
            name = strava_athletes.name or ""
            if not instance.has_dynamic_partition(name, str(athlete_id)):
                instance.add_dynamic_partitions(name, [str(athlete_id)])
            if direct:
                _direct.wait_for_lease(
                    strava.app_db, "strava", str(athlete_id), instance, wait_seconds
                )
                result = dg.materialize(
                    [strava_defs.asset],
                    partition_key=str(athlete_id),
                    resources={"strava": strava},
                    instance=instance,
                    run_config=run_config,
                    tags=tags,
                    raise_on_error=False,
                )
                _direct.report_direct(result)
                return
        _launch.queue(s, STRAVA.single_job_name, tags=tags, run_config=run_config)
        return
    n = len(connected_athlete_ids(strava.app_db.url, include_needs_reconnect=False))
    if n == 0:
        raise click.ClickException("No connected athletes; connect some with `athletes connect`.")
    prio = priorities.BATCH if priority is None else priority
    shards = sweep_shards(n)  # as the sweep schedules shard
    for shard in range(shards):
        run_config = STRAVA.sweep_run_config(shard=shard, shards=shards, full=full)
        tags = priorities.run_tags(prio, "strava", "cli")
        if direct:
            with context.dagster_instance(s) as instance:
                result = strava_defs.sweep_job.execute_in_process(
                    run_config=run_config,
                    resources={"strava": strava},
                    instance=instance,
                    tags=tags,
                    raise_on_error=False,
                )
            _direct.report_direct(result)
        else:
            _launch.queue(s, STRAVA.sweep_job_name, tags=tags, run_config=run_config)


def _platform_sync_command(platform: str) -> click.Command:
    """`sync-pipeline sync <platform> (--user ID | --all) [--priority N] [--direct]`."""

    @click.option("--user", "user_id", help="One user.")
    @click.option("--all", "all_users", is_flag=True, help="Every user connected to it.")
    @click.option("--priority", type=int, help="Run priority (default 10 for one user, 0 all).")
    @click.option("--direct", is_flag=True, help="Run in this process now, bypassing the queue.")
    @click.option(
        "--wait",
        "wait_seconds",
        type=click.FloatRange(0),
        default=0,
        help="With --direct --user: wait up to SECONDS for another run syncing the user.",
    )
    def command(
        user_id: str | None,
        all_users: bool,
        priority: int | None,
        direct: bool,
        wait_seconds: float,
    ) -> None:
        from sync_pipeline.defs.users.accounts import connected_user_ids
        from sync_pipeline.defs.users.partitions import users

        if (user_id is None) == (not all_users):
            raise click.UsageError("Give exactly one of --user ID or --all.")
        if wait_seconds and not (direct and user_id is not None):
            raise click.UsageError("--wait needs --direct and --user.")
        s = context.settings()
        client = context.platform_client(s, platform)
        connected = connected_user_ids(client.app_db.url, platform)
        if user_id is not None and user_id not in connected:
            raise click.ClickException(
                f"User {user_id!r} has no working {platform} connection; see "
                "`sync-pipeline users list`."
            )
        if not connected:
            raise click.ClickException(f"No users are connected to {platform}.")
        keys = [user_id] if user_id is not None else connected
        prio = (
            (priorities.MANUAL if user_id else priorities.BATCH) if priority is None else priority
        )
        tags = priorities.run_tags(prio, platform, "cli")
        built = defs_of(platform)
        run_config = built.source.sweep_run_config(keys=keys)
        if not direct:
            if user_id is not None:
                tags = {**tags, "dagster/partition": user_id}
                _launch.queue(s, built.source.single_job_name, tags=tags, run_config={})
            else:
                _launch.queue(s, built.source.sweep_job_name, tags=tags, run_config=run_config)
            return
        with context.dagster_instance(s) as instance:
            missing = [k for k in keys if not instance.has_dynamic_partition(users.name or "", k)]
            if missing:
                instance.add_dynamic_partitions(users.name or "", missing)
            if user_id is not None:
                _direct.wait_for_lease(client.app_db, platform, user_id, instance, wait_seconds)
            result = built.sweep_job.execute_in_process(
                run_config=run_config,
                resources={platform: client, "app_db": client.app_db},
                instance=instance,
                tags=tags,
                raise_on_error=False,
            )
        _direct.report_direct(result)

    command.__doc__ = f"Sync users' {platform} activity (--user ID or --all)."
    return click.command(platform)(command)


for _platform in PLATFORMS:
    sync.add_command(_platform_sync_command(_platform))
