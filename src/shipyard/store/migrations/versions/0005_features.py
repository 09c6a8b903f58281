"""The feature store: versioned feature views, materialization runs, and API keys limited to
feature views.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "feature_views",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(1024), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feature_views"),
        sa.UniqueConstraint("name", "version", name="uq_feature_views_name_version"),
    )
    op.create_table(
        "feature_materializations",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("view", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("start", Timestamp, nullable=True),
        sa.Column("end", Timestamp, nullable=True),
        sa.Column("watermark", Timestamp, nullable=True),
        sa.Column("rows_read", sa.Integer, nullable=False),
        sa.Column("entities_written", sa.Integer, nullable=False),
        sa.Column("newest_event", Timestamp, nullable=True),
        sa.Column("profile", Json, nullable=True),
        sa.Column("files", Json, nullable=True),
        sa.Column("layout", Json, nullable=True),
        sa.Column("source_state", Json, nullable=True),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_feature_materializations"),
    )
    op.create_index(
        "ix_feature_materializations_view_store",
        "feature_materializations",
        ["view", "store"],
    )
    op.add_column("api_keys", sa.Column("feature_views", Json, nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "feature_views")
    op.drop_index("ix_feature_materializations_view_store", table_name="feature_materializations")
    op.drop_table("feature_materializations")
    op.drop_table("feature_views")
