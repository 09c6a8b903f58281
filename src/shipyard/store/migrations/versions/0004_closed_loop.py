"""The closed loop: tracking runs and their metrics, version lineage, jobs, pipelines.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("ended_at", Timestamp, nullable=True),
        sa.Column("params", Json, nullable=False),
        sa.Column("tags", Json, nullable=False),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("git", Json, nullable=False),
        sa.Column("entrypoint", sa.String(512), nullable=False),
        sa.Column("datasets", Json, nullable=False),
        sa.Column("artifacts", Json, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_experiment_started_at", "runs", ["experiment", "started_at"])
    op.create_table(
        "run_metrics",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_run_metrics"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], ondelete="CASCADE", name="fk_run_metrics_run_id_runs"
        ),
    )
    op.create_index("ix_run_metrics_run_id_key_step", "run_metrics", ["run_id", "key", "step"])
    # plain ADD COLUMN (SQLite has it): a batch copy of the table would, with foreign keys on,
    # cascade-delete the aliases that point at it
    op.add_column("model_versions", sa.Column("run_id", sa.String(32), nullable=True))
    op.add_column("model_versions", sa.Column("lineage", Json, nullable=True))
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("payload", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_at", Timestamp, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("leased_by", sa.String(128), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("result", Json, nullable=True),
        sa.Column("dedup_key", sa.String(256), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_status_run_at", "jobs", ["status", "run_at"])
    op.create_table(
        "pipelines",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("trigger", Json, nullable=False),
        sa.Column("champion_version", sa.Integer, nullable=True),
        sa.Column("candidate_version", sa.Integer, nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("steps", Json, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pipelines"),
        sa.ForeignKeyConstraint(
            ["model_name"],
            ["models.name"],
            ondelete="CASCADE",
            name="fk_pipelines_model_name_models",
        ),
    )
    op.create_index("ix_pipelines_model_name_created_at", "pipelines", ["model_name", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_pipelines_model_name_created_at", table_name="pipelines")
    op.drop_table("pipelines")
    op.drop_index("ix_jobs_status_run_at", table_name="jobs")
    op.drop_table("jobs")
    op.drop_column("model_versions", "lineage")
    op.drop_column("model_versions", "run_id")
    op.drop_index("ix_run_metrics_run_id_key_step", table_name="run_metrics")
    op.drop_table("run_metrics")
    op.drop_index("ix_runs_experiment_started_at", table_name="runs")
    op.drop_table("runs")
