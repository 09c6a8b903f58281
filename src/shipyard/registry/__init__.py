"""The model registry: versions stored as verified bundles, aliases, and an audit trail."""

from __future__ import annotations

from shipyard.registry._bundle import LoadedBundle
from shipyard.registry._deployments import ROLES, Deployment, Role, Variant
from shipyard.registry._records import AliasMove, AuditEvent, Model, ModelVersion
from shipyard.registry._registry import Registry

__all__ = [
    "ROLES",
    "AliasMove",
    "AuditEvent",
    "Deployment",
    "LoadedBundle",
    "Model",
    "ModelVersion",
    "Registry",
    "Role",
    "Variant",
]
