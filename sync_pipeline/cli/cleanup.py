"""`sync-pipeline cleanup`: delete old finished runs."""

from __future__ import annotations

import json

import click

from sync_pipeline.cli import context


@click.command()
@click.option("--older-than", default="7d", show_default=True, help="Age such as 7d, 12h, 30m.")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True)
def cleanup(older_than: str, dry_run: bool, as_json: bool) -> None:
    """Delete finished runs older than an age, keeping partition status and current failures."""
    from sync_pipeline.core.cleanup import cleanup_runs, parse_age

    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    s = context.settings()
    app_db = context.app_db(s)
    with context.dagster_instance(s) as instance:
        report = cleanup_runs(instance, app_db.url, older_than=age, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"runs finished before {report.cutoff}: examined {report.examined}, {verb} "
        f"{len(report.deleted)}, kept {report.kept_latest_materialization} holding a "
        f"partition's latest materialization and {report.kept_explains_failure} explaining "
        "a current failure"
    )
    for run_id in report.deleted:
        click.echo(f"  {verb} {run_id}")
