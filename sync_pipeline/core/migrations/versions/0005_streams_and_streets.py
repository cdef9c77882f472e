"""Street Keeper: activity streams, street node hits, per-street progress.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("strava_activities") as batch_op:
        batch_op.add_column(sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "strava_streams",
        sa.Column(
            "activity_id",
            sa.BigInteger(),
            sa.ForeignKey("strava_activities.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("athlete_id", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("latlng", JsonType, nullable=False),
        sa.Column("time_s", JsonType, nullable=False),
        sa.Column("distance_m", JsonType, nullable=False),
        sa.Column("altitude_m", JsonType, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_strava_streams_athlete_id", "strava_streams", ["athlete_id"])
    op.create_table(
        "street_node_hits",
        sa.Column("athlete_id", sa.BigInteger(), primary_key=True),
        sa.Column(
            "activity_id",
            sa.BigInteger(),
            sa.ForeignKey("strava_activities.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("node_id", sa.BigInteger(), primary_key=True),
    )
    op.create_index(
        "ix_street_node_hits_athlete_node", "street_node_hits", ["athlete_id", "node_id"]
    )
    op.create_table(
        "street_progress",
        sa.Column("athlete_id", sa.BigInteger(), primary_key=True),
        sa.Column("street_id", sa.BigInteger(), primary_key=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("nodes_total", sa.Integer(), nullable=False),
        sa.Column("nodes_hit", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("street_progress")
    op.drop_index("ix_street_node_hits_athlete_node", "street_node_hits")
    op.drop_table("street_node_hits")
    op.drop_index("ix_strava_streams_athlete_id", "strava_streams")
    op.drop_table("strava_streams")
    with op.batch_alter_table("strava_activities") as batch_op:
        batch_op.drop_column("processed_at")
