"""What every part of the registry shares: where it keeps things, who acts, and how a missing
model or version is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipyard.core import validate_model_name
from shipyard.core.errors import ModelNotFound, VersionNotFound
from shipyard.registry import _repository as repo
from shipyard.registry._records import AliasMove, ModelVersion
from shipyard.store import ArtifactStore, Database

__all__ = ["RegistryBase", "ranges"]


class RegistryBase:
    """The registry's state: the metadata database, the artifact store and the actor.

    Args:
        database: the metadata database.
        artifacts: where bundles are stored.
        actor: who is acting, recorded on every change.
        scratch_dir: where bundles are assembled before upload (default: the system's temp
            folder); folders left by a killed registration are removed at the next one.
    """

    def __init__(
        self,
        database: Database,
        artifacts: ArtifactStore,
        *,
        actor: str = "unknown",
        scratch_dir: Path | None = None,
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.actor = actor
        self.scratch_dir = scratch_dir

    def acting_as(self, actor: str) -> Any:
        """The same registry (same connections), recording `actor` on what it changes."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__, actor=actor)
        return twin

    def _version(self, conn: Any, name: str, version: int) -> tuple[ModelVersion, str]:
        found = repo.get_version(conn, validate_model_name(name), version)
        if found is not None:
            return found
        if repo.get_model(conn, name) is None:
            raise self._model_not_found(conn, name)
        versions = [v.version for v in repo.list_versions(conn, name)]
        have = f"versions are {ranges(versions)}" if versions else "it has no versions yet"
        raise VersionNotFound(
            f"model {name!r} has no version {version}; {have} (shipyard models show {name})"
        )

    def _model_not_found(self, conn: Any, name: str) -> ModelNotFound:
        known = [m.name for m in repo.list_models(conn)]
        hint = (
            f"registered models: {', '.join(known[:10])}"
            if known
            else "no models are registered yet"
        )
        return ModelNotFound(
            f"no model named {name!r}; {hint} (register one with shipyard.register(...) or "
            "`shipyard models register PATH --name NAME`)",
            name=name,
        )

    def _move_alias(self, conn: Any, name: str, alias: str, version: int) -> AliasMove:
        previous = repo.set_alias(conn, name, alias, version, self.actor)
        repo.add_audit(
            conn,
            self.actor,
            "alias.moved",
            name,
            version,
            {"alias": alias, "from": previous, "to": version},
        )
        return AliasMove(name, alias, version, previous)


def ranges(versions: list[int]) -> str:
    """`[1, 2, 3, 5]` -> `1-3, 5`."""
    if not versions:
        return ""
    parts, start, prev = [], versions[0], versions[0]
    for v in [*versions[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}-{prev}" if prev != start else str(start))
        if v is not None:
            start = prev = v
    return ", ".join(parts)
