"""Promidata supplier catalog: suppliers, families, variants, prices, texts, images, progress;
shared concurrency slots.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JsonType = sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "concurrency_slots",
        sa.Column("pool", sa.String(64), primary_key=True),
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("holder", sa.String(128), nullable=False),
        _ts("acquired_at", False),
        _ts("expires_at", False),
    )
    op.create_table(
        "promidata_suppliers",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(255), nullable=True),
        _ts("added_at", False),
        sa.Column("import_etag", sa.String(255), nullable=True),
        sa.Column("import_last_modified", sa.String(64), nullable=True),
        _ts("import_checked_at"),
        _ts("import_changed_at"),
        sa.Column("categories_hash", sa.String(40), nullable=True),
    )
    op.create_table(
        "promidata_families",
        sa.Column("supplier", sa.String(32), primary_key=True),
        sa.Column("sku", sa.String(128), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("listed_hash", sa.String(40), nullable=False),
        sa.Column("synced_hash", sa.String(40), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("supplier_sku", sa.String(128), nullable=True),
        sa.Column("ean", sa.String(32), nullable=True),
        sa.Column("category", sa.String(255), nullable=True),
        sa.Column("details", JsonType, nullable=True),
        sa.Column("errors", JsonType, nullable=True),
        sa.Column("warnings", JsonType, nullable=True),
        _ts("first_seen_at", False),
        _ts("last_fetched_at"),
        _ts("discontinued_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_promidata_families_supplier_status", "promidata_families", ["supplier", "status"]
    )
    op.create_table(
        "promidata_variants",
        sa.Column("sku", sa.String(128), primary_key=True),
        sa.Column("supplier", sa.String(32), nullable=False),
        sa.Column("family_sku", sa.String(128), nullable=False),
        sa.Column("supplier_sku", sa.String(128), nullable=True),
        sa.Column("ean", sa.String(32), nullable=True),
        sa.Column("color", sa.String(64), nullable=True),
        sa.Column("size", sa.String(64), nullable=True),
        sa.Column("details", JsonType, nullable=True),
        _ts("updated_at", False),
    )
    op.create_index(
        "ix_promidata_variants_family", "promidata_variants", ["supplier", "family_sku"]
    )
    op.create_table(
        "promidata_prices",
        sa.Column("variant_sku", sa.String(128), primary_key=True),
        sa.Column("region", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("quantity", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("price", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(8), nullable=True),
        sa.Column("vat_percent", sa.Float(), nullable=True),
        sa.Column("minimum_order_quantity", sa.Integer(), nullable=True),
    )
    op.create_table(
        "promidata_texts",
        sa.Column("sku", sa.String(128), primary_key=True),
        sa.Column("language", sa.String(8), primary_key=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("short_description", sa.Text(), nullable=True),
        sa.Column("configuration", JsonType, nullable=True),
    )
    op.create_table(
        "promidata_categories",
        sa.Column("code", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("parent_code", sa.String(255), nullable=True),
    )
    op.create_table(
        "promidata_images",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(255), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        _ts("stored_at", False),
    )
    op.create_table(
        "promidata_image_links",
        sa.Column("owner_sku", sa.String(128), primary_key=True),
        sa.Column("image_sha256", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), primary_key=True),
        sa.Column("supplier", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
    )
    op.create_index("ix_promidata_image_links_image", "promidata_image_links", ["image_sha256"])
    op.create_index("ix_promidata_image_links_supplier", "promidata_image_links", ["supplier"])
    op.create_table(
        "promidata_failures",
        sa.Column("supplier", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("item", sa.String(128), primary_key=True),
        sa.Column("version", sa.Text(), nullable=True),
        sa.Column("dead", sa.Boolean(), nullable=False),
        sa.Column("error_class", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("first_failed_at", False),
        _ts("last_failed_at", False),
        sa.Column("run_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "promidata_progress",
        sa.Column("supplier", sa.String(32), primary_key=True),
        sa.Column("stage", sa.String(16), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.String(64), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("figures", JsonType, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("started_at"),
        _ts("updated_at", False),
        _ts("finished_at"),
    )


def downgrade() -> None:
    for table in (
        "promidata_progress",
        "promidata_failures",
        "promidata_image_links",
        "promidata_images",
        "promidata_categories",
        "promidata_texts",
        "promidata_prices",
        "promidata_variants",
        "promidata_families",
        "promidata_suppliers",
        "concurrency_slots",
    ):
        op.drop_table(table)
