"""Model optimisation: quantise, prune and distil a registered version into a smaller, faster
one behind an accuracy gate, and export it for devices.

    report = Optimizer(registry).run("fraud-detector:3", quantize="int8", holdout="holdout.parquet")
"""

from __future__ import annotations

from shipyard.optimize._distill import Student, parse_student
from shipyard.optimize._export import PROFILES, ExportResult, Profile, export_edge
from shipyard.optimize._measure import Figures
from shipyard.optimize._optimize import (
    DEFAULT_MAX_LOSS,
    OptimizationReport,
    Optimizer,
    Outcome,
    parse_max_loss,
)
from shipyard.optimize._quantize import QUANTIZE_METHODS
from shipyard.optimize._runner import EdgeModel, ExportCorrupted

__all__ = [
    "DEFAULT_MAX_LOSS",
    "PROFILES",
    "QUANTIZE_METHODS",
    "EdgeModel",
    "ExportCorrupted",
    "ExportResult",
    "Figures",
    "OptimizationReport",
    "Optimizer",
    "Outcome",
    "Profile",
    "Student",
    "export_edge",
    "parse_max_loss",
    "parse_student",
]
