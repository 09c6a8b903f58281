"""The model registry: versions stored as verified bundles, aliases, and an audit trail."""

from __future__ import annotations

from shipyard.registry._bundle import LoadedBundle
from shipyard.registry._deployments import ROLES, Deployment, Role, Variant
from shipyard.registry._records import AliasMove, AuditEvent, Model, ModelVersion
from shipyard.registry._registry import Registry
from shipyard.registry._served import BundleRef, PredictionResult, ServedModel
from shipyard.registry._served import feature_refs as served_feature_refs
from shipyard.registry._served import shape as shape_prediction

__all__ = [
    "ROLES",
    "AliasMove",
    "AuditEvent",
    "BundleRef",
    "Deployment",
    "LoadedBundle",
    "Model",
    "ModelVersion",
    "PredictionResult",
    "Registry",
    "Role",
    "ServedModel",
    "Variant",
    "served_feature_refs",
    "shape_prediction",
]
