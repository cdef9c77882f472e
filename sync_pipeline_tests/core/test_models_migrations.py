"""The migrations build exactly the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from sync_pipeline.core import db
from sync_pipeline.core.models import Base


def test_migrated_schema_matches_the_models(db_url: str) -> None:
    with db.get_engine(db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
