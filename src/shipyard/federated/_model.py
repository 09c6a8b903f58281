"""The model sites train together: a logistic regression on standardised features, trained
locally by L-BFGS on the log-loss with an L2 penalty and, for FedProx, a proximal term that
keeps a site's weights near the global ones. Only numpy and scipy: what a site sends is its
weights, never its rows.

    statistics(X)          -> count, sums, squares   (once, to standardise every site alike)
    standardiser(stats)    -> mean, scale
    magnitudes(X), scaled_mean(X, e), scaled_spread(X, mean, d), secure_standardiser(...)
                           -> the same under secure aggregation, in two passes (the mean, then
                              the spread about it): only row-weighted averages reach the server
    fit_local(...)         -> weights, intercept
    scores(...)            -> loss, accuracy, AUC on a site's holdout
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from shipyard.core.errors import InvalidInput

__all__ = [
    "Logistic",
    "Network",
    "family",
    "fit_local",
    "magnitudes",
    "scaled_mean",
    "scaled_spread",
    "scores",
    "secure_standardiser",
    "standardiser",
    "statistics",
]


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


def magnitudes(X: np.ndarray) -> np.ndarray:
    """Each column's binary order of magnitude (max |x| <= 2**e): what a site says in the clear
    so that secure aggregation's fixed range can hold what it sums."""
    exponents: np.ndarray = np.frexp(np.abs(X).max(axis=0))[1].astype(np.float64)
    return exponents


def scaled_mean(X: np.ndarray, exponents: np.ndarray) -> list[np.ndarray]:
    """A site's per-feature mean, scaled into [-1, 1] by the pooled orders of magnitude."""
    return [X.mean(axis=0) / np.exp2(exponents)]


def scaled_spread(X: np.ndarray, mean: np.ndarray, exponents: np.ndarray) -> list[np.ndarray]:
    """A site's per-feature mean squared distance from the pooled mean, scaled into [0, 1] by
    the pooled orders of magnitude of those distances."""
    return [(((X - mean) / np.exp2(exponents)) ** 2).mean(axis=0)]


def secure_standardiser(
    mean: np.ndarray, averaged_spread: np.ndarray, exponents: np.ndarray
) -> np.ndarray:
    """The standard deviation from the row-weighted average of the sites' scaled spreads.
    Centred on the pooled mean first, the spread is precise to about 2**-21 of the largest
    distance from it (not of the values: a feature at 2000 +- 3 keeps its 3); a constant
    feature keeps scale 1."""
    scale: np.ndarray = np.sqrt(np.maximum(averaged_spread, 0.0)) * np.exp2(exponents)
    scale[scale == 0] = 1.0
    return scale


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


def scores(margin: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Log-loss, accuracy and AUC (when both classes are present) of a model's margins (the
    positive class's log-odds) on rows."""
    from sklearn.metrics import roc_auc_score

    loss = float(np.mean(np.logaddexp(0.0, margin) - y * margin))
    accuracy = float(np.mean((margin >= 0) == (y == 1)))
    out: dict[str, Any] = {"loss": loss, "accuracy": accuracy}
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, margin))
    return out


# -- the model families a run can train --------------------------------------------------------


