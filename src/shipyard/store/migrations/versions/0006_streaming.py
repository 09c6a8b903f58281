"""Streams: alerts raised on scored events and their per-entity cooldowns.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_alerts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("rule", sa.String(512), nullable=False),
        sa.Column("entity", sa.String(256), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("prediction_id", sa.String(64), nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("raised_at", Timestamp, nullable=False),
        sa.Column("group_name", sa.String(256), nullable=False),
        sa.Column("evidence", Json, nullable=False),
        sa.Column("deliveries", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_alerts"),
    )
    op.create_index(
        "ix_event_alerts_model_name_raised_at", "event_alerts", ["model_name", "raised_at"]
    )
    op.create_table(
        "event_alert_cooldowns",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("rule", sa.String(512), nullable=False),
        sa.Column("entity", sa.String(256), nullable=False),
        sa.Column("until", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "rule", "entity", name="pk_event_alert_cooldowns"),
    )


def downgrade() -> None:
    op.drop_table("event_alert_cooldowns")
    op.drop_index("ix_event_alerts_model_name_raised_at", table_name="event_alerts")
    op.drop_table("event_alerts")
