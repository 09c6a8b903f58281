"""Monitoring: snapshots of each run, alert rules and the alerts they raised.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "monitoring_snapshots",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("window", sa.String(16), nullable=False),
        sa.Column("period_start", Timestamp, nullable=False),
        sa.Column("period_end", Timestamp, nullable=False),
        sa.Column("computed_at", Timestamp, nullable=False),
        sa.Column("summary", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitoring_snapshots"),
        sa.ForeignKeyConstraint(
            ["model_name"], ["models.name"], ondelete="CASCADE",
            name="fk_monitoring_snapshots_model_name_models",
        ),
    )  # fmt: skip
    op.create_index(
        "ix_monitoring_snapshots_model_name_period_end",
        "monitoring_snapshots",
        ["model_name", "period_end"],
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("expression", sa.Text, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("webhooks", Json, nullable=False),
        sa.Column("enabled", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.ForeignKeyConstraint(
            ["model_name"],
            ["models.name"],
            ondelete="CASCADE",
            name="fk_alert_rules_model_name_models",
        ),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.Integer, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_at", Timestamp, nullable=False),
        sa.Column("last_seen_at", Timestamp, nullable=False),
        sa.Column("resolved_at", Timestamp, nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("evidence", Json, nullable=False),
        sa.Column("deliveries", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["alert_rules.id"],
            ondelete="CASCADE",
            name="fk_alerts_rule_id_alert_rules",
        ),
    )
    op.create_index("ix_alerts_model_name_status", "alerts", ["model_name", "status"])


def downgrade() -> None:
    op.drop_index("ix_alerts_model_name_status", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
    op.drop_index(
        "ix_monitoring_snapshots_model_name_period_end", table_name="monitoring_snapshots"
    )
    op.drop_table("monitoring_snapshots")
