"""Alembic environment: runs migrations on the connection handed over by core.db.upgrade."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from sync_pipeline.core.models import Base

target_metadata = Base.metadata
config = context.config


def run_migrations_online() -> None:
    """Run migrations on the given connection, or on a fresh engine from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        context.configure(
            connection=conn,
            target_metadata=target_metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
