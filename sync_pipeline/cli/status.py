"""`sync-pipeline status`: per-source health."""

from __future__ import annotations

import json

import click

from sync_pipeline.cli import context
from sync_pipeline.cli.context import SOURCES


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--source", type=click.Choice(SOURCES), help="Only this source.")
def status(as_json: bool, source: str | None) -> None:
    """Per source: runs queued/running/24 h, oldest queued, sync states, dead letters, budget."""
    from sync_pipeline.core.health import (
        current_budget,
        needs_reconnect_connections,
        source_health,
    )
    from sync_pipeline.defs.strava.athletes import needs_reconnect_count

    s = context.settings()
    db_url = context.app_db(s).url
    report = {}
    with context.dagster_instance(s) as instance:
        for name in [source] if source else SOURCES:
            reconnect = (
                needs_reconnect_count(db_url)
                if name == "strava"
                else needs_reconnect_connections(db_url, name)
            )
            report[name] = source_health(
                instance,
                db_url,
                name,
                needs_reconnect=reconnect,
                budget=current_budget(db_url, name),
            )
    if as_json:
        click.echo(json.dumps({k: h.as_dict() for k, h in report.items()}, indent=2))
        return
    for name, health in report.items():
        oldest = f"{health.oldest_queued_seconds:.0f} s" if health.oldest_queued_seconds else "-"
        click.echo(name)
        click.echo(
            f"  runs: queued {health.queued} (oldest {oldest}), running {health.running}, "
            f"succeeded 24h {health.succeeded_24h}, failed 24h {health.failed_24h}"
        )
        states = ", ".join(f"{k} {v}" for k, v in sorted(health.partitions_by_status.items()))
        click.echo(f"  partitions by sync status: {states or '-'}")
        click.echo(
            f"  dead letters: {health.dead_letters}   needing reconnect: {health.needs_reconnect}"
        )
        for b in health.budget:
            click.echo(
                f"  budget {b['bucket']:24} {b['used']:>6}/{b['limit']:<6} left {b['left']:<6} "
                f"resets {b['resets_at']}"
            )
