"""`sync-pipeline init` and `keygen`: the settings file, home and schema."""

from __future__ import annotations

import click

from sync_pipeline.cli import context
from sync_pipeline.core import db
from sync_pipeline.core.crypto import generate_key
from sync_pipeline.core.settings import DEFAULT_SANDBOX_PORT


@click.command()
@click.option("--sandbox-port", default=DEFAULT_SANDBOX_PORT, show_default=True)
@click.option("--force", is_flag=True, help="Rewrite .env with new sandbox defaults.")
def init(sandbox_port: int, force: bool) -> None:
    """Create .env (sandbox defaults), the Dagster home and the app database schema."""
    s = context.init_home(sandbox_port=sandbox_port, force_env=force)
    click.echo(f"home: {s.home}\nDAGSTER_HOME: {s.dagster_home}")
    click.echo(f"app database: {db.redact_url(s.database_url)} at revision {db.head_revision()}")


@click.command()
def keygen() -> None:
    """Print a new token encryption key for SYNC_TOKEN_KEY."""
    click.echo(generate_key())
