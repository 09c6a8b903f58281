from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shipyard.core.errors import ArtifactCorrupted
from shipyard.store import ArtifactStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """A local folder, and fsspec's in-memory filesystem standing in for a remote root."""
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"), cache_dir=tmp_path / "cache")
    root = f"memory://shipyard-test-{tmp_path.name}"
    return ArtifactStore(root, cache_dir=tmp_path / "cache")


def test_write_records_sha256_and_read_verifies(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights" * 1000)
    stored = store.write_file("models/m/1/model.bin", source)
    assert stored.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert stored.size == 7000
    assert store.read_bytes("models/m/1/model.bin", stored.sha256) == source.read_bytes()


def test_a_changed_file_is_refused_naming_the_file(store: ArtifactStore) -> None:
    stored = store.write_bytes("models/m/1/config.json", b'{"a": 1}')
    store.write_bytes("models/m/1/config.json", b'{"a": 2}')  # tampering behind shipyard's back
    with pytest.raises(ArtifactCorrupted, match=r"models/m/1/config\.json.*integrity"):
        store.read_bytes("models/m/1/config.json", stored.sha256)


def test_materialise_verifies_every_file(store: ArtifactStore) -> None:
    a = store.write_bytes("b/x/a.txt", b"a")
    b = store.write_bytes("b/x/sub/b.txt", b"b")
    folder = store.materialise("b/x", {"a.txt": a.sha256, "sub/b.txt": b.sha256})
    assert (folder / "sub" / "b.txt").read_bytes() == b"b"
    store.write_bytes("b/x/sub/b.txt", b"evil")
    store.clear_cache("b/x")
    with pytest.raises(ArtifactCorrupted, match=r"b/x/sub/b\.txt"):
        store.materialise("b/x", {"a.txt": a.sha256, "sub/b.txt": b.sha256})


def test_missing_file_is_reported(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactCorrupted, match="missing"):
        store.read_bytes("nope/x.bin", "0" * 64)


def test_delete_tree_removes_everything_under_a_prefix(store: ArtifactStore) -> None:
    store.write_bytes("models/m/2/a", b"1")
    store.write_bytes("models/m/2/b/c", b"2")
    store.delete_tree("models/m/2")
    assert not store.exists("models/m/2/a")
    assert not store.exists("models/m/2/b/c")
