"""Settings: one class, read from `SHIPYARD_*` environment variables, built once at the entry point."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in a bare container
        return "unknown"


class Settings(BaseSettings):
    """Where shipyard keeps its state and the limits it enforces.

    Every field can be set as `SHIPYARD_<FIELD>` in the environment. Unset locations derive
    from `home`, so `SHIPYARD_HOME=/data/shipyard` is enough to move everything.
    """

    model_config = SettingsConfigDict(env_prefix="SHIPYARD_", extra="ignore", frozen=True)

    home: Path = Field(default=Path(".shipyard"), description="folder for embedded state")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata DB; default SQLite at <home>/shipyard.db",
    )
    artifact_root: str | None = Field(
        default=None,
        description="fsspec URL or path for artifacts; default <home>/artifacts",
    )
    auto_migrate: bool | None = Field(
        default=None,
        description="apply pending migrations on open; default on for SQLite, off otherwise",
    )
    actor: str = Field(default_factory=_default_actor, description="who acts, for the audit trail")
    serving_alias: str = Field(
        default="production", description="alias that /v1/models/{name} serves"
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0, description="largest request body")
    max_batch_records: int = Field(default=10_000, gt=0, description="most records in one request")
    explain_max_records: int = Field(
        default=100, gt=0, description="most records one request may ask to have explained"
    )
    explain_budget_ms: float = Field(
        default=200.0,
        gt=0,
        description="time a sampled explanation (models without an exact method) may take per "
        "request; more time, smaller sampling errors",
    )
    refresh_seconds: float = Field(
        default=2.0,
        ge=0,
        description="how often a server re-reads deployments, aliases and API keys",
    )
    drain_seconds: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="on SIGTERM, how long the server keeps answering while its readiness "
        "(`/v2/health/ready`) says 503, so a load balancer or Kubernetes takes it out of rotation "
        "before it stops accepting; then the requests in flight finish. 0: stop accepting at "
        "once (a second SIGTERM always does)",
    )
    max_stale_seconds: float = Field(
        default=300.0,
        gt=0,
        description="while the metadata database is unreachable, how long a server keeps "
        "serving from the last API keys and deployments it read (then 503)",
    )
    config: Path | None = Field(
        default=None,
        description="shipyard.yaml with the models' retraining specs, KPIs and batch jobs "
        "(default: ./shipyard.yaml, else [tool.shipyard] in ./pyproject.toml)",
    )
    session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 30,
        description="how long a dashboard sign-in lasts",
    )
    session_secret: str | None = Field(
        default=None,
        description="signs dashboard sessions; set the same value (16+ characters) on every "
        "replica; default: a random one kept in $SHIPYARD_HOME/session.secret",
    )
    max_cold_versions: int = Field(
        default=4,
        ge=0,
        description="versions outside the serving plan (pinned requests, V2 ready) kept loaded",
    )
    max_cold_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=0,
        description="bundle bytes of versions outside the serving plan kept loaded",
    )

    grpc_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="also serve the Open Inference Protocol over gRPC on this port "
        "(needs shipyard[grpc]); `shipyard server --grpc-port`",
    )
    grpc_host: str = Field(default="127.0.0.1", description="interface the gRPC service binds")

    # -- who may call ----------------------------------------------------------------------
    auth: Literal["on", "off"] = Field(
        default="on", description="API-key authentication; 'off' only for local experiments"
    )
    redis_url: str | None = Field(
        default=None, description="Redis for state shared by replicas (rate-limit buckets)"
    )
    online_store: Literal["auto", "sqlite", "redis"] = Field(
        default="auto",
        description="where online features live: `auto` is Redis when redis_url is set, "
        "else SQLite at <home>/online.sqlite",
    )
    auth_failure_burst: int = Field(
        default=20,
        gt=0,
        description="failed authentications one client may make in a row before it gets 429",
    )
    auth_failures_per_second: float = Field(
        default=1.0, gt=0, description="failed authentications a client earns back per second"
    )

    # -- how predictions are computed ------------------------------------------------------
    batch_max_rows: int = Field(default=256, gt=0, description="most rows in one model call")
    batch_max_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="extra wait for a batch to fill; 0 batches only what is already queued",
    )
    queue_max_rows: int = Field(
        default=4096, gt=0, description="rows waiting per model before the server answers 503"
    )
    deadline_ms: float = Field(default=500.0, gt=0, description="per-request deadline (504 after)")
    predict_threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="threads each `shipyard server` worker lets native libraries (OpenMP in "
        "scikit-learn, LightGBM and XGBoost; BLAS) use for one model call; requests are small, "
        "so scale with --workers: on a busy machine more threads per call spin against each "
        "other (measured: 10-row calls of up to 1 s, not 150 ms, at 2 threads)",
    )

    # -- prediction and label logs ---------------------------------------------------------
    log_flush_seconds: float = Field(
        default=5.0, gt=0, description="how often spooled logs become Parquet segments"
    )
    log_segment_rows: int = Field(
        default=100_000, gt=0, description="rows after which a log segment is cut early"
    )
    log_fsync_seconds: float = Field(
        default=1.0,
        ge=0,
        description="fsync the spool this often (survives a machine crash); 0 = never "
        "(a killed process still loses nothing)",
    )
    log_flush_in: Literal["thread", "process"] = Field(
        default="thread",
        description="where spooled logs are turned into Parquet: a thread of the serving "
        "process, or a helper process of its own (off the GIL of the request path); "
        "`shipyard server` picks a process when it has fewer workers than cores",
    )
    spool_dir: Path | None = Field(
        default=None, description="local write-ahead spool for logs; default <home>/spool"
    )
    alert_webhooks: str | None = Field(
        default=None,
        description="comma-separated URLs every alert is POSTed to, besides each rule's own",
    )
    log_format: Literal["auto", "rich", "json", "text"] = Field(
        default="auto",
        description="server log format: `auto` is Rich on a terminal and JSON lines otherwise",
    )
    access_log: bool = Field(
        default=False,
        description="one log line per request (every prediction is in the prediction log anyway)",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'shipyard.db').resolve()}"

    @property
    def resolved_artifact_root(self) -> str:
        if self.artifact_root:
            return self.artifact_root
        return str((self.home / "artifacts").resolve())

    @property
    def resolved_spool_dir(self) -> Path:
        return (self.spool_dir or self.home / "spool").resolve()

    @property
    def scratch_dir(self) -> Path:
        """Where bundles are assembled before upload (cleaned up after killed registrations)."""
        return (self.home / "tmp").resolve()

    @property
    def cache_dir(self) -> Path:
        """Local copies of remote artifacts, verified on download."""
        return (self.home / "cache").resolve()

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate
