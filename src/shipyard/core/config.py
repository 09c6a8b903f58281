"""Settings: one class, read from `SHIPYARD_*` environment variables, built once at the entry point."""

from __future__ import annotations

import getpass
from pathlib import Path

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
    alias_refresh_seconds: float = Field(
        default=2.0, ge=0, description="how long a server trusts its cached alias lookups"
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
    def cache_dir(self) -> Path:
        """Local copies of remote artifacts, verified on download."""
        return (self.home / "cache").resolve()

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def should_auto_migrate(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate
