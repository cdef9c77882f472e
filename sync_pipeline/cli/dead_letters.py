"""`sync-pipeline dead-letters`: syncs that failed for good, and their redrive."""

from __future__ import annotations

import json
from typing import Any

import click

from sync_pipeline.cli import _launch, context
from sync_pipeline.cli.context import SOURCES
from sync_pipeline.core import priorities
from sync_pipeline.sources import source as source_named


@click.group("dead-letters")
def dead_letters() -> None:
    """Syncs that failed for good (permanent error or retries exhausted), and their redrive.

    Partitions, and for sources that retry items on their own (Promidata's families, images
    and Import.txt lines) each dead item, keyed SUPPLIER/KIND/ITEM.
    """


def _rows(db_url: str, name: str, partition_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A source's dead partitions and dead items, newest failure first."""
    rows = partition_rows + source_named(name).dead_items(db_url)
    rows.sort(key=lambda r: str(r["last_failure_at"] or ""), reverse=True)
    return rows


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
        for row in _rows(
            app_db.url, name, dead_letter_rows(app_db.checkpoints(name).dead_letters())
        )
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no dead letters")
        return
    for r in rows:
        what = f"{r['source']}/{r['partition']}"
        if "key" in r:
            what += f" {r['stage']} {r['kind']} {r['item']}"
        click.echo(
            f"{what}: {r['error_class']} after {r['attempts']} attempt(s), "
            f"last {r['last_failure_at']} (run {r['run_id']})\n"
            f"    {reason_summary(r['message'], 300)}"
        )


@dead_letters.command("redrive")
@click.option("--source", type=click.Choice(SOURCES), default="strava", show_default=True)
@click.option("--partition", help="One partition (athlete id, user id, supplier code).")
@click.option(
    "--key",
    "keys",
    multiple=True,
    help="One dead item below a partition, as listed (e.g. A23/family/A23-100804); repeatable.",
)
@click.option("--all", "redrive_all", is_flag=True, help="Every dead letter of the source.")
def dead_letters_redrive(
    source: str, partition: str | None, keys: tuple[str, ...], redrive_all: bool
) -> None:
    """Re-queue dead letters at manual priority; they clear when the sync succeeds.

    A dead item (--key) is made eligible again and its partition's single-partition sync
    queued; --partition and --all include the partition's dead items.
    """
    if sum((partition is not None, bool(keys), redrive_all)) != 1:
        raise click.UsageError("Give exactly one of --partition P, --key K or --all.")
    s = context.settings()
    app_db = context.app_db(s)
    db_url = app_db.url
    declared = source_named(source)
    dead = [st.partition_key for st in app_db.checkpoints(source).dead_letters()]
    items = [r["key"] for r in declared.dead_items(db_url)]
    if partition is not None:
        items = [k for k in items if k.startswith(f"{partition}/")]
        if partition not in dead and not items:
            raise click.ClickException(
                f"{source}/{partition} is not a dead letter; see `sync-pipeline dead-letters list`."
            )
        dead = [partition] if partition in dead else []
    elif keys:
        unknown = [k for k in keys if k not in items]
        if unknown:
            raise click.ClickException(
                f"{source}: {', '.join(unknown)} not a dead letter; see "
                f"`sync-pipeline dead-letters list --source {source}`."
            )
        dead, items = [], list(dict.fromkeys(keys))
    if not dead and not items:
        click.echo("no dead letters")
        return
    tags = priorities.run_tags(priorities.MANUAL, source, "redrive")
    # Items belong to stages the sweep does not run: their partitions get single runs.
    redrive_item = declared.item_dead_letters.redrive if declared.item_dead_letters else None
    singles = sorted({p for k in items if redrive_item and (p := redrive_item(db_url, k))})
    batch = [k for k in dead if k not in singles]
    # One run per partition with items, and for the dead partitions a single-partition sync,
    # or one batch run for all of them (those that fail again fall back to single retries).
    if len(batch) == 1:
        singles.append(batch.pop())
    for key in singles:
        job_tags = {**tags, "dagster/partition": key}
        _launch.queue(
            s, declared.single_job_name, tags=job_tags, run_config=declared.single_run_config()
        )
    if batch:
        job, config = declared.sweep_job_name, declared.sweep_run_config(keys=batch)
        _launch.queue(s, job, tags=tags, run_config=config)
    if dead:
        click.echo(f"redriving {len(dead)} dead letter(s): {', '.join(dead[:20])}")
    if items:
        click.echo(f"redriving {len(items)} dead item(s): {', '.join(items[:20])}")
