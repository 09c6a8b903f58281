"""Training the demo's fraud models: what a data scientist hands over to shipyard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shipyard.demo._data import FEATURES, LABEL

__all__ = ["Trained", "evaluate", "train_boosted", "train_logistic"]

NUMERIC = [f for f in FEATURES if f != "merchant_category"]


@dataclass
class Trained:
    """A fitted model with its holdout metrics and the threshold a fraud team would pick."""

    model: Any
    metrics: dict[str, float]
    threshold: float
    description: str
    params: dict[str, Any]


def evaluate(
    model: Any, test: pd.DataFrame, review_share: float = 0.02
) -> tuple[dict[str, float], float]:
    """Holdout metrics at the threshold that flags the riskiest `review_share` of transactions."""
    from sklearn.metrics import (
        average_precision_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    scores = model.predict_proba(test[FEATURES])[:, 1]
    threshold = float(np.quantile(scores, 1 - review_share))
    flagged = scores >= threshold
    metrics = {
        "auc": round(float(roc_auc_score(test[LABEL], scores)), 4),
        "average_precision": round(float(average_precision_score(test[LABEL], scores)), 4),
        "precision": round(float(precision_score(test[LABEL], flagged, zero_division=0)), 4),
        "recall": round(float(recall_score(test[LABEL], flagged)), 4),
    }
    return metrics, round(threshold, 6)


def train_logistic(train: pd.DataFrame, test: pd.DataFrame) -> Trained:
    """Imputer + scaler + one-hot + logistic regression: the first production model."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    features = ColumnTransformer(
        [
            ("numeric", numeric, NUMERIC),
            ("category", OneHotEncoder(handle_unknown="ignore"), ["merchant_category"]),
        ]
    )
    model = Pipeline(
        [("features", features), ("classifier", LogisticRegression(max_iter=2000, C=0.5))]
    )
    model.fit(train[FEATURES], train[LABEL])
    metrics, threshold = evaluate(model, test)
    return Trained(
        model, metrics, threshold, "Logistic regression on 11 transaction and customer features",
        {"classifier": "LogisticRegression", "C": 0.5, "max_iter": 2000},
    )  # fmt: skip


def train_boosted(train: pd.DataFrame, test: pd.DataFrame) -> Trained:
    """Gradient-boosted trees: the challenger that will be canaried against the champion."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    features = ColumnTransformer(
        [
            ("numeric", "passthrough", NUMERIC),
            (
                "category",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                ["merchant_category"],
            ),
        ]
    )
    params = {"max_iter": 150, "learning_rate": 0.08, "max_leaf_nodes": 15, "random_state": 7}
    model = Pipeline(
        [("features", features), ("classifier", HistGradientBoostingClassifier(**params))]
    )
    model.fit(train[FEATURES], train[LABEL])
    metrics, threshold = evaluate(model, test)
    return Trained(
        model, metrics, threshold, "Gradient-boosted trees on the same 11 features", params
    )
