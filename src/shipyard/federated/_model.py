"""The model sites train together: a logistic regression on standardised features, trained
locally by L-BFGS on the log-loss with an L2 penalty and, for FedProx, a proximal term that
keeps a site's weights near the global ones. Only numpy and scipy: what a site sends is its
weights, never its rows.

    statistics(X)          -> count, sums, squares   (once, to standardise every site alike)
    standardiser(stats)    -> mean, scale
    fit_local(...)         -> weights, intercept
    scores(...)            -> loss, accuracy, AUC on a site's holdout
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fit_local", "scores", "standardiser", "statistics"]


def statistics(X: np.ndarray) -> list[np.ndarray]:
    """What a site shares once, before training: its row count and each feature's sum and sum
    of squares (aggregates, no row)."""
    return [np.array([len(X)], dtype=np.float64), X.sum(axis=0), (X**2).sum(axis=0)]


def standardiser(parts: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The pooled mean and standard deviation from every site's statistics (a constant feature
    keeps scale 1)."""
    count = sum(float(p[0][0]) for p in parts)
    sums = np.sum([p[1] for p in parts], axis=0)
    squares = np.sum([p[2] for p in parts], axis=0)
    mean = sums / count
    variance = np.maximum(squares / count - mean**2, 0.0)
    scale = np.sqrt(variance)
    scale[scale == 0] = 1.0
    return mean, scale


def _loss_and_gradient(
    theta: np.ndarray, Z: np.ndarray, y: np.ndarray, alpha: float, mu: float, anchor: np.ndarray
) -> tuple[float, np.ndarray]:
    w, b = theta[:-1], theta[-1]
    margin = Z @ w + b
    loss = float(np.mean(np.logaddexp(0.0, margin) - y * margin))
    residual = (1.0 / (1.0 + np.exp(-margin)) - y) / len(y)
    gradient = np.append(Z.T @ residual, residual.sum())
    loss += 0.5 * alpha * float(w @ w)
    gradient[:-1] += alpha * w
    if mu > 0:
        moved = theta - anchor
        loss += 0.5 * mu * float(moved @ moved)
        gradient += mu * moved
    return loss, gradient


def fit_local(
    Z: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    intercept: float,
    *,
    alpha: float,
    mu: float,
    steps: int,
) -> tuple[np.ndarray, float]:
    """`steps` L-BFGS iterations from the global model on a site's standardised rows."""
    from scipy.optimize import minimize

    anchor = np.append(weights, intercept)
    found = minimize(
        _loss_and_gradient, anchor, args=(Z, y, alpha, mu, anchor), jac=True, method="L-BFGS-B",
        options={"maxiter": steps},
    )  # fmt: skip
    theta = np.asarray(found.x, dtype=np.float64)
    return theta[:-1], float(theta[-1])


def scores(Z: np.ndarray, y: np.ndarray, weights: np.ndarray, intercept: float) -> dict[str, Any]:
    """Log-loss, accuracy and AUC (when both classes are present) of the model on rows."""
    from sklearn.metrics import roc_auc_score

    margin = Z @ weights + intercept
    loss = float(np.mean(np.logaddexp(0.0, margin) - y * margin))
    accuracy = float(np.mean((margin >= 0) == (y == 1)))
    out: dict[str, Any] = {"loss": loss, "accuracy": accuracy}
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, margin))
    return out
