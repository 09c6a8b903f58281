"""Deployments of a model: which versions serve, with what share, and going back a step."""

from __future__ import annotations

from typing import Any

from shipyard.core import validate_model_name
from shipyard.core.errors import Conflict, VersionArchived
from shipyard.registry import _repository as repo
from shipyard.registry._base import RegistryBase
from shipyard.registry._deployments import Deployment, Variant, plan

__all__ = ["Deploying"]


class Deploying(RegistryBase):
    """Deploy, roll back, stop, and read what serves."""

    def deploy(
        self,
        name: str,
        version: int,
        *,
        canary: float | None = None,
        ab: float | None = None,
        shadow: bool = False,
        routing_field: str | None = None,
        reason: str = "",
    ) -> Deployment:
        """Write the next deployment revision of `name` (see `plan` for what each mode does).

        The `production` alias follows the primary, so the registry and the traffic agree.
        Running servers pick the new revision up within their refresh interval.
        """
        with self.database.transaction() as conn:
            record = self._version(conn, name, version)[0]
            if record.status == "archived":
                raise VersionArchived(
                    f"{name}:{version} is archived and cannot serve "
                    f"(shipyard models unarchive {name}:{version})"
                )
            current = repo.current_deployment(conn, name, lock=True)
            base = current.variants if current is not None else self._alias_variants(conn, name)
            variants = plan(base, version, canary=canary, ab=ab, shadow=shadow)
            field = (
                routing_field
                if routing_field is not None
                else (current.routing_field if current else None)
            )
            return self._write_deployment(
                conn, name, current, variants, field, reason, "deployment.created"
            )

    def stop(self, name: str, *, reason: str = "") -> Deployment:
        """Stop serving `name`: a revision with no versions, and no `production` alias.
        `rollback` brings back what served before."""
        with self.database.transaction() as conn:
            current = repo.current_deployment(conn, validate_model_name(name), lock=True)
            if current is None and repo.get_model(conn, name) is None:
                raise self._model_not_found(conn, name)
            if current is not None and current.stopped:
                return current
            deployment = self._write_deployment(
                conn, name, current, (), current.routing_field if current else None,
                reason or "stopped", "deployment.stopped",
            )  # fmt: skip
            if repo.remove_alias(conn, name, "production") is not None:
                repo.add_audit(
                    conn, self.actor, "alias.removed", name, None,
                    {"alias": "production", "reason": "deployment stopped"},
                )  # fmt: skip
            return deployment

    def rollback(self, name: str, *, reason: str = "") -> Deployment:
        """Return `name` to the deployment before the current one, in one step."""
        with self.database.transaction() as conn:
            current = repo.current_deployment(conn, validate_model_name(name), lock=True)
            if current is None or current.previous_revision is None:
                if repo.get_model(conn, name) is None:
                    raise self._model_not_found(conn, name)
                raise Conflict(
                    f"model {name!r} has no earlier deployment to roll back to (shipyard deploy {name} --history)"
                )
            target = repo.deployment_at(conn, name, current.previous_revision)
            assert target is not None
            for variant in target.variants:
                found = repo.get_version(conn, name, variant.version)
                if found is None or found[0].status == "archived":
                    state = "deleted" if found is None else "archived"
                    raise Conflict(
                        f"cannot roll back to revision {target.revision}: {name}:{variant.version} "
                        f"was {state} since"
                    )
            deployment = self._write_deployment(
                conn, name, current, target.variants, target.routing_field,
                reason or f"rollback of revision {current.revision} to {target.revision}",
                "deployment.rolled_back", previous=target.previous_revision,
            )  # fmt: skip
            return deployment

    def _alias_variants(self, conn: Any, name: str) -> tuple[Variant, ...] | None:
        version = repo.get_alias(conn, name, "production")
        return None if version is None else (Variant(version, 100.0, "primary"),)

    def _write_deployment(
        self,
        conn: Any,
        name: str,
        current: Deployment | None,
        variants: tuple[Variant, ...],
        routing_field: str | None,
        reason: str,
        action: str,
        previous: int | None = -1,
    ) -> Deployment:
        revision = current.revision + 1 if current is not None else 1
        previous_revision = (
            (current.revision if current is not None else None) if previous == -1 else previous
        )
        deployment = repo.insert_deployment(
            conn, name, revision, variants, routing_field, previous_revision, self.actor, reason
        )
        primary = None if deployment.stopped else deployment.primary.version
        repo.add_audit(conn, self.actor, action, name, primary, {
            "revision": revision,
            "variants": [v.to_dict() for v in variants],
            "from": current.describe() if current is not None else None,
            "to": deployment.describe(),
            "reason": reason,
        })  # fmt: skip
        if primary is not None and repo.get_alias(conn, name, "production") != primary:
            self._move_alias(conn, name, "production", primary)
        return deployment

    def deployment(self, name: str) -> Deployment | None:
        """The live deployment of `name`, or None if it was never deployed."""

        def query(conn: Any) -> Deployment | None:
            if repo.get_model(conn, validate_model_name(name)) is None:
                raise self._model_not_found(conn, name)
            return repo.current_deployment(conn, name)

        return self.database.read(query)

    def deployment_history(self, name: str, *, limit: int = 50) -> list[Deployment]:
        """Deployment revisions of `name`, newest first."""

        def query(conn: Any) -> list[Deployment]:
            if repo.get_model(conn, validate_model_name(name)) is None:
                raise self._model_not_found(conn, name)
            return repo.deployment_history(conn, name, limit)

        return self.database.read(query)

    def serving_plan(self, alias: str = "production") -> dict[str, Deployment]:
        """What every model serves now: its deployment, or else its `alias` as sole primary.

        One transaction, so a server swaps to a consistent picture of all models at once.
        A stopped deployment serves nothing.
        """

        def query(conn: Any) -> dict[str, Deployment]:
            plans = repo.current_deployments(conn)
            for model in repo.list_models(conn):
                version = model.aliases.get(alias)
                if model.name not in plans and version is not None:
                    plans[model.name] = Deployment(
                        model.name,
                        0,
                        (Variant(version, 100.0, "primary"),),
                        None,
                        None,
                        None,
                        "",
                        f"alias {alias}",
                    )
            return {name: p for name, p in plans.items() if not p.stopped}

        return self.database.read(query)
