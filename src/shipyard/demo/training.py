"""The fraud model's training entrypoint, as a team would keep it next to `shipyard.yaml`:

    models:
      fraud-detector:
        train: shipyard.demo.training:train

It takes the training frame (features and the `is_fraud` label) and the params, and returns
a fitted model; shipyard does the rest (data, tracking, validation, registration, rollout).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from shipyard.demo._data import FEATURES, LABEL

__all__ = ["train"]


def train(frame: pd.DataFrame, params: dict[str, Any]) -> Any:
    """Imputer + scaler + one-hot + logistic regression, fitted on `frame`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f for f in FEATURES if f != "merchant_category"]
    features = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            ("category", OneHotEncoder(handle_unknown="ignore"), ["merchant_category"]),
        ]
    )
    model = Pipeline(
        [
            ("features", features),
            (
                "classifier",
                LogisticRegression(
                    C=float(params.get("C", 0.5)), max_iter=int(params.get("max_iter", 2000))
                ),
            ),
        ]
    )
    return model.fit(frame[FEATURES], frame[LABEL].astype(int))
