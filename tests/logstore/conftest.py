"""A log writer over a spool folder and an artifact store: a local folder, or fsspec's
`memory://` as the stand-in for an object store such as S3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.logstore import LogWriter
from shipyard.store import ArtifactStore


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture(params=["local", "memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """The same contract on a local root and on a remote-like one."""
    if request.param == "local":
        yield ArtifactStore(str(tmp_path / "artifacts"))
        return
    remote = ArtifactStore(f"memory://shipyard-tests-{uuid.uuid4().hex}")
    assert not remote.is_local
    yield remote
    remote.delete_tree("")


@pytest.fixture
def writer(spool_dir: Path, any_store: ArtifactStore) -> Iterator[LogWriter]:
    """A writer that is not started: the test flushes it by hand."""
    log_writer = LogWriter(spool_dir, any_store, fsync_seconds=0)
    yield log_writer
    log_writer.close()
