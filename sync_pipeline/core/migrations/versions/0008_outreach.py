"""Outreach: campaigns, prospects, the outbox, inbound mail and CRM sync state.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outreach_campaigns",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("subject_template", sa.Text(), nullable=False),
        sa.Column("body_template", sa.Text(), nullable=False),
        sa.Column("followups", JsonType, nullable=False),
        sa.Column("daily_cap", sa.Integer(), nullable=False),
        sa.Column("min_gap_seconds", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "outreach_prospects",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "campaign",
            sa.String(64),
            sa.ForeignKey("outreach_campaigns.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("tier", sa.String(8), nullable=False),
        sa.Column("first_name", sa.String(128), nullable=False),
        sa.Column("last_name", sa.String(128), nullable=False),
        sa.Column("company", sa.String(255), nullable=False),
        sa.Column("domain", sa.String(255), nullable=True),
        sa.Column("website_ok", sa.Boolean(), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("email_confidence", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("last_sent_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_outreach_prospects_campaign", "outreach_prospects", ["campaign"])
    op.create_index("ix_outreach_prospects_state", "outreach_prospects", ["state"])
    op.create_index(
        "uq_outreach_prospects_campaign_email",
        "outreach_prospects",
        ["campaign", "email"],
        unique=True,
    )
    op.create_table(
        "outreach_outbox",
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column(
            "prospect_id",
            sa.String(64),
            sa.ForeignKey("outreach_prospects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sending_at", TS, nullable=True),
        sa.Column("sent_at", TS, nullable=True),
    )
    op.create_index("ix_outreach_outbox_prospect_id", "outreach_outbox", ["prospect_id"])
    op.create_index("ix_outreach_outbox_state", "outreach_outbox", ["state"])
    op.create_index(
        "uq_outreach_outbox_prospect_step", "outreach_outbox", ["prospect_id", "step"], unique=True
    )
    op.create_index("ix_outreach_outbox_sender_sent", "outreach_outbox", ["sender", "sent_at"])
    op.create_table(
        "outreach_inbound",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("mailbox", sa.String(255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=True),
        sa.Column("from_addr", sa.String(320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("match", sa.String(16), nullable=False),
        sa.Column("outbox_message_id", sa.String(255), nullable=True),
        sa.Column("prospect_id", sa.String(64), nullable=True),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("applied_at", TS, nullable=True),
    )
    op.create_index("ix_outreach_inbound_match", "outreach_inbound", ["match"])
    op.create_index("ix_outreach_inbound_prospect_id", "outreach_inbound", ["prospect_id"])
    op.create_index(
        "uq_outreach_inbound_mailbox_uid",
        "outreach_inbound",
        ["mailbox", "uidvalidity", "uid"],
        unique=True,
    )
    op.create_table(
        "outreach_crm_sync",
        sa.Column(
            "prospect_id",
            sa.String(64),
            sa.ForeignKey("outreach_prospects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("synced_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outreach_crm_sync")
    op.drop_index("uq_outreach_inbound_mailbox_uid", "outreach_inbound")
    op.drop_index("ix_outreach_inbound_prospect_id", "outreach_inbound")
    op.drop_index("ix_outreach_inbound_match", "outreach_inbound")
    op.drop_table("outreach_inbound")
    op.drop_index("ix_outreach_outbox_sender_sent", "outreach_outbox")
    op.drop_index("uq_outreach_outbox_prospect_step", "outreach_outbox")
    op.drop_index("ix_outreach_outbox_state", "outreach_outbox")
    op.drop_index("ix_outreach_outbox_prospect_id", "outreach_outbox")
    op.drop_table("outreach_outbox")
    op.drop_index("uq_outreach_prospects_campaign_email", "outreach_prospects")
    op.drop_index("ix_outreach_prospects_state", "outreach_prospects")
    op.drop_index("ix_outreach_prospects_campaign", "outreach_prospects")
    op.drop_table("outreach_prospects")
    op.drop_table("outreach_campaigns")
