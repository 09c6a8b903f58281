"""The model registry: versions, bundles, aliases and the audit trail behind them."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow.parquet as pq

from shipyard.core import (
    ModelRef,
    Settings,
    Signature,
    fingerprint,
    profile,
    reference_sample,
    validate_alias,
    validate_model_name,
)
from shipyard.core.errors import (
    AliasNotFound,
    Conflict,
    InvalidInput,
    ModelNotFound,
    VersionArchived,
    VersionNotFound,
)
from shipyard.core.version import __version__
from shipyard.registry import _repository as repo
from shipyard.registry._bundle import (
    LoadedBundle,
    bundle_prefix,
    open_bundle,
    upload_bundle,
    write_json,
    write_metadata,
)
from shipyard.registry._deployments import Deployment, Variant, plan
from shipyard.registry._records import AliasMove, AuditEvent, Model, ModelVersion
from shipyard.runtime import is_mlflow_dir, mlflow_signature, package
from shipyard.store import ArtifactStore, Database, utcnow
from shipyard.tracking import active_run

__all__ = ["Registry"]

SAMPLE_ROWS_CHECKED = 1000
PROFILE_ROWS = 200_000
REFERENCE_ROWS = 100_000


class Registry:
    """Registers model versions and answers what is registered.

    Args:
        database: the metadata database.
        artifacts: where bundles are stored.
        actor: who is acting, recorded on every change.
    """

    def __init__(
        self, database: Database, artifacts: ArtifactStore, *, actor: str = "unknown"
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.actor = actor

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        database = Database(
            settings.resolved_database_url, auto_migrate=settings.should_auto_migrate
        )
        artifacts = ArtifactStore(settings.resolved_artifact_root, cache_dir=settings.cache_dir)
        return cls(database, artifacts, actor=settings.actor)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.close()

    # -- registering ------------------------------------------------------------------------

    def register(
        self,
        model: Any,
        *,
        name: str,
        sample: Any = None,
        metrics: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        description: str = "",
        purpose: str = "",
        features: Iterable[str] | None = None,
        training_data: Any = None,
        threshold: float | None = None,
        signature: Signature | Mapping[str, Any] | None = None,
        aliases: Iterable[str] = (),
        run_id: str | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Register `model` as the next version of `name`.

        The bundle is written completely before the version becomes visible; if anything fails
        on the way, the half-written bundle is removed and no version appears.

        Args:
            model: a fitted scikit-learn estimator or pipeline, LightGBM or XGBoost model, an
                ONNX `ModelProto`, or the path of an MLflow model directory.
            name: the model's name, e.g. `fraud-detector`.
            sample: rows of training features (DataFrame, Arrow table, records, 2-D array). It
                fixes the input signature, must score without error, checks the ONNX fast path,
                and is the reference profile unless `training_data` is given.
            metrics: evaluation metrics, e.g. `{"auc": 0.94}`.
            params: hyperparameters, stored as config.json.
            tags: free-form labels.
            description: what the model is.
            purpose: what the model is for (the business decision it drives).
            features: the features the model uses (default: the signature's columns).
            training_data: the training set (a frame or a path) to fingerprint and profile.
            threshold: score at or above which a binary classifier answers the positive class
                (default 0.5).
            signature: an explicit signature instead of inferring one from `sample`.
            aliases: aliases to point at the new version once it is registered.
            run_id: the tracking run that trained the model (default: the run a
                `with shipyard.start_run(...)` block around this call opened).
            lineage: where the version comes from, e.g. `{"parent": 3, "trigger": {...}}`.
        """
        validate_model_name(name)
        alias_list = [validate_alias(a) for a in aliases]
        sig = self._signature(model, sample, signature)
        if sample is None:
            raise InvalidInput(
                "register() needs sample=: a few rows of the training features; they fix the "
                "input signature, prove the model scores, and check the ONNX fast path"
            )
        checked = sig.validate_frame(_head(sample, SAMPLE_ROWS_CHECKED))
        threshold = _threshold(threshold)

        with self.database.transaction() as conn:
            repo.ensure_model(conn, name, self.actor, description)
            version = repo.allocate_version(conn, name)
            repo.insert_pending_version(conn, name, version, self.actor)

        prefix = bundle_prefix(name, version)
        try:
            record = self._write_bundle(
                model,
                name,
                version,
                sig,
                checked,
                sample,
                training_data,
                prefix,
                metrics=dict(metrics or {}),
                params=dict(params or {}),
                tags=dict(tags or {}),
                description=description,
                purpose=purpose,
                threshold=threshold,
                features=list(features) if features is not None else sig.names,
            )
            run = active_run()
            record["run_id"] = run_id or (run.id if run is not None else None)
            record["lineage"] = dict(lineage) if lineage is not None else None
            with self.database.transaction() as conn:
                repo.finalise_version(conn, name, version, record)
                repo.add_audit(
                    conn,
                    self.actor,
                    "version.registered",
                    name,
                    version,
                    {
                        "flavour": record["flavour"],
                        "runtime": record["runtime"],
                        "metrics": record["metrics"],
                        "data_fingerprint": record["data_fingerprint"],
                        "run": record["run_id"],
                        "lineage": record["lineage"],
                    },
                )
                for alias in alias_list:
                    self._move_alias(conn, name, alias, version)
            if run is not None and run_id in (None, run.id):
                run.set_tag("registered", f"{name}:{version}")
        except BaseException:
            self.artifacts.delete_tree(prefix)
            with self.database.transaction() as conn:
                repo.delete_version(conn, name, version)
            raise
        return self.get_version(name, version)

    def _signature(
        self, model: Any, sample: Any, signature: Signature | Mapping[str, Any] | None
    ) -> Signature:
        if isinstance(signature, Signature):
            return signature
        if signature is not None:
            return Signature.from_dict(signature)
        if sample is not None:
            return Signature.infer(sample)
        if is_mlflow_dir(model):
            declared = mlflow_signature(Path(model))
            if declared is not None:
                return declared
        raise InvalidInput(
            "register() needs sample=: a few rows of the training features; they fix the input "
            "signature, prove the model scores, and check the ONNX fast path"
        )

    def _write_bundle(
        self,
        model: Any,
        name: str,
        version: int,
        sig: Signature,
        checked: Any,
        sample: Any,
        training_data: Any,
        prefix: str,
        **fields: Any,
    ) -> dict[str, Any]:
        data_for_profile = (
            training_data
            if training_data is not None and not isinstance(training_data, str | Path)
            else sample
        )
        folder = Path(tempfile.mkdtemp(prefix="shipyard-bundle-"))
        try:
            packaged = package(model, sig, checked, folder / "model")
            if packaged.onnx is not None:
                (folder / "model.onnx").write_bytes(packaged.onnx)
            write_json(folder / "config.json", fields["params"])
            (folder / "requirements.txt").write_text("\n".join(packaged.requirements) + "\n")
            write_json(
                folder / "reference" / "profile.json",
                profile(_head(data_for_profile, PROFILE_ROWS), sig),
            )
            # rows for drift tests against live traffic (a profile cannot give a KS test)
            pq.write_table(
                reference_sample(data_for_profile, sig, REFERENCE_ROWS),
                folder / "reference" / "sample.parquet",
                compression="zstd",
            )
            data_fp = fingerprint(training_data if training_data is not None else sample)
            created_at = utcnow()
            metadata = {
                "format": 1,
                "shipyard_version": __version__,
                "name": name,
                "version": version,
                "created_at": created_at.isoformat(),
                "creator": self.actor,
                "signature": sig.to_dict(),
                "data_fingerprint": data_fp,
                "model": packaged.info.to_dict(),
                "runtime": packaged.runtime,
                "onnx": packaged.onnx_report,
                **fields,
            }
            write_metadata(folder, metadata)
            metadata_sha, size = upload_bundle(self.artifacts, folder, prefix)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return {
            "created_at": created_at,
            "description": fields["description"],
            "purpose": fields["purpose"],
            "flavour": packaged.info.flavour,
            "runtime": packaged.runtime,
            "task": packaged.info.task,
            "threshold": fields["threshold"] if packaged.info.task == "binary" else None,
            "signature": sig.to_dict(),
            "metrics": fields["metrics"],
            "params": fields["params"],
            "tags": fields["tags"],
            "features": fields["features"],
            "data_fingerprint": data_fp,
            "bundle_path": prefix,
            "metadata_sha256": metadata_sha,
            "size_bytes": size,
        }

    # -- reading ----------------------------------------------------------------------------

    def list_models(self) -> list[Model]:
        with self.database.transaction() as conn:
            return repo.list_models(conn)

    def get_model(self, name: str) -> Model:
        with self.database.transaction() as conn:
            model = repo.get_model(conn, validate_model_name(name))
            if model is None:
                raise self._model_not_found(conn, name)
            return model

    def list_versions(self, name: str) -> list[ModelVersion]:
        with self.database.transaction() as conn:
            if repo.get_model(conn, validate_model_name(name)) is None:
                raise self._model_not_found(conn, name)
            return repo.list_versions(conn, name)

    def get_version(self, name: str, version: int) -> ModelVersion:
        with self.database.transaction() as conn:
            return self._version(conn, name, version)[0]

    def _version(self, conn: Any, name: str, version: int) -> tuple[ModelVersion, str]:
        found = repo.get_version(conn, validate_model_name(name), version)
        if found is not None:
            return found
        if repo.get_model(conn, name) is None:
            raise self._model_not_found(conn, name)
        versions = [v.version for v in repo.list_versions(conn, name)]
        have = f"versions are {_ranges(versions)}" if versions else "it has no versions yet"
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
            "`shipyard models register PATH --name NAME`)"
        )

    def resolve(self, ref: str | ModelRef, *, default_alias: str = "production") -> ModelVersion:
        """The version a `name`, `name:3` or `name:alias` reference points at."""
        parsed = ModelRef.parse(ref) if isinstance(ref, str) else ref
        with self.database.transaction() as conn:
            if parsed.version is not None:
                return self._version(conn, parsed.name, parsed.version)[0]
            alias = parsed.alias or default_alias
            version = repo.get_alias(conn, parsed.name, alias)
            if version is None:
                if repo.get_model(conn, parsed.name) is None:
                    raise self._model_not_found(conn, parsed.name)
                raise AliasNotFound(
                    f"model {parsed.name!r} has no {alias!r} alias; point it at a version with "
                    f"`shipyard models alias {parsed.name} VERSION {alias}`"
                )
            return self._version(conn, parsed.name, version)[0]

    def history(self, name: str | None = None, *, limit: int = 500) -> list[AuditEvent]:
        """Audit events, newest first, for one model or all."""
        with self.database.transaction() as conn:
            if name is not None and repo.get_model(conn, validate_model_name(name)) is None:
                raise self._model_not_found(conn, name)
            return repo.audit_trail(conn, name, limit)

    def open(self, name: str, version: int) -> LoadedBundle:
        """Verify and load a version's bundle (every file checked against its SHA-256)."""
        with self.database.transaction() as conn:
            record, metadata_sha = self._version(conn, name, version)
        if record.status == "archived":
            raise VersionArchived(
                f"{name}:{version} is archived and does not serve; register a new version or "
                f"point an alias at another one (shipyard models show {name})"
            )
        return open_bundle(self.artifacts, record.bundle_path, metadata_sha)

    def metadata(self, name: str, version: int) -> dict[str, Any]:
        """A version's metadata.json (checked against the registry's SHA-256)."""
        with self.database.transaction() as conn:
            record, metadata_sha = self._version(conn, name, version)
        manifest: dict[str, Any] = json.loads(
            self.artifacts.read_bytes(f"{record.bundle_path}/metadata.json", metadata_sha)
        )
        return manifest

    def read_artifact(self, name: str, version: int, path: str) -> bytes | None:
        """One file of a version's bundle (e.g. `reference/sample.parquet`), SHA-256 checked;
        None when the bundle has no such file (older bundles)."""
        with self.database.transaction() as conn:
            record, metadata_sha = self._version(conn, name, version)
        manifest = json.loads(
            self.artifacts.read_bytes(f"{record.bundle_path}/metadata.json", metadata_sha)
        )
        digest = manifest.get("files", {}).get(path)
        if digest is None:
            return None
        return self.artifacts.read_bytes(f"{record.bundle_path}/{path}", digest)

    # -- changing ---------------------------------------------------------------------------

    def set_alias(self, name: str, version: int, alias: str) -> AliasMove:
        """Point `alias` at `version` atomically, recording the move in the audit trail."""
        validate_alias(alias)
        with self.database.transaction() as conn:
            record = self._version(conn, name, version)[0]
            if record.status == "archived":
                raise VersionArchived(
                    f"{name}:{version} is archived; an alias can only point at a live version"
                )
            return self._move_alias(conn, name, alias, version)

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
            if record.aliases:
                first = record.aliases[0]
                raise Conflict(
                    f"{name}:{version} is the {', '.join(map(repr, record.aliases))} version; move "
                    f"the alias first (shipyard models alias {name} OTHER_VERSION {first})"
                )
            deployment = repo.current_deployment(conn, name)
            if deployment is not None and version in deployment.versions:
                raise Conflict(
                    f"{name}:{version} serves in deployment revision {deployment.revision} "
                    f"({deployment.describe()}); deploy without it first (shipyard deploy {name} ...)"
                )
            if record.status != "archived":
                repo.set_status(conn, name, version, "archived")
                repo.add_audit(conn, self.actor, "version.archived", name, version, {})
        return self.get_version(name, version)

    # -- deployments ------------------------------------------------------------------------

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
                raise VersionArchived(f"{name}:{version} is archived and cannot serve")
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
                if self._version(conn, name, variant.version)[0].status == "archived":
                    raise VersionArchived(
                        f"cannot roll back to revision {target.revision}: {name}:{variant.version} "
                        "was archived since"
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
        repo.add_audit(conn, self.actor, action, name, deployment.primary.version, {
            "revision": revision,
            "variants": [v.to_dict() for v in variants],
            "from": current.describe() if current is not None else None,
            "to": deployment.describe(),
            "reason": reason,
        })  # fmt: skip
        if repo.get_alias(conn, name, "production") != deployment.primary.version:
            self._move_alias(conn, name, "production", deployment.primary.version)
        return deployment

    def deployment(self, name: str) -> Deployment | None:
        """The live deployment of `name`, or None if it was never deployed."""
        with self.database.transaction() as conn:
            if repo.get_model(conn, validate_model_name(name)) is None:
                raise self._model_not_found(conn, name)
            return repo.current_deployment(conn, name)

    def deployment_history(self, name: str, *, limit: int = 50) -> list[Deployment]:
        """Deployment revisions of `name`, newest first."""
        with self.database.transaction() as conn:
            if repo.get_model(conn, validate_model_name(name)) is None:
                raise self._model_not_found(conn, name)
            return repo.deployment_history(conn, name, limit)

    def serving_plan(self, alias: str = "production") -> dict[str, Deployment]:
        """What every model serves now: its deployment, or else its `alias` as sole primary.

        One transaction, so a server swaps to a consistent picture of all models at once.
        """
        with self.database.transaction() as conn:
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
            return plans


def _head(data: Any, rows: int) -> Any:
    if hasattr(data, "iloc"):
        return data.iloc[:rows]
    if hasattr(data, "slice") and hasattr(data, "schema"):
        return data.slice(0, rows)
    if isinstance(data, list):
        return data[:rows]
    if hasattr(data, "shape"):
        return data[:rows]
    return data


def _threshold(value: float | None) -> float:
    if value is None:
        return 0.5
    if not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(f"threshold must be between 0 and 1, got {value}")
    return float(value)


def _ranges(versions: list[int]) -> str:
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
