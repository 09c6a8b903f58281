"""Why a model answered what it did: per-feature contributions that add up to its output.

    explainer_for(native, predictor, info, signature, reference) -> Explainer
    Explainer.explain(columns, budget=...)                       -> Attributions

The method follows from what the model is, best first:

    linear       a linear model, or a pipeline of per-column transforms (imputers, scalers,
                 one-hot and text encoders) ending in one: exact, in the model's margin
                 (log-odds for a logistic classifier)
    tree-shap    LightGBM and XGBoost (their own TreeSHAP), scikit-learn tree ensembles
                 (`shap`'s): exact, in the trees' raw output
    permutation  anything else: permutations of the features walked from reference rows to
                 the row, as many as a time budget allows, each contribution with its
                 standard error; in the model's output (a probability for a classifier)

Each answer adds up: `base + contributions.sum(axis=1) == output`, to rounding for the exact
methods and exactly by construction for the sampled one. A classifier's explained class is
the positive class (binary) or the class the model answers (multiclass).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shipyard.core import Columns, Signature
from shipyard.core.errors import InvalidInput
from shipyard.runtime import ModelInfo, Predictor, columns_to_frame, columns_to_matrix

__all__ = ["Attributions", "Explainer", "explainer_for", "global_importance"]

ADDS_UP = 1e-6  # how closely an exact method's contributions must add up to the model's output
BACKGROUND_ROWS = 32  # reference rows a sampled explanation walks from
MIN_PAIRS = 8  # antithetic permutation pairs a sampled explanation takes, whatever the budget
MAX_PAIRS = 512  # and at most
OWNER_ROWS = 200  # reference rows that show which input column each transformed one follows


@dataclass(frozen=True)
class Attributions:
    """Contributions of each input column to each row's output.

    `values[i, j]` is column `features[j]`'s contribution to row `i`; `base[i]` the output
    expected over the reference data; `output[i] == base[i] + values[i].sum()`. `space` says
    what the output is: `log-odds`, `margin` (a multiclass model's score for the class before
    its softmax), `probability` or `value` (a regressor's answer). `error`: the standard error
    of each contribution (sampled methods only).
    """

    method: str
    exact: bool
    space: str
    features: list[str]
    base: np.ndarray
    values: np.ndarray
    output: np.ndarray
    target: list[Any] | None = None
    error: np.ndarray | None = None
    samples: int | None = None

    def row(self, i: int) -> dict[str, Any]:
        """Row `i` as JSON-ready data."""
        out: dict[str, Any] = {
            "method": self.method,
            "space": self.space,
            "base": float(self.base[i]),
            "output": float(self.output[i]),
            "contributions": {
                f: float(v) for f, v in zip(self.features, self.values[i], strict=True)
            },
        }
        if self.target is not None:
            out["class"] = self.target[i]
        if self.error is not None:
            out["error"] = {f: float(v) for f, v in zip(self.features, self.error[i], strict=True)}
            out["samples"] = self.samples
        return out


class Explainer(Protocol):
    method: str
    exact: bool
    space: str

    def explain(self, columns: Columns, *, budget: float = 0.2) -> Attributions:
        """Attributions for every row of `columns`; `budget` bounds a sampled method's time
        (seconds, for all the rows together)."""
        ...


# -- linear models and pipelines of per-column transforms ------------------------------------


def _dense(matrix: Any) -> np.ndarray:
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=np.float64)


def _owners(transform: Any, frame: Any, order: list[str]) -> np.ndarray | None:
    """For each column `transform` outputs, the one input column it depends on (-1: none seen
    to change it); None when an output depends on several inputs (the model is then not
    additive in its inputs). Found by moving each input column on its own."""
    import pandas as pd

    rows = len(frame)
    moved: list[Any] = [frame]  # the frame, then each probe: one transform call for them all
    probed: list[int] = []  # the input column each probe moves
    for j, name in enumerate(order):
        column = frame[name].to_numpy()
        probes = [np.roll(column, 1), np.roll(column, rows // 2 or 1)]
        if np.issubdtype(column.dtype, np.number):
            probes.append(column + np.nanstd(column.astype(np.float64)) + 1.0)
        for probe in probes:
            copy = frame.copy()
            copy[name] = probe
            moved.append(copy)
            probed.append(j)
    # a fitted transform works row by row, so the stacked copies transform as they would apart
    out = _dense(transform(pd.concat(moved, ignore_index=True)))
    base = out[:rows]
    owners = np.full(base.shape[1], -1)
    for j in range(len(order)):
        changed = np.zeros(base.shape[1], dtype=bool)
        for k in (k for k, owner in enumerate(probed) if owner == j):
            after = out[(k + 1) * rows : (k + 2) * rows]
            changed |= ~np.isclose(after, base, rtol=0, atol=0, equal_nan=True).all(axis=0)
        if (owners[changed] >= 0).any():
            return None
        owners[changed] = j
    return owners


def _steps(model: Any) -> tuple[Any, Any]:
    """The transforms before a pipeline's last step (None for a bare estimator), and that step."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline) and len(model.steps) > 1:
        return model[:-1], model.steps[-1][1]
    if isinstance(model, Pipeline):
        return None, model.steps[-1][1]
    return None, model


class _Inputs:
    """The model's input as its native predictor builds it: a frame or a matrix."""

    def __init__(self, info: ModelInfo) -> None:
        self.order = info.input_order
        self.frame = info.extra.get("input") == "frame"
        self.numeric = info.extra.get("numeric", True)

    def __call__(self, columns: Columns) -> Any:
        if self.frame:
            return columns_to_frame(columns, self.order)
        return columns_to_matrix(columns, self.order, np.float64 if self.numeric else object)


def _as_frame(data: Any, order: list[str]) -> Any:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    return pd.DataFrame(np.asarray(data), columns=order)


def _explained(
    info: ModelInfo, n: int, scores: Callable[[], np.ndarray]
) -> tuple[np.ndarray | None, list[Any] | None]:
    """Which class each of `n` rows is explained for: the class answered (multiclass, the
    largest of `scores()`, `(n, k)`), the positive class (binary), none (regression). Returns
    the answered classes' indices (multiclass only) and the labels."""
    classes = info.classes or []
    if info.task == "multiclass":
        picked = np.asarray(scores()).argmax(axis=1)
        return picked, [classes[k] for k in picked]
    if info.task == "binary":
        return None, [classes[1]] * n
    return None, None


class _Grouped:
    """A model whose transformed columns each belong to one input column: contributions found
    per transformed column are summed per input column."""

    def __init__(self, pre: Any, inputs: _Inputs, reference: Columns) -> None:
        self.pre = pre
        self.inputs = inputs
        self.order = inputs.order
        ref = inputs(reference)
        self.transform = (lambda x: x) if pre is None else pre.transform
        if pre is None:
            self.owners: np.ndarray | None = np.arange(len(self.order))
        else:  # a few hundred rows show which input moves which column
            probe = _as_frame(ref, self.order).iloc[:OWNER_ROWS]
            self.owners = _owners(self.transform, probe, self.order)
        self.z_ref = _dense(self.transform(ref))

    def z(self, columns: Columns) -> np.ndarray:
        return _dense(self.transform(self.inputs(columns)))

    def group(self, per_column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sum `(n, z)` contributions into `(n, inputs)`; also what no input column owns."""
        assert self.owners is not None
        out = np.zeros((per_column.shape[0], len(self.order)))
        owned = self.owners >= 0
        np.add.at(out.T, self.owners[owned], per_column[:, owned].T)
        return out, per_column[:, ~owned].sum(axis=1)


class _Linear:
    method = "linear"
    exact = True

    def __init__(self, grouped: _Grouped, final: Any, info: ModelInfo, space: str) -> None:
        self.grouped = grouped
        self.info = info
        self.space = space
        self.coef = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
        self.intercept = np.atleast_1d(np.asarray(final.intercept_, dtype=np.float64))
        self.z_mean = grouped.z_ref.mean(axis=0)
        self.fallback: Explainer | None = None

    def explain(self, columns: Columns, *, budget: float = 0.2) -> Attributions:
        z = self.grouped.z(columns)
        n = z.shape[0]
        answered, target = _explained(
            self.info, n, lambda: z @ self.coef.T + self.intercept
        )  # one row of coefficients unless several classes
        picked = answered if answered is not None else np.zeros(n, dtype=int)
        w, b = self.coef[picked], self.intercept[picked]
        per_z = (z - self.z_mean) * w
        values, unowned = self.grouped.group(per_z)
        base = (self.z_mean * w).sum(axis=1) + b
        if np.any(np.abs(unowned) > ADDS_UP) and self.fallback is not None:
            # a value the reference never showed moved a column no input was seen to own
            return self.fallback.explain(columns, budget=budget)
        output = base + values.sum(axis=1) + unowned
        return Attributions(
            self.method,
            True,
            self.space,
            list(self.grouped.order),
            base + unowned,
            values,
            output,
            target,
        )


def _margin(final: Any, z: Any, task: str) -> np.ndarray:
    if task == "regression":
        return np.asarray(final.predict(z), dtype=np.float64).reshape(len(z), -1)
    return np.asarray(final.decision_function(z), dtype=np.float64).reshape(len(z), -1)


def _training_mean(native: Any, signature: Signature) -> Columns | None:
    """The mean of the training data where the model itself remembers it: a pipeline that
    starts by standardising (federated training registers one, its mean pooled over the
    sites). A linear model's exact contributions need nothing more: each is its coefficient
    times the value's distance from that mean."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    first = native.steps[0][1] if isinstance(native, Pipeline) else None
    if not isinstance(first, StandardScaler) or getattr(first, "mean_", None) is None:
        return None
    names = [str(n) for n in getattr(first, "feature_names_in_", signature.names)]
    if names != signature.names or len(first.mean_) != len(names):
        return None
    import pandas as pd

    try:
        return signature.validate_frame(pd.DataFrame([np.asarray(first.mean_)], columns=names))
    except InvalidInput:  # a mean an integer column cannot hold: no such explanation
        return None


def _linear(native: Any, info: ModelInfo, reference: Columns) -> _Linear | None:
    pre, final = _steps(native)
    if not (hasattr(final, "coef_") and hasattr(final, "intercept_")):
        return None
    if info.task != "regression" and not hasattr(final, "decision_function"):
        return None
    grouped = _Grouped(pre, _Inputs(info), reference)
    if grouped.owners is None:
        return None
    x = grouped.inputs(reference)
    # fitted on a frame, a bare estimator takes one (by its column names)
    z = grouped.z_ref if pre is not None else x
    try:
        margin = _margin(final, z, info.task)
    except Exception:
        return None
    space = "value" if info.task == "regression" else "margin"
    if info.task == "binary":
        from scipy.special import expit

        probabilities = np.asarray(native.predict_proba(x))
        if np.allclose(expit(margin[:, 0]), probabilities[:, 1], atol=1e-9):
            space = "log-odds"
    explainer = _Linear(grouped, final, info, space)
    # the proof it is linear in what it was fitted on: the contributions add up on the reference
    check = explainer.explain(reference)
    expected = margin[:, 0] if margin.shape[1] == 1 else margin.max(axis=1)
    if not np.allclose(
        check.output, expected, rtol=0, atol=ADDS_UP * max(1.0, np.abs(expected).max())
    ):
        return None
    return explainer


# -- tree ensembles --------------------------------------------------------------------------


class _Trees:
    """TreeSHAP contributions: `contribute(X) -> (n, k, f + 1)`, the last column the base."""

    method = "tree-shap"
    exact = True

    def __init__(self, contribute: Any, grouped: _Grouped, info: ModelInfo, space: str) -> None:
        self.contribute = contribute
        self.grouped = grouped
        self.info = info
        self.space = space
        self.fallback: Explainer | None = None

    def explain(self, columns: Columns, *, budget: float = 0.2) -> Attributions:
        grouped = self.grouped
        raw = self.contribute(
            grouped.z(columns) if grouped.pre is not None else grouped.inputs(columns)
        )
        n, k = raw.shape[0], raw.shape[1]
        answered, target = _explained(self.info, n, lambda: raw.sum(axis=2))
        # a binary model's positive class is its last output
        picked = answered if answered is not None else np.full(n, k - 1)
        chosen = raw[np.arange(n), picked]
        per_z, base = chosen[:, :-1], chosen[:, -1]
        values, unowned = self.grouped.group(per_z)
        if np.any(np.abs(unowned) > ADDS_UP) and self.fallback is not None:
            return self.fallback.explain(columns, budget=budget)
        base = base + unowned
        output = base + values.sum(axis=1)
        return Attributions(
            self.method, True, self.space, list(self.grouped.order), base, values, output, target
        )


def _three(raw: np.ndarray, n: int, features: int) -> np.ndarray:
    """(n, f + 1) or (n, k * (f + 1)) or (n, k, f + 1) -> (n, k, f + 1)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 3:
        return raw
    return raw.reshape(n, -1, features + 1)


def _lightgbm(native: Any, info: ModelInfo, reference: Columns) -> _Trees:
    grouped = _Grouped(None, _Inputs(info), reference)
    width = len(info.input_order)

    def contribute(x: np.ndarray) -> np.ndarray:
        return _three(native.predict(x, pred_contrib=True, num_threads=1), len(x), width)

    space = {"binary": "log-odds", "multiclass": "margin"}.get(info.task, "value")
    return _Trees(contribute, grouped, info, space)


def _xgboost(native: Any, info: ModelInfo, reference: Columns) -> _Trees:
    import xgboost as xgb

    grouped = _Grouped(None, _Inputs(info), reference)
    width = len(info.input_order)
    names = native.feature_names

    def contribute(x: np.ndarray) -> np.ndarray:
        matrix = xgb.DMatrix(x, feature_names=names, nthread=1)
        return _three(native.predict(matrix, pred_contribs=True), len(x), width)

    space = {"binary": "log-odds", "multiclass": "margin"}.get(info.task, "value")
    return _Trees(contribute, grouped, info, space)


def _sklearn_trees(native: Any, info: ModelInfo, reference: Columns) -> _Trees | None:
    try:
        import shap
    except ImportError:
        return None
    pre, final = _steps(native)
    grouped = _Grouped(pre, _Inputs(info), reference)
    if grouped.owners is None:
        return None
    try:
        tree = shap.TreeExplainer(final)
    except Exception:  # not a tree model shap knows
        return None
    expected = np.atleast_1d(np.asarray(tree.expected_value, dtype=np.float64))

    def contribute(x: Any) -> np.ndarray:
        values = np.asarray(tree.shap_values(_dense(x), check_additivity=False), dtype=np.float64)
        if values.ndim == 2:
            values = values[:, None, :]
        elif values.shape[1] != len(expected) and values.shape[2] == len(expected):
            values = values.transpose(0, 2, 1)  # (n, f, k) -> (n, k, f)
        base = np.broadcast_to(expected[None, :, None], (values.shape[0], values.shape[1], 1))
        return np.concatenate([values, base], axis=2)

    totals = contribute(grouped.z_ref).sum(axis=2)  # (n, k): what the trees add up to
    space = _tree_space(totals, native, grouped.inputs(reference), info.task)
    return _Trees(contribute, grouped, info, space) if space is not None else None


def _tree_space(totals: np.ndarray, native: Any, x: Any, task: str) -> str | None:
    """The space the trees' contributions add up in, read off the model's own answers on the
    reference rows: its values or probabilities (a forest averages them) as they are, or through
    the logistic (log-odds) or the softmax (margin); None when they add up in none."""
    from scipy.special import expit, softmax

    if task == "regression":
        answers = np.asarray(native.predict(x), dtype=np.float64)
        return "value" if np.allclose(totals[:, 0], answers, atol=ADDS_UP) else None
    probabilities = np.asarray(native.predict_proba(x), dtype=np.float64)
    if totals.shape[1] == probabilities.shape[1] and np.allclose(
        totals, probabilities, atol=ADDS_UP
    ):
        return "probability"
    if task == "binary":
        adds_up = np.allclose(expit(totals[:, -1]), probabilities[:, 1], atol=ADDS_UP)
        return "log-odds" if adds_up else None
    adds_up = np.allclose(softmax(totals, axis=1), probabilities, atol=ADDS_UP)
    return "margin" if adds_up else None


# -- any model: sampled permutations ---------------------------------------------------------


class _Permutation:
    method = "permutation"
    exact = False

    def __init__(
        self,
        predictor: Predictor,
        info: ModelInfo,
        signature: Signature,
        reference: Columns,
        seed: int = 0,
    ) -> None:
        self.predictor = predictor
        self.info = info
        self.features = list(info.input_order) or signature.names
        self.all_columns = signature.names
        self.space = "value" if info.task == "regression" else "probability"
        rng = np.random.default_rng(seed)
        n = len(next(iter(reference.values()))) if reference else 0
        take = (
            np.sort(rng.choice(n, size=min(n, BACKGROUND_ROWS), replace=False))
            if n
            else np.arange(0)
        )
        self.background = {name: np.asarray(values)[take] for name, values in reference.items()}
        self.rng = rng

    def _output(self, columns: Columns, classes: np.ndarray | None) -> np.ndarray:
        out = np.asarray(self.predictor.predict(columns), dtype=np.float64)
        if self.info.task == "regression":
            return out.reshape(-1)
        picked: np.ndarray = out[:, -1] if classes is None else out[np.arange(len(out)), classes]
        return picked

    def explain(self, columns: Columns, *, budget: float = 0.2) -> Attributions:
        n = len(next(iter(columns.values())))
        deadline = time.perf_counter() + budget
        f = len(self.features)
        values = np.zeros((n, f))
        errors = np.zeros((n, f))
        base = np.zeros(n)
        output = np.zeros(n)
        picked_all, target = _explained(self.info, n, lambda: self.predictor.predict(columns))
        samples = MAX_PAIRS
        for i in range(n):
            row = {name: values_[i : i + 1] for name, values_ in columns.items()}
            cls = None if picked_all is None else int(picked_all[i])
            share = max(0.0, (deadline - time.perf_counter()) / (n - i))
            phi, err, b, out, pairs = self._one(row, cls, time.perf_counter() + share)
            values[i], errors[i], base[i], output[i] = phi, err, b, out
            samples = min(samples, pairs)
        return Attributions(
            self.method,
            False,
            self.space,
            list(self.features),
            base,
            values,
            output,
            target,
            errors,
            samples,
        )

    def _one(
        self, row: Columns, cls: int | None, until: float
    ) -> tuple[np.ndarray, np.ndarray, float, float, int]:
        f = len(self.features)
        m = len(next(iter(self.background.values())))
        sums = np.zeros(f)
        squares = np.zeros(f)
        base_sum = 0.0
        pairs = 0
        batch = MIN_PAIRS
        started = time.perf_counter()
        while pairs < MAX_PAIRS:
            batch = min(batch, MAX_PAIRS - pairs)
            order = np.argsort(self.rng.random((batch, f)), axis=1)
            picks = self.rng.integers(0, m, size=batch)
            # each pair walks its permutation and the reverse from the same reference row
            walks = np.concatenate([order, order[:, ::-1]])
            starts = np.concatenate([picks, picks])
            deltas, bases = self._walk(row, walks, starts, cls)
            pair = (deltas[:batch] + deltas[batch:]) / 2
            sums += pair.sum(axis=0)
            squares += (pair**2).sum(axis=0)
            base_sum += bases.sum() / 2
            pairs += batch
            now = time.perf_counter()
            if now >= until:
                break
            # twice as many next, as many as the time left allows at the pace so far
            per_pair = (now - started) / pairs
            fits = int((until - now) / per_pair) if per_pair > 0 else batch * 2
            if fits < 1:
                break
            batch = min(batch * 2, fits)
        mean = sums / pairs
        variance = np.maximum(squares / pairs - mean**2, 0.0)
        error = np.sqrt(variance / max(pairs - 1, 1))
        base = base_sum / pairs
        # each walk's changes sum to the row's output less its start's: so do their means
        output = float(self._output(row, None if cls is None else np.array([cls]))[0])
        return mean, error, base, output, pairs

    def _walk(
        self, row: Columns, walks: np.ndarray, starts: np.ndarray, cls: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score every step of each walk: from reference row `starts[w]`, switch the row's
        features on in the order `walks[w]`. Returns each feature's change, and the starts'
        outputs."""
        w, f = walks.shape
        steps = f + 1
        # on[w, s, j]: feature j has the row's value at step s of walk w
        rank = np.empty_like(walks)
        rank[np.arange(w)[:, None], walks] = np.arange(f)[None, :]
        on = rank[:, None, :] < np.arange(steps)[None, :, None]
        on = on.reshape(w * steps, f)
        columns: Columns = {}
        index = {name: j for j, name in enumerate(self.features)}
        start_rows = np.repeat(starts, steps)
        for name in self.all_columns:
            back = self.background[name][start_rows]
            j = index.get(name)
            if j is None:
                columns[name] = back
            else:
                columns[name] = np.where(on[:, j], np.repeat(row[name], len(back)), back)
        outputs = self._output(columns, None if cls is None else np.full(w * steps, cls))
        outputs = outputs.reshape(w, steps)
        changes = np.diff(outputs, axis=1)  # change at step s+1 belongs to feature walks[w, s]
        deltas = np.zeros((w, f))
        deltas[np.arange(w)[:, None], walks] = changes
        return deltas, outputs[:, 0]


# -- choosing ---------------------------------------------------------------------------------


def explainer_for(
    native: Any,
    predictor: Predictor,
    info: ModelInfo,
    signature: Signature,
    reference: Columns | None,
    *,
    what: str = "the model",
) -> Explainer:
    """The best explainer for the model. `native`: the model object its flavour loads (None
    when only a graph is served); `predictor`: what serves it; `reference`: rows of its
    training data, validated against its signature (None: it was registered without any, and
    only tree ensembles, whose trees remember their training data, and linear models after a
    standardiser, which remembers its mean, can be explained)."""
    if reference is None or not len(next(iter(reference.values()), ())):
        if native is not None and info.flavour in ("lightgbm", "xgboost"):
            rows = signature.validate_frame(signature.placeholder_rows(1))
            trees = (_lightgbm if info.flavour == "lightgbm" else _xgboost)(native, info, rows)
            return trees
        centre = _training_mean(native, signature) if info.flavour == "sklearn" else None
        linear = _linear(native, info, centre) if centre is not None else None
        if linear is not None:
            return linear
        raise InvalidInput(
            f"{what} was registered without sample or training data, so there are no reference "
            "rows to explain its answers against; register it again with sample= (rows of its "
            "training data)"
        )
    sampled = _Permutation(predictor, info, signature, reference)
    exact: _Linear | _Trees | None = None
    if native is not None:
        try:
            if info.flavour == "lightgbm":
                exact = _lightgbm(native, info, reference)
            elif info.flavour == "xgboost":
                exact = _xgboost(native, info, reference)
            elif info.flavour == "sklearn":
                exact = _linear(native, info, reference) or _sklearn_trees(native, info, reference)
        except Exception:  # an unusual model an exact method cannot take apart: sampled
            exact = None
    if exact is None:
        return sampled
    exact.fallback = sampled
    return exact


def global_importance(
    explainer: Explainer, reference: Columns, *, rows: int = 200, budget: float = 2.0
) -> dict[str, Any]:
    """Mean |contribution| per feature over up to `rows` reference rows, largest first. An
    exact method takes them all at once; a sampled one as many as `budget` seconds allow (at
    least one)."""
    n = min(len(next(iter(reference.values()))) if reference else 0, rows)
    if explainer.exact:
        take = {name: np.asarray(v)[:n] for name, v in reference.items()}
        explained = [explainer.explain(take)]
    else:
        explained = []
        deadline = time.perf_counter() + budget
        per_row = budget / max(n, 1)
        for i in range(n):
            one = {name: np.asarray(v)[i : i + 1] for name, v in reference.items()}
            explained.append(explainer.explain(one, budget=per_row))
            if time.perf_counter() >= deadline:
                break
    values = np.concatenate([e.values for e in explained]) if explained else np.zeros((0, 0))
    first = explained[0]
    means = np.abs(values).mean(axis=0) if len(values) else np.zeros(len(first.features))
    ranked = sorted(zip(first.features, means.tolist(), strict=True), key=lambda kv: -kv[1])
    return {
        "method": first.method,
        "space": first.space,
        "rows": len(values),
        "features": dict(ranked),
    }


def compare_importance(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """What changed in what a model relies on, between two versions' global importances: each
    feature's share of the total (so versions explained in different spaces compare), its rank
    in each, largest change first. A feature only one version takes has no share in the other."""
    if not before or not after:
        return []

    def shares(importance: dict[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
        values = {k: float(v) for k, v in importance.get("features", {}).items()}
        total = sum(values.values()) or 1.0
        ranked = sorted(values, key=lambda k: -values[k])
        return {k: v / total for k, v in values.items()}, {k: i + 1 for i, k in enumerate(ranked)}

    (a, rank_a), (b, rank_b) = shares(before), shares(after)
    rows = [
        {
            "feature": name,
            "before": a.get(name),
            "after": b.get(name),
            "change": (b.get(name) or 0.0) - (a.get(name) or 0.0),
            "rank_before": rank_a.get(name),
            "rank_after": rank_b.get(name),
        }
        for name in dict.fromkeys([*a, *b])
    ]
    rows.sort(key=lambda r: -abs(float(r["change"] or 0.0)))
    return rows


def attribution_shift(
    reference: Attributions, current: Attributions, *, top: int = 5
) -> list[dict[str, Any]]:
    """The features whose contributions moved most between reference rows and a window of
    live ones: each one's mean contribution in both (signed: which way it pushes the output)
    and its mean |contribution|, largest move of the mean first."""
    if not len(reference.values) or not len(current.values):
        return []
    before, now = reference.values.mean(axis=0), current.values.mean(axis=0)
    before_abs, now_abs = np.abs(reference.values).mean(axis=0), np.abs(current.values).mean(axis=0)
    rows: list[dict[str, Any]] = [
        {
            "feature": name,
            "reference_mean": float(before[j]),
            "current_mean": float(now[j]),
            "shift": float(now[j] - before[j]),
            "reference_abs": float(before_abs[j]),
            "current_abs": float(now_abs[j]),
        }
        for j, name in enumerate(reference.features)
    ]
    rows.sort(key=lambda r: -abs(r["shift"]))
    return rows[:top]
