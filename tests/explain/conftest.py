"""The runtime tests' small synthetic data, for models to explain."""

from __future__ import annotations

from tests.runtime.conftest import (  # noqa: F401  (fixtures, found by name)
    binary_labels,
    class_labels,
    features,
    frame,
    mixed_frame,
    target,
)
