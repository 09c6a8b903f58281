"""The champion a retrained candidate must beat, as parameters the sites can score on their
holdouts beside the candidate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shipyard.core.errors import InvalidInput

__all__ = ["Champion", "champion_parameters"]


@dataclass(frozen=True)
class Champion:
    """A model the sites score beside the run's last global model, on the same holdout rows:
    its family (`logistic`), the features it takes in order, and `[mean, scale, *weights]`."""

    model: str
    features: list[str]
    parameters: list[np.ndarray]
    classes: list[str] | None = None  # as the champion orders them (its positive class last)


def champion_parameters(estimator: Any, features: list[str]) -> Champion:
    """A registered binary logistic regression (alone or after a `StandardScaler`, as federated
    training registers it) as parameters the sites can score; anything else cannot be scored at
    the sites."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = list(estimator.named_steps.values()) if isinstance(estimator, Pipeline) else [estimator]
    width = len(features)
    mean, scale = np.zeros(width), np.ones(width)
    if len(steps) == 2 and isinstance(steps[0], StandardScaler):
        scaler = steps.pop(0)
        mean = np.asarray(scaler.mean_ if scaler.with_mean else mean, dtype=np.float64)
        scale = np.asarray(scaler.scale_ if scaler.with_std else scale, dtype=np.float64)
    model = steps[0] if len(steps) == 1 else None
    named = getattr(estimator, "feature_names_in_", getattr(model, "feature_names_in_", None))
    if named is not None and [str(n) for n in named] != list(features):
        raise InvalidInput(
            "the champion's columns are not in its signature's order; it cannot be scored on "
            "the sites' holdouts"
        )
    if not isinstance(model, LogisticRegression) or np.asarray(model.coef_).shape != (1, width):
        raise InvalidInput(
            f"the champion ({type(estimator).__name__}) cannot be scored on the sites' holdouts: "
            "shipyard scores a binary logistic regression there (what federated training "
            "registers); drop the gates that compare with the champion"
        )
    weights = [
        np.asarray(model.coef_, dtype=np.float64)[0],
        np.asarray(model.intercept_, dtype=np.float64),
    ]
    classes = [str(c) for c in model.classes_]
    return Champion("logistic", list(features), [mean, scale, *weights], classes)
