"""Data versions (the training and holdout sets runs logged, stored once per content) and the
environment a run trained in (Python, ML package versions, code folder, seed).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("runs", sa.Column("environment", Json, nullable=True))
    op.create_table(
        "data_versions",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("schema", Json, nullable=False),
        sa.Column("profile", Json, nullable=False),
        sa.Column("key", Json, nullable=True),
        sa.Column("path", sa.String(512), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_data_versions"),
    )


def downgrade() -> None:
    op.drop_table("data_versions")
    op.drop_column("runs", "environment")
