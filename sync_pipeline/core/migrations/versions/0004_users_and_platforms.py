"""Consistency tracker: app users, platform connections, daily activity per platform.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "app_users",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "platform_connections",
        sa.Column(
            "user_id",
            sa.String(64),
            sa.ForeignKey("app_users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("platform", sa.String(16), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("handle", sa.String(128), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, server_default="connected"),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("private", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("scopes", sa.String(255), nullable=False, server_default=""),
        sa.Column("extra", JsonType, nullable=False),
        sa.Column("connected_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_platform_connections_account", "platform_connections", ["platform", "account_id"]
    )
    op.create_index("ix_platform_connections_state", "platform_connections", ["state"])
    op.create_table(
        "daily_activity",
        sa.Column(
            "user_id",
            sa.String(64),
            sa.ForeignKey("app_users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("platform", sa.String(16), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "consistency_scores",
        sa.Column(
            "user_id",
            sa.String(64),
            sa.ForeignKey("app_users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("variant", sa.String(8), primary_key=True),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("current_streak", sa.Integer(), nullable=False),
        sa.Column("longest_streak", sa.Integer(), nullable=False),
        sa.Column("rate_7d", sa.Float(), nullable=False),
        sa.Column("rate_30d", sa.Float(), nullable=False),
        sa.Column("active_days", JsonType, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consistency_scores")
    op.drop_table("daily_activity")
    op.drop_index("ix_platform_connections_state", "platform_connections")
    op.drop_index("ix_platform_connections_account", "platform_connections")
    op.drop_table("platform_connections")
    op.drop_table("app_users")
