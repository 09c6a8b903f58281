"""The model registry: versions, bundles, aliases, deployments and the audit trail behind them.

One class, assembled from one part per concept:

    _register.py    register(), and cleaning up after registrations that never finished
    _reads.py       models, versions, references, history, bundles
    _lifecycle.py   aliases, archive, unarchive, delete
    _deploy.py      deploy, canary, rollback, stop, the serving plan
"""

from __future__ import annotations

from types import TracebackType

from shipyard.core import Settings
from shipyard.registry._deploy import Deploying
from shipyard.registry._lifecycle import Lifecycle
from shipyard.registry._reads import Reads
from shipyard.registry._register import Registering
from shipyard.store import ArtifactStore, Database

__all__ = ["Registry"]


class Registry(Registering, Reads, Lifecycle, Deploying):
    """Registers model versions and answers what is registered.

    Args:
        database: the metadata database.
        artifacts: where bundles are stored.
        actor: who is acting, recorded on every change.
        scratch_dir: where bundles are assembled before upload (default: the system's temp
            folder).
    """

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        database = Database(
            settings.resolved_database_url, auto_migrate=settings.should_auto_migrate
        )
        artifacts = ArtifactStore(settings.resolved_artifact_root, cache_dir=settings.cache_dir)
        return cls(database, artifacts, actor=settings.actor, scratch_dir=settings.scratch_dir)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.close()
