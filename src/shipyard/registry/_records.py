"""What the registry hands out: plain, immutable records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shipyard.core import Signature

__all__ = ["AliasMove", "AuditEvent", "Model", "ModelVersion"]


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model."""

    name: str
    version: int
    status: str
    created_at: datetime
    created_by: str
    description: str
    purpose: str
    flavour: str
    runtime: str
    task: str
    threshold: float | None
    signature: Signature
    metrics: dict[str, Any]
    params: dict[str, Any]
    tags: dict[str, Any]
    features: list[str]
    data_fingerprint: dict[str, Any] | None
    bundle_path: str
    size_bytes: int
    aliases: tuple[str, ...] = ()
    run_id: str | None = None
    lineage: dict[str, Any] | None = None
    importance: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "aliases": list(self.aliases),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "description": self.description,
            "purpose": self.purpose,
            "flavour": self.flavour,
            "runtime": self.runtime,
            "task": self.task,
            "threshold": self.threshold,
            "signature": self.signature.to_dict(),
            "metrics": self.metrics,
            "params": self.params,
            "tags": self.tags,
            "features": self.features,
            "data_fingerprint": self.data_fingerprint,
            "bundle_path": self.bundle_path,
            "size_bytes": self.size_bytes,
            "run_id": self.run_id,
            "lineage": self.lineage,
            "importance": self.importance,
        }


@dataclass(frozen=True)
class Model:
    """A model name with its versions' summary."""

    name: str
    description: str
    created_at: datetime
    created_by: str
    latest_version: int | None
    version_count: int
    aliases: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "latest_version": self.latest_version,
            "version_count": self.version_count,
            "aliases": self.aliases,
        }


@dataclass(frozen=True)
class AliasMove:
    """An alias pointed at a version; `previous` is where it pointed before (None if new)."""

    name: str
    alias: str
    version: int
    previous: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "previous": self.previous,
        }


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    action: str
    model_name: str | None
    version: int | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "model": self.model_name,
            "version": self.version,
            "details": self.details,
        }
