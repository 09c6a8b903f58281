"""Foundation storage: the metadata database (SQLAlchemy + Alembic) and the artifact store (fsspec)."""

from __future__ import annotations

from shipyard.store import tables
from shipyard.store._artifacts import ArtifactStore, StoredFile, sha256_file
from shipyard.store._audit import record_audit
from shipyard.store._database import Database, utcnow
from shipyard.store._jobs import Job, JobQueue

__all__ = [
    "ArtifactStore",
    "Database",
    "Job",
    "JobQueue",
    "StoredFile",
    "record_audit",
    "sha256_file",
    "tables",
    "utcnow",
]