class Logistic:
    """Logistic regression: weights `[w (f,), b (1,)]`, trained by L-BFGS."""

    name = "logistic"

    def initial(self, width: int, rng: np.random.Generator) -> list[np.ndarray]:
        return [np.zeros(width), np.zeros(1)]

    def fit(
        self, Z: np.ndarray, y: np.ndarray, weights: list[np.ndarray], *, alpha: float,
        mu: float, steps: int, seed: int,
    ) -> list[np.ndarray]:  # fmt: skip
        w, b = fit_local(Z, y, weights[0], float(weights[1][0]), alpha=alpha, mu=mu, steps=steps)
        return [w, np.array([b])]

    def margin(self, Z: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        return np.asarray(Z @ weights[0] + weights[1][0], dtype=np.float64)

    def estimator(
        self, features: list[str], classes: list[Any], mean: np.ndarray, scale: np.ndarray,
        weights: list[np.ndarray], rows: int,
    ) -> Any:  # fmt: skip
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        names = np.array(features, dtype=object)
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = mean, scale, scale**2
        scaler.n_features_in_, scaler.feature_names_in_ = len(names), names
        scaler.n_samples_seen_ = rows
        model = LogisticRegression()
        model.coef_ = weights[0].reshape(1, -1)
        model.intercept_ = np.asarray(weights[1], dtype=np.float64).reshape(1)
        model.classes_ = np.array(classes)
        model.n_features_in_ = len(names)
        model.n_iter_ = np.array([0])
        return Pipeline([("standardise", scaler), ("model", model)])


class Network:
    """A PyTorch multilayer perceptron (ReLU hidden layers, one logit out): weights
    `[W1, b1, ..., Wk, bk]` as numpy arrays, trained by Adam with full batches."""

    def __init__(self, hidden: tuple[int, ...]) -> None:
        if not hidden or any(h < 1 or h > 4096 for h in hidden):
            raise InvalidInput(
                "an mlp needs hidden layer widths between 1 and 4096, e.g. mlp:64,32"
            )
        self.hidden = hidden
        self.name = "mlp:" + ",".join(map(str, hidden))

    def initial(self, width: int, rng: np.random.Generator) -> list[np.ndarray]:
        sizes = [width, *self.hidden, 1]
        out: list[np.ndarray] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            bound = 1.0 / np.sqrt(fan_in)  # PyTorch's own Linear initialisation
            out += [
                rng.uniform(-bound, bound, (fan_out, fan_in)),
                rng.uniform(-bound, bound, fan_out),
            ]
        return out

    def _module(self, weights: list[np.ndarray]) -> Any:
        import torch

        layers: list[Any] = []
        for i in range(0, len(weights), 2):
            linear = torch.nn.Linear(weights[i].shape[1], weights[i].shape[0]).double()
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.asarray(weights[i], dtype=np.float64)))
                linear.bias.copy_(torch.from_numpy(np.asarray(weights[i + 1], dtype=np.float64)))
            layers += [linear, torch.nn.ReLU()]
        return torch.nn.Sequential(*layers[:-1])

    def fit(
        self, Z: np.ndarray, y: np.ndarray, weights: list[np.ndarray], *, alpha: float,
        mu: float, steps: int, seed: int,
    ) -> list[np.ndarray]:  # fmt: skip
        import torch

        torch.manual_seed(seed)
        net = self._module(weights)
        anchor = [p.detach().clone() for p in net.parameters()]
        x = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float64))
        target = torch.from_numpy(np.asarray(y, dtype=np.float64))
        optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
        loss_of = torch.nn.BCEWithLogitsLoss()
        for _ in range(steps):
            optimiser.zero_grad()
            loss = loss_of(net(x).reshape(-1), target)
            for p, a in zip(net.parameters(), anchor, strict=True):
                if p.dim() > 1:
                    loss = loss + 0.5 * alpha * (p**2).sum()
                if mu > 0:
                    loss = loss + 0.5 * mu * ((p - a) ** 2).sum()
            loss.backward()
            optimiser.step()
        return [p.detach().numpy().copy() for p in net.parameters()]

    def margin(self, Z: np.ndarray, weights: list[np.ndarray]) -> np.ndarray:
        h = Z
        for i in range(0, len(weights), 2):
            h = h @ weights[i].T + weights[i + 1]
            if i + 2 < len(weights):
                h = np.maximum(h, 0.0)
        return np.asarray(h, dtype=np.float64).reshape(-1)

    def estimator(
        self, features: list[str], classes: list[Any], mean: np.ndarray, scale: np.ndarray,
        weights: list[np.ndarray], rows: int,
    ) -> Any:  # fmt: skip
        """A `TorchModel` (one logit: sigmoid gives the positive class), the standardisation
        folded into its first layer: W (x - mean) / scale + b = (W / scale) x + (b - W mean / scale)."""
        from shipyard.runtime import TorchModel

        first = np.asarray(weights[0], dtype=np.float64) / scale
        folded = [first, weights[1] - first @ mean, *weights[2:]]
        return TorchModel(self._module(folded).float(), classes=list(classes), outputs="logits")


def family(spec: str) -> Logistic | Network:
    """`logistic`, or `mlp:64,32` (the hidden layers' widths)."""
    if spec == "logistic":
        return Logistic()
    kind, _, widths = spec.partition(":")
    if kind == "mlp":
        try:
            hidden = tuple(int(w) for w in (widths or "64").split(","))
        except ValueError:
            raise InvalidInput(
                f"cannot read {spec!r}: name hidden widths, e.g. mlp:64,32"
            ) from None
        return Network(hidden)
    raise InvalidInput(f"model {spec!r} is not known: use logistic or mlp:64,32")
