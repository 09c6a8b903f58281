"""Reading the registry: models, versions, references, the audit trail and bundles."""

from __future__ import annotations

import json
from typing import Any

from shipyard.core import ModelRef, validate_model_name
from shipyard.core.errors import AliasNotFound, VersionArchived
from shipyard.registry import _repository as repo
from shipyard.registry._base import RegistryBase
from shipyard.registry._bundle import LoadedBundle, open_bundle
from shipyard.registry._records import AuditEvent, Model, ModelVersion
from shipyard.registry._served import BundleRef, ServedModel

__all__ = ["Reads"]


class Reads(RegistryBase):
    """What is registered. Every read is retried once on a fresh connection if the database
    dropped the first one."""

    def list_models(self) -> list[Model]:
        return self.database.read(repo.list_models)

    def get_model(self, name: str) -> Model:
        def query(conn: Any) -> Model:
            model = repo.get_model(conn, validate_model_name(name))
            if model is None:
                raise self._model_not_found(conn, name)
            return model

        return self.database.read(query)

    def list_versions(self, name: str) -> list[ModelVersion]:
        def query(conn: Any) -> list[ModelVersion]:
            if repo.get_model(conn, validate_model_name(name)) is None:
                raise self._model_not_found(conn, name)
            return repo.list_versions(conn, name)

        return self.database.read(query)

    def get_version(self, name: str, version: int) -> ModelVersion:
        return self.database.read(lambda conn: self._version(conn, name, version)[0])

    def resolve(self, ref: str | ModelRef, *, default_alias: str = "production") -> ModelVersion:
        """The version a `name`, `name:3` or `name:alias` reference points at."""
        parsed = ModelRef.parse(ref) if isinstance(ref, str) else ref

        def query(conn: Any) -> ModelVersion:
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

        return self.database.read(query)

    def history(self, name: str | None = None, *, limit: int = 500) -> list[AuditEvent]:
        """Audit events, newest first, for one model or all."""

        def query(conn: Any) -> list[AuditEvent]:
            if name is not None and repo.get_model(conn, validate_model_name(name)) is None:
                raise self._model_not_found(conn, name)
            return repo.audit_trail(conn, name, limit)

        return self.database.read(query)

    def open(self, name: str, version: int) -> LoadedBundle:
        """Verify and load a version's bundle (every file checked against its SHA-256)."""
        record, metadata_sha = self.database.read(lambda conn: self._version(conn, name, version))
        if record.status == "archived":
            raise VersionArchived(
                f"{name}:{version} is archived and does not serve; register a new version or "
                f"point an alias at another one (shipyard models show {name})"
            )
        return open_bundle(self.artifacts, record.bundle_path, metadata_sha)

    def load(self, name: str, version: int) -> ServedModel:
        """A version ready to answer: its verified bundle's predictor (ONNX where the bundle has
        a graph that agrees with the native model), record and classes."""
        bundle = self.open(name, version)
        record = self.get_version(name, version)
        return ServedModel(
            record, bundle.predictor, bundle.metadata["model"].get("classes"), bundle
        )

    def bundle_ref(self, name: str, version: int) -> BundleRef:
        """Where the version's bundle lies, for processes that load it without this registry."""
        record, metadata_sha = self.database.read(lambda conn: self._version(conn, name, version))
        if record.status == "archived":
            raise VersionArchived(f"{name}:{version} is archived and does not serve")
        return BundleRef(self.artifacts.root, record, metadata_sha)

    def metadata(self, name: str, version: int) -> dict[str, Any]:
        """A version's metadata.json (checked against the registry's SHA-256)."""
        record, metadata_sha = self.database.read(lambda conn: self._version(conn, name, version))
        manifest: dict[str, Any] = json.loads(
            self.artifacts.read_bytes(f"{record.bundle_path}/metadata.json", metadata_sha)
        )
        return manifest

    def classes(self, name: str, version: int) -> list[Any] | None:
        """A classifier's classes in the order of its scores; None for a regressor."""
        classes: list[Any] | None = self.metadata(name, version)["model"].get("classes")
        return classes

    def positive_class(self, record: ModelVersion) -> Any | None:
        """The positive class of a binary classifier: its second class (scikit-learn's order;
        1 when the bundle does not say), the one a threshold flags. None for other tasks."""
        if record.task != "binary":
            return None
        classes = self.classes(record.name, record.version)
        return classes[1] if classes else 1

    def read_artifact(self, name: str, version: int, path: str) -> bytes | None:
        """One file of a version's bundle (e.g. `reference/sample.parquet`), SHA-256 checked;
        None when the bundle has no such file (older bundles)."""
        record = self.get_version(name, version)
        digest = self.metadata(name, version).get("files", {}).get(path)
        if digest is None:
            return None
        return self.artifacts.read_bytes(f"{record.bundle_path}/{path}", digest)
