"""Global feature importance per version: mean |contribution| over its reference rows, worked
out at registration, so versions can be compared by what they rely on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("importance", Json, nullable=True))


def downgrade() -> None:
    op.drop_column("model_versions", "importance")
