"""The metadata schema, as SQLAlchemy Core tables. Migrations under `migrations/` create it."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "alert_rules",
    "alerts",
    "aliases",
    "api_keys",
    "audit_events",
    "data_versions",
    "deployments",
    "event_alert_cooldowns",
    "event_alerts",
    "feature_materializations",
    "feature_views",
    "jobs",
    "metadata",
    "model_versions",
    "models",
    "monitoring_snapshots",
    "pipelines",
    "run_metrics",
    "runs",
    "uploaded_predictions",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)

models = Table(
    "models",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(256), nullable=False),
    # the newest complete version; moves only once a version's bundle is fully written
    Column("latest_version", Integer, nullable=False, default=0),
    # version numbers handed out, including ones still being written or abandoned
    Column("next_version", Integer, nullable=False, default=1),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column(
        "model_name", String(128), ForeignKey("models.name", ondelete="CASCADE"), primary_key=True
    ),
    Column("version", Integer, primary_key=True),
    Column("status", String(16), nullable=False),  # pending | ready | archived
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("purpose", Text, nullable=False, default=""),
    Column("flavour", String(32), nullable=False, default=""),
    Column("runtime", String(32), nullable=False, default=""),
    Column("task", String(16), nullable=False, default=""),
    Column("threshold", Float, nullable=True),
    Column("signature", Json, nullable=True),
    Column("metrics", Json, nullable=False, default=dict),
    Column("params", Json, nullable=False, default=dict),
    Column("tags", Json, nullable=False, default=dict),
    Column("features", Json, nullable=False, default=list),
    Column("data_fingerprint", Json, nullable=True),
    Column("bundle_path", String(1024), nullable=False, default=""),
    Column("metadata_sha256", String(64), nullable=False, default=""),
    Column("size_bytes", Integer, nullable=False, default=0),
    # the tracking run that trained it, and where it came from (parent version, trigger)
    Column("run_id", String(32), nullable=True),
    Column("lineage", Json, nullable=True),
    # mean |contribution| per feature over the reference rows (`runtime.global_importance`)
    Column("importance", Json, nullable=True),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_name", String(128), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("updated_by", String(256), nullable=False),
    ForeignKeyConstraint(
        ["model_name", "version"],
        ["model_versions.model_name", "model_versions.version"],
        ondelete="CASCADE",
    ),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Timestamp, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("model_name", String(128), nullable=True),
    Column("version", Integer, nullable=True),
    Column("details", Json, nullable=False, default=dict),
    Index("ix_audit_events_model_name_at", "model_name", "at"),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "model_name", String(128), ForeignKey("models.name", ondelete="CASCADE"), nullable=False
    ),
    # 1, 2, 3 ... per model; the highest is the live one
    Column("revision", Integer, nullable=False),
    # [{"version": 3, "weight": 95.0, "role": "primary"}, ...]
    Column("variants", Json, nullable=False),
    Column("routing_field", String(128), nullable=True),
    # the revision a rollback returns to
    Column("previous_revision", Integer, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    UniqueConstraint("model_name", "revision"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(256), nullable=False, default=""),
    # sha256 of the secret part; the secret itself is shown once and never stored
    Column("secret_sha256", String(64), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("model_name", String(128), nullable=True),
    Column("rate_per_second", Float, nullable=True),
    Column("burst", Integer, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("revoked_at", Timestamp, nullable=True),
    Column("revoked_by", String(256), nullable=True),
    # the feature views the key may read (None: every view its scope allows)
    Column("feature_views", Json, nullable=True),
    # dashboard sessions of this key issued before this moment are over (signing out)
    Column("sessions_after", Timestamp, nullable=True),
)

monitoring_snapshots = Table(
    "monitoring_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "model_name", String(128), ForeignKey("models.name", ondelete="CASCADE"), nullable=False
    ),
    Column("window", String(16), nullable=False),
    Column("period_start", Timestamp, nullable=False),
    Column("period_end", Timestamp, nullable=False),
    Column("computed_at", Timestamp, nullable=False),
    Column("summary", Json, nullable=False),
    Index("ix_monitoring_snapshots_model_name_period_end", "model_name", "period_end"),
)

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "model_name", String(128), ForeignKey("models.name", ondelete="CASCADE"), nullable=False
    ),
    Column("expression", Text, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("webhooks", Json, nullable=False, default=list),
    Column("enabled", Integer, nullable=False, default=1),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(256), nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule_id", Integer, ForeignKey("alert_rules.id", ondelete="CASCADE"), nullable=False),
    Column("model_name", String(128), nullable=False),
    Column("version", Integer, nullable=True),
    Column("status", String(16), nullable=False),  # firing | resolved
    Column("opened_at", Timestamp, nullable=False),
    Column("last_seen_at", Timestamp, nullable=False),
    Column("resolved_at", Timestamp, nullable=True),
    Column("value", Float, nullable=True),
    Column("evidence", Json, nullable=False, default=dict),
    Column("deliveries", Json, nullable=False, default=list),
    Index("ix_alerts_model_name_status", "model_name", "status"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("experiment", String(128), nullable=False),
    Column("name", String(256), nullable=False, default=""),
    Column("status", String(16), nullable=False),  # running | finished | failed
    Column("started_at", Timestamp, nullable=False),
    Column("ended_at", Timestamp, nullable=True),
    Column("params", Json, nullable=False, default=dict),
    Column("tags", Json, nullable=False, default=dict),
    Column("metrics", Json, nullable=False, default=dict),  # the last value of each metric
    Column("git", Json, nullable=False, default=dict),
    Column("entrypoint", String(512), nullable=False, default=""),
    Column("datasets", Json, nullable=False, default=dict),
    Column("artifacts", Json, nullable=False, default=dict),  # path -> {sha256, size, stored_at}
    Column("created_by", String(256), nullable=False),
    Column("error", Text, nullable=True),
    # Python, the ML packages' versions, the code folder and the seed (to reproduce the run)
    Column("environment", Json, nullable=True),
    Index("ix_runs_experiment_started_at", "experiment", "started_at"),
)

# snapshots of the data sets runs logged (training and holdout sets), content-addressed: the id
# is the SHA-256 of the data's Arrow IPC form, so the same data is stored once however often
# it is logged; the Parquet file lives at `path` in the artifact store
data_versions = Table(
    "data_versions",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("rows", Integer, nullable=False),
    Column("schema", Json, nullable=False),  # [{name, type}] in column order (Arrow types)
    Column("profile", Json, nullable=False),
    Column("key", Json, nullable=True),  # the columns that identify a row, when declared
    Column("path", String(512), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(256), nullable=False),
)

run_metrics = Table(
    "run_metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(256), nullable=False),
    Column("step", Integer, nullable=False),
    Column("value", Float, nullable=False),
    Column("at", Timestamp, nullable=False),
    Index("ix_run_metrics_run_id_key_step", "run_id", "key", "step"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("model_name", String(128), nullable=True),
    Column("payload", Json, nullable=False, default=dict),
    Column("status", String(16), nullable=False),  # queued | running | done | failed
    Column("run_at", Timestamp, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=3),
    Column("lease_until", Timestamp, nullable=True),
    Column("leased_by", String(128), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("result", Json, nullable=True),
    Column("dedup_key", String(256), nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Index("ix_jobs_status_run_at", "status", "run_at"),
)

pipelines = Table(
    "pipelines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "model_name", String(128), ForeignKey("models.name", ondelete="CASCADE"), nullable=False
    ),
    Column("status", String(32), nullable=False),
    Column("trigger", Json, nullable=False, default=dict),
    Column("champion_version", Integer, nullable=True),
    Column("candidate_version", Integer, nullable=True),
    Column("run_id", String(32), nullable=True),
    Column("steps", Json, nullable=False, default=list),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Index("ix_pipelines_model_name_created_at", "model_name", "created_at"),
)

feature_views = Table(
    "feature_views",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", Json, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("origin", String(1024), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("created_by", String(256), nullable=False),
    UniqueConstraint("name", "version"),
)

feature_materializations = Table(
    "feature_materializations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("view", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("store", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("start", Timestamp, nullable=True),
    Column("end", Timestamp, nullable=True),
    # the newest source event time read so far: an incremental run reads only later rows
    Column("watermark", Timestamp, nullable=True),
    Column("rows_read", Integer, nullable=False),
    Column("entities_written", Integer, nullable=False),
    Column("newest_event", Timestamp, nullable=True),
    Column("profile", Json, nullable=True),
    # a file source's files already read (path -> size and modification time)
    Column("files", Json, nullable=True),
    # how the run laid the view out in the store: its keys, and which are integers
    Column("layout", Json, nullable=True),
    # a SQL source's or log's rows older than the watermark (late rows show as a rise)
    Column("source_state", Json, nullable=True),
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=False),
    Column("created_by", String(256), nullable=False),
    Index("ix_feature_materializations_view_store", "view", "store"),
)

# alerts a stream consumer raised on scored events (`shipyard stream --alert`), and when each
# rule may fire again for each entity (one row per model, rule and entity: two consumers of a
# group, or one restarted, never raise the same alert twice within the cooldown)
event_alerts = Table(
    "event_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(128), nullable=False),
    Column("version", Integer, nullable=True),
    Column("rule", String(512), nullable=False),
    Column("entity", String(256), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("prediction_id", String(64), nullable=True),
    Column("value", Float, nullable=True),
    Column("raised_at", Timestamp, nullable=False),
    Column("group_name", String(256), nullable=False),
    Column("evidence", Json, nullable=False, default=dict),
    Column("deliveries", Json, nullable=False, default=list),
    Index("ix_event_alerts_model_name_raised_at", "model_name", "raised_at"),
)

event_alert_cooldowns = Table(
    "event_alert_cooldowns",
    metadata,
    Column("model_name", String(128), primary_key=True),
    Column("rule", String(512), primary_key=True),
    Column("entity", String(256), primary_key=True),
    Column("until", Timestamp, nullable=False),
)

# predictions devices made offline and uploaded later (`POST /v1/logs/upload`): one row per
# model and prediction id, claimed in the transaction that logs it, so an upload retried (or
# overlapping another) logs each prediction once. The prediction id leads the key: labels find
# their prediction by its id alone
uploaded_predictions = Table(
    "uploaded_predictions",
    metadata,
    Column("prediction_id", String(128), primary_key=True),
    Column("model_name", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("device_id", String(128), nullable=False),
    Column("ts", Timestamp, nullable=False),  # when the device made the prediction
    Column("uploaded_at", Timestamp, nullable=False),
)
