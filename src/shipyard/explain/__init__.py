"""Why a model answered what it did: per-feature contributions that add up to its output, the
method chosen by what the model is (exact for linear models and tree ensembles, sampled for
anything else); what a version relies on overall, and how that moved."""

from __future__ import annotations

from shipyard.explain._explainers import (
    Attributions,
    Explainer,
    attribution_shift,
    compare_importance,
    explainer_for,
    global_importance,
)

__all__ = [
    "Attributions",
    "Explainer",
    "attribution_shift",
    "compare_importance",
    "explainer_for",
    "global_importance",
]
