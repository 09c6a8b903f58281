"""Foundation types shared by every layer: errors, settings, ids, signatures, profiles."""

from __future__ import annotations

from shipyard.core import errors
from shipyard.core.config import Settings
from shipyard.core.ids import ModelRef, new_id, new_ids, validate_alias, validate_model_name
from shipyard.core.profile import fingerprint, profile, reference_sample
from shipyard.core.signature import Columns, ColumnSpec, ColumnType, Signature

__all__ = [
    "ColumnSpec",
    "ColumnType",
    "Columns",
    "ModelRef",
    "Settings",
    "Signature",
    "errors",
    "fingerprint",
    "new_id",
    "new_ids",
    "profile",
    "reference_sample",
    "validate_alias",
    "validate_model_name",
]
