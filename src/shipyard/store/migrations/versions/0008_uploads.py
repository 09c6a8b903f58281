"""Edge uploads: the prediction ids devices uploaded, so a retried upload logs nothing twice.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "uploaded_predictions",
        sa.Column("prediction_id", sa.String(128), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("ts", Timestamp, nullable=False),
        sa.Column("uploaded_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("prediction_id", "model_name", name="pk_uploaded_predictions"),
    )


def downgrade() -> None:
    op.drop_table("uploaded_predictions")
