"""The bundle of a registered version: its files, their hashes, and metadata.json.

model/            the native model file(s)
model.onnx        the fast path, when a conversion agrees with the native model
config.json       hyperparameters
requirements.txt  pinned versions of what the model needs
metadata.json     everything the registry knows, with the sha256 of every other file
reference/        the reference profile of the training data
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.core import Columns, Signature
from shipyard.core.errors import ArtifactCorrupted
from shipyard.explain import Explainer, explainer_for
from shipyard.runtime import ModelInfo, Predictor, load_native, load_predictor
from shipyard.store import ArtifactStore, sha256_file

__all__ = ["LoadedBundle", "bundle_prefix", "open_bundle", "upload_bundle", "write_metadata"]


def bundle_prefix(name: str, version: int) -> str:
    return f"models/{name}/{version}"


def _dumps(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode()


def write_metadata(folder: Path, metadata: dict[str, Any]) -> bytes:
    """Hash every file in `folder`, then write metadata.json listing them; returns its bytes."""
    files = {
        str(p.relative_to(folder).as_posix()): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "metadata.json"
    }
    data = _dumps({**metadata, "files": files})
    (folder / "metadata.json").write_bytes(data)
    return data


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_dumps(data))


def upload_bundle(store: ArtifactStore, folder: Path, prefix: str) -> tuple[str, int]:
    """Copy the bundle into the store; returns metadata.json's SHA-256 and the bundle's size."""
    size = 0
    metadata_sha = ""
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        stored = store.write_file(f"{prefix}/{rel}", path)
        size += stored.size
        if rel == "metadata.json":
            metadata_sha = stored.sha256
    return metadata_sha, size


EXPLAIN_REFERENCE_ROWS = 1_000  # reference rows an explainer is built on (and walks from)


@dataclass
class LoadedBundle:
    metadata: dict[str, Any]
    folder: Path
    predictor: Predictor

    def native(self) -> Any:
        """The model object the flavour loads (a scikit-learn estimator, a booster); None for
        flavours served through a wrapper only."""
        return load_native(self.folder / "model", ModelInfo.from_dict(self.metadata["model"]))

    def explainer(self, signature: Signature, what: str) -> Explainer:
        """How the version explains its answers: built from its native model (the served
        graph cannot tell coefficients and trees) and its reference rows."""
        info = ModelInfo.from_dict(self.metadata["model"])
        return explainer_for(
            self.native(), self.predictor, info, signature, self.reference(signature), what=what
        )

    def reference(self, signature: Signature, rows: int = EXPLAIN_REFERENCE_ROWS) -> Columns | None:
        """The first `rows` of the version's reference sample (drawn at random from its
        training data when it was registered), validated; None when it has none."""
        path = self.folder / "reference" / "sample.parquet"
        if not path.exists():
            return None
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path).iter_batches(batch_size=rows)
        first = next(table, None)
        if first is None:
            return None
        return signature.validate_frame(first.to_pandas())


def open_bundle(store: ArtifactStore, prefix: str, metadata_sha256: str) -> LoadedBundle:
    """Verify metadata.json against the registry, every file against metadata.json, then load."""
    raw = store.read_bytes(f"{prefix}/metadata.json", metadata_sha256)
    try:
        metadata = json.loads(raw)
        files: dict[str, str] = metadata["files"]
    except (ValueError, KeyError):
        raise ArtifactCorrupted(
            f"{prefix}/metadata.json is not a shipyard bundle manifest"
        ) from None
    folder = store.materialise(prefix, files)
    onnx = (folder / "model.onnx").read_bytes() if "model.onnx" in files else None
    predictor = load_predictor(
        folder / "model", ModelInfo.from_dict(metadata["model"]), metadata["runtime"], onnx
    )
    return LoadedBundle(metadata, folder, predictor)
