"""Registry: models, versions, aliases and the audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("next_version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_models"),
    )
    op.create_table(
        "model_versions",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("flavour", sa.String(32), nullable=False),
        sa.Column("runtime", sa.String(32), nullable=False),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("signature", Json, nullable=True),
        sa.Column("metrics", Json, nullable=False),
        sa.Column("params", Json, nullable=False),
        sa.Column("tags", Json, nullable=False),
        sa.Column("features", Json, nullable=False),
        sa.Column("data_fingerprint", Json, nullable=True),
        sa.Column("bundle_path", sa.String(1024), nullable=False),
        sa.Column("metadata_sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("model_name", "version", name="pk_model_versions"),
        sa.ForeignKeyConstraint(
            ["model_name"],
            ["models.name"],
            ondelete="CASCADE",
            name="fk_model_versions_model_name_models",
        ),
    )
    op.create_table(
        "aliases",
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("model_name", "alias", name="pk_aliases"),
        sa.ForeignKeyConstraint(
            ["model_name", "version"],
            ["model_versions.model_name", "model_versions.version"],
            ondelete="CASCADE",
            name="fk_aliases_model_name_version_model_versions",
        ),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("details", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_model_name_at", "audit_events", ["model_name", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_model_name_at", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("aliases")
    op.drop_table("model_versions")
    op.drop_table("models")
