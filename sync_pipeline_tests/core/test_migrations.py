"""The Alembic migrations build exactly the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sync_pipeline.core import db
from sync_pipeline.core.models import Base


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    with db.get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_downgrade_of_the_newest_revision_and_upgrade_again(db_url: str) -> None:
    head = db.head_revision()
    from alembic import command

    cfg = db._alembic_config(db_url)
    with db.get_engine(db_url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
    assert db.current_revision(db_url) != head
    db.upgrade(db_url)
    assert db.current_revision(db_url) == head
