"""Foundation types shared by every layer: errors, settings, ids, signatures, profiles."""

from __future__ import annotations

from shipyard.core import errors
from shipyard.core.config import Settings
from shipyard.core.ids import (
    MAX_VERSION,
    ModelRef,
    new_id,
    new_ids,
    parse_version,
    validate_alias,
    validate_model_name,
)
from shipyard.core.profile import fingerprint, profile, reference_sample
from shipyard.core.signature import Columns, ColumnSpec, ColumnType, Signature

__all__ = [
    "MAX_VERSION",
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
    "parse_version",
    "profile",
    "reference_sample",
    "validate_alias",
    "validate_model_name",
]
