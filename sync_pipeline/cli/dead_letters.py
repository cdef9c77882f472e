"""`sync-pipeline dead-letters`: syncs that failed for good, and their redrive."""

from __future__ import annotations

import json

import click

from sync_pipeline.cli import _launch, context
from sync_pipeline.cli.context import SOURCES
from sync_pipeline.core import priorities
from sync_pipeline.sources import source as source_named


@click.group("dead-letters")
def dead_letters() -> None:
    """Syncs that failed for good (permanent error or retries exhausted), and their redrive."""


@dead_letters.command("list")
@click.option("--source", type=click.Choice(SOURCES), help="Only this source (default: all).")
@click.option("--json", "as_json", is_flag=True)
def dead_letters_list(source: str | None, as_json: bool) -> None:
    """List dead letters, newest failure first."""
    from sync_pipeline.core.health import dead_letter_rows, reason_summary

    app_db = context.app_db(context.settings())
    rows = [
        row
        for name in ([source] if source else SOURCES)
        for row in dead_letter_rows(app_db.checkpoints(name).dead_letters())
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no dead letters")
        return
    for r in rows:
        click.echo(
            f"{r['source']}/{r['partition']}: {r['error_class']} after {r['attempts']} attempt(s), "
            f"last {r['last_failure_at']} (run {r['run_id']})\n"
            f"    {reason_summary(r['message'], 300)}"
        )


@dead_letters.command("redrive")
@click.option("--source", type=click.Choice(SOURCES), default="strava", show_default=True)
@click.option("--partition", help="One partition (athlete id or user id).")
@click.option("--all", "redrive_all", is_flag=True, help="Every dead letter of the source.")
def dead_letters_redrive(source: str, partition: str | None, redrive_all: bool) -> None:
    """Re-queue dead letters at manual priority; they clear when the sync succeeds."""
    if (partition is None) == (not redrive_all):
        raise click.UsageError("Give exactly one of --partition P or --all.")
    s = context.settings()
    dead = context.app_db(s).checkpoints(source).dead_letters()
    keys = [st.partition_key for st in dead]
    if partition is not None:
        if partition not in keys:
            raise click.ClickException(
                f"{source}/{partition} is not a dead letter; see `sync-pipeline dead-letters list`."
            )
        keys = [partition]
    if not keys:
        click.echo("no dead letters")
        return
    tags = priorities.run_tags(priorities.MANUAL, source, "redrive")
    # One run: a single-partition sync, or one batch run for all of them (those that fail
    # again fall back to single-partition retry runs).
    declared = source_named(source)
    if len(keys) == 1:
        job = declared.single_job_name
        tags = {**tags, "dagster/partition": keys[0]}
        config = declared.single_run_config()
    else:
        job, config = declared.sweep_job_name, declared.sweep_run_config(keys=keys)
    _launch.queue(s, job, tags=tags, run_config=config)
    click.echo(f"redriving {len(keys)} dead letter(s): {', '.join(keys[:20])}")
