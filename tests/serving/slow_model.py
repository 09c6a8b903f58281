"""A real scikit-learn classifier that takes its time: for overload and deadline tests."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class SlowClassifier(ClassifierMixin, BaseEstimator):
    """Scores `x0 > 0`; every call sleeps `delay` seconds, or fails when `fail` is set."""

    def __init__(self, delay: float = 0.05, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail

    def fit(self, X: Any, y: Any) -> SlowClassifier:
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("this model always fails")
        x = np.asarray(X, dtype=float)[:, 0]
        p = 1.0 / (1.0 + np.exp(-x))
        return np.column_stack([1 - p, p])
