"""`sync-pipeline db`: app database schema migrations."""

from __future__ import annotations

import click

from sync_pipeline.cli import context
from sync_pipeline.core import db


@click.group("db")
def db_group() -> None:
    """App database schema migrations (Alembic)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create or upgrade the app database schema."""
    s = context.settings()
    db.upgrade(s.database_url, revision)
    click.echo(
        f"{db.redact_url(s.database_url)} is at revision {db.current_revision(s.database_url)}"
    )


@db_group.command("current")
def db_current() -> None:
    """Show the schema revision of the app database and of the code."""
    s = context.settings()
    click.echo(f"database: {db.current_revision(s.database_url)}  code: {db.head_revision()}")
