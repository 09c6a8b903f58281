"""A version's life after registration: aliases, archiving, and deletion, each audited."""

from __future__ import annotations

from typing import Any

from shipyard.core import validate_alias, validate_model_name
from shipyard.core.errors import AliasNotFound, Conflict, VersionArchived
from shipyard.registry import _repository as repo
from shipyard.registry._base import RegistryBase
from shipyard.registry._bundle import bundle_prefix
from shipyard.registry._records import AliasMove, ModelVersion

__all__ = ["Lifecycle"]


class Lifecycle(RegistryBase):
    """Aliases, archive and unarchive, delete."""

    def set_alias(self, name: str, version: int, alias: str) -> AliasMove:
        """Point `alias` at `version` atomically, recording the move in the audit trail."""
        validate_alias(alias)
        with self.database.transaction() as conn:
            record = self._version(conn, name, version)[0]
            if record.status == "archived":
                raise VersionArchived(
                    f"{name}:{version} is archived; an alias can only point at a live version "
                    f"(shipyard models unarchive {name}:{version})"
                )
            return self._move_alias(conn, name, alias, version)

    def remove_alias(self, name: str, alias: str) -> AliasMove:
        with self.database.transaction() as conn:
            previous = repo.remove_alias(conn, validate_model_name(name), validate_alias(alias))
            if previous is None:
                if repo.get_model(conn, name) is None:
                    raise self._model_not_found(conn, name)
                raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
            repo.add_audit(
                conn,
                self.actor,
                "alias.removed",
                name,
                previous,
                {"alias": alias, "from": previous},
            )
            return AliasMove(name, alias, previous, previous)

    def archive(self, name: str, version: int) -> ModelVersion:
        """Retire a version: it stays on record but no longer serves or takes aliases."""
        with self.database.transaction() as conn:
            record = self._version(conn, name, version)[0]
            self._check_unused(conn, record, "archive")
            if record.status != "archived":
                repo.set_status(conn, name, version, "archived")
                repo.add_audit(conn, self.actor, "version.archived", name, version, {})
            return self._version(conn, name, version)[0]

    def unarchive(self, name: str, version: int) -> ModelVersion:
        """Bring an archived version back: it may serve and take aliases again."""
        with self.database.transaction() as conn:
            record = self._version(conn, name, version)[0]
            if record.status == "archived":
                repo.set_status(conn, name, version, "ready")
                repo.add_audit(conn, self.actor, "version.unarchived", name, version, {})
            return self._version(conn, name, version)[0]

    def delete(self, name: str, version: int | None = None) -> list[int]:
        """Delete one version, or the model with all its versions; returns the versions deleted.

        Refused while a version to delete has an alias or serves in the live deployment. The
        bundle files go, and with a whole model its prediction logs (a model registered again
        under the name starts at version 1 again); the audit trail keeps the record of what was
        deleted and by whom. A deleted version's logs stay with its model (numbers are never
        handed out twice within a model).
        """
        with self.database.transaction() as conn:
            if version is not None:
                record = self._version(conn, name, version)[0]
                self._check_unused(conn, record, "delete")
                repo.delete_version(conn, name, version)
                repo.add_audit(
                    conn, self.actor, "version.deleted", name, version,
                    {"bundle": record.bundle_path, "created_by": record.created_by},
                )  # fmt: skip
                deleted = [version]
            else:
                model = repo.get_model(conn, validate_model_name(name))
                if model is None:
                    raise self._model_not_found(conn, name)
                records = repo.list_versions(conn, name)
                for record in records:
                    self._check_unused(conn, record, "delete")
                deleted = [r.version for r in records]
                repo.delete_model(conn, name)
                repo.add_audit(
                    conn, self.actor, "model.deleted", name, None, {"versions": deleted}
                )  # fmt: skip
        # files last: a failure here leaves unreferenced files, never records without files
        if version is not None:
            self.artifacts.delete_tree(bundle_prefix(name, version))
            self.artifacts.clear_cache(bundle_prefix(name, version))
        else:
            self.artifacts.delete_tree(f"models/{name}")
            self.artifacts.clear_cache(f"models/{name}")
            # a model registered again under this name starts at version 1: its logs must not
            # mix with the deleted model's
            self.artifacts.delete_tree(f"logs/predictions/model={name}")
        return deleted

    def _check_unused(self, conn: Any, record: ModelVersion, action: str) -> None:
        name, version = record.name, record.version
        deployment = repo.current_deployment(conn, name)
        if deployment is not None and version in deployment.versions:
            raise Conflict(
                f"cannot {action} {name}:{version}: it serves in deployment revision "
                f"{deployment.revision} ({deployment.describe()}); deploy without it first "
                f"(shipyard deploy {name} ..., or shipyard deploy {name} --stop)"
            )
        if record.aliases:
            first = record.aliases[0]
            raise Conflict(
                f"cannot {action} {name}:{version}: it is the "
                f"{', '.join(map(repr, record.aliases))} version; move the alias first "
                f"(shipyard models alias {name} OTHER_VERSION {first}, or "
                f"shipyard models alias {name} {version} {first} --remove)"
            )
