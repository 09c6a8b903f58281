"""Explanations: each method's contributions add up to the model's own output, match the
attributions worked out by brute force, and the method is chosen by what the model is."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit
from tests.runtime.conftest import NUMERIC

from shipyard.core import Columns, Settings
from shipyard.core.errors import InvalidInput
from shipyard.explain import global_importance
from shipyard.registry import Registry, ServedModel


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry.from_settings(Settings(home=tmp_path, auto_migrate=True, actor="t")) as reg:
        yield reg


def served(registry: Registry, model: Any, sample: Any, name: str = "m") -> ServedModel:
    version = registry.register(model, name=name, sample=sample)
    return registry.load(name, version.version)


def columns_of(served_model: ServedModel, frame: pd.DataFrame) -> Columns:
    return served_model.signature.validate_frame(frame)


def rows(columns: Columns, index: Any) -> Columns:
    return {name: values[index] for name, values in columns.items()}


def interventional(f: Any, x: pd.DataFrame, background: pd.DataFrame) -> np.ndarray:
    """Exact interventional SHAP values of row `x` by enumerating every order of the features
    (a handful of features only): each feature's marginal contribution, averaged over all
    orders and all background rows."""
    names = list(x.columns)
    phi = np.zeros(len(names))
    orders = list(itertools.permutations(range(len(names))))
    for order in orders:
        mixed = background.copy()
        before = f(mixed)
        for j in order:
            mixed[names[j]] = x[names[j]].iloc[0]
            after = f(mixed)
            phi[j] += float(np.mean(after - before))
            before = after
    return phi / len(orders)


def test_a_linear_pipeline_is_explained_exactly_in_log_odds(
    registry: Registry, fraud_model: Any, fraud_data: pd.DataFrame, fraud_sample: pd.DataFrame
) -> None:
    """The demo's kind of model (imputer, scaler, one-hot, logistic regression): contributions
    per input column, the one-hot columns summed into their category, adding up to the
    log-odds of the score, each equal to its exact Shapley value against the reference."""
    from shipyard.demo import FEATURES

    model = served(registry, fraud_model, fraud_sample)
    explainer = model.explainer()
    assert (explainer.method, explainer.space) == ("linear", "log-odds")
    frame = fraud_data[FEATURES].iloc[1000:1040]
    columns = columns_of(model, frame)
    got = explainer.explain(columns)
    assert got.features == list(FEATURES)
    assert got.target == [1] * 40
    scores = fraud_model.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(got.base + got.values.sum(axis=1), logit(scores), atol=1e-6)
    np.testing.assert_allclose(got.output, logit(scores), atol=1e-6)

    # against the reference the explainer walks from (the version's own reference rows)
    reference = model.bundle.reference(model.signature)  # type: ignore[union-attr]
    background = pd.DataFrame(reference)[FEATURES]
    margin = fraud_model.decision_function
    for i in (0, 7):
        exact = [
            float(np.mean(margin(background.assign(**{c: frame[c].iloc[i]})) - margin(background)))
            for c in FEATURES
        ]  # additive: a feature's Shapley value is its own effect, whatever the order
        np.testing.assert_allclose(got.values[i], exact, atol=1e-6)
    np.testing.assert_allclose(got.base, np.mean(margin(background)), atol=1e-6)


def test_lightgbm_and_xgboost_use_their_own_tree_shap(
    registry: Registry, frame: pd.DataFrame, binary_labels: np.ndarray, class_labels: np.ndarray
) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    booster = lgb.LGBMClassifier(n_estimators=40, num_leaves=8, verbose=-1).fit(
        frame, binary_labels
    )
    model = served(registry, booster, frame.iloc[:100], "lgb")
    got = model.explainer().explain(columns_of(model, frame.iloc[:50]))
    assert (got.method, got.space, got.exact) == ("tree-shap", "log-odds", True)
    raw = booster.predict(frame.iloc[:50], raw_score=True)
    np.testing.assert_allclose(got.base + got.values.sum(axis=1), raw, atol=1e-6)
    assert got.features == NUMERIC

    softprob = xgb.XGBClassifier(n_estimators=30, max_depth=3).fit(frame, class_labels)
    model = served(registry, softprob, frame.iloc[:100], "xgb")
    got = model.explainer().explain(columns_of(model, frame.iloc[:50]))
    assert (got.method, got.space) == ("tree-shap", "margin")
    margins = softprob.predict(frame.iloc[:50], output_margin=True)
    picked = margins.argmax(axis=1)
    assert got.target == picked.tolist()  # the class each row is answered
    np.testing.assert_allclose(got.output, margins[np.arange(50), picked], atol=1e-5)
    np.testing.assert_allclose(got.base + got.values.sum(axis=1), got.output, atol=1e-9)


def test_scikit_learn_trees_through_shap(
    registry: Registry, frame: pd.DataFrame, binary_labels: np.ndarray, target: np.ndarray
) -> None:
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
    )

    forest = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0)
    forest.fit(frame, binary_labels)
    model = served(registry, forest, frame.iloc[:100], "forest")
    got = model.explainer().explain(columns_of(model, frame.iloc[:30]))
    assert (got.method, got.space) == ("tree-shap", "probability")  # a forest averages them
    np.testing.assert_allclose(
        got.base + got.values.sum(axis=1), forest.predict_proba(frame.iloc[:30])[:, 1], atol=1e-6
    )

    boosted = GradientBoostingClassifier(n_estimators=30, max_depth=2, random_state=0)
    boosted.fit(frame, binary_labels)
    model = served(registry, boosted, frame.iloc[:100], "gbc")
    got = model.explainer().explain(columns_of(model, frame.iloc[:30]))
    assert (got.method, got.space) == ("tree-shap", "log-odds")
    np.testing.assert_allclose(
        expit(got.base + got.values.sum(axis=1)),
        boosted.predict_proba(frame.iloc[:30])[:, 1],
        atol=1e-6,
    )

    regressor = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(frame, target)
    model = served(registry, regressor, frame.iloc[:100], "gbr")
    got = model.explainer().explain(columns_of(model, frame.iloc[:30]))
    assert (got.method, got.space) == ("tree-shap", "value")
    np.testing.assert_allclose(got.output, regressor.predict(frame.iloc[:30]), atol=1e-6)


def test_any_other_model_is_explained_by_sampled_permutations_with_their_error(
    registry: Registry, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    """A model no exact method takes apart (k-nearest neighbours): permutation sampling, its
    contributions adding up exactly to the probability, within a few standard errors of the
    exact Shapley values, which shrink with a larger budget."""
    from sklearn.neighbors import KNeighborsClassifier

    three = frame[NUMERIC[:3]]
    knn = KNeighborsClassifier(n_neighbors=15).fit(three, binary_labels)
    model = served(registry, knn, three.iloc[:200], "knn")
    explainer = model.explainer()
    assert (explainer.method, explainer.space, explainer.exact) == (
        "permutation",
        "probability",
        False,
    )
    x = three.iloc[[250]]
    quick = explainer.explain(columns_of(model, x), budget=0.0)
    assert quick.samples is not None
    assert quick.samples >= 8
    longer = explainer.explain(columns_of(model, x), budget=0.5)
    assert longer.samples is not None
    assert longer.samples > quick.samples
    assert longer.error is not None
    assert quick.error is not None
    assert longer.error.max() < quick.error.max()
    probability = model.predictor.predict(columns_of(model, x))[0, 1]  # what the server answers
    assert probability == pytest.approx(knn.predict_proba(x)[0, 1], abs=1e-6)
    for got in (quick, longer):
        assert got.output[0] == pytest.approx(probability, abs=1e-12)
        assert got.base[0] + got.values[0].sum() == pytest.approx(probability, abs=1e-9)

    background = pd.DataFrame(explainer.background)[NUMERIC[:3]]  # type: ignore[attr-defined]
    exact = interventional(lambda f: knn.predict_proba(f)[:, 1], x, background)
    assert np.all(np.abs(longer.values[0] - exact) <= 4 * longer.error[0] + 1e-9), (
        longer.values[0],
        exact,
        longer.error[0],
    )


def test_the_method_is_named_and_chosen_by_the_model(
    registry: Registry, frame: pd.DataFrame, binary_labels: np.ndarray, target: np.ndarray
) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    ridge = make_pipeline(StandardScaler(), Ridge()).fit(frame, target)
    model = served(registry, ridge, frame.iloc[:100], "ridge")
    got = model.explainer().explain(columns_of(model, frame.iloc[:20]))
    assert (got.method, got.space) == ("linear", "value")
    np.testing.assert_allclose(got.output, ridge.predict(frame.iloc[:20]), atol=1e-9)

    # products of features: not additive in the inputs, so no exact linear method
    interacting = make_pipeline(PolynomialFeatures(2), Ridge()).fit(frame, target)
    model = served(registry, interacting, frame.iloc[:100], "poly")
    got = model.explainer().explain(columns_of(model, frame.iloc[:2]), budget=0.05)
    assert (got.method, got.space) == ("permutation", "value")
    np.testing.assert_allclose(got.output, interacting.predict(frame.iloc[:2]), atol=1e-9)


def test_a_category_the_reference_never_showed_falls_back_to_sampling(
    registry: Registry, mixed_frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    """Which one-hot column a category moves is learnt from the reference rows; a category
    they lack moves a column no input was seen to own, so that row is explained by sampling
    rather than wrongly."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), ["merchant"]), remainder="passthrough"
        ),
        LogisticRegression(),
    ).fit(mixed_frame[["amount", "merchant"]], binary_labels)
    seen = mixed_frame[mixed_frame["merchant"] != "travel"][["amount", "merchant"]]
    version = served(registry, model, seen.iloc[:100], "onehot")
    explainer = version.explainer()
    assert explainer.method == "linear"
    usual = explainer.explain(columns_of(version, seen.iloc[:5]))
    assert usual.method == "linear"
    travel = mixed_frame[mixed_frame["merchant"] == "travel"][["amount", "merchant"]].iloc[:1]
    unusual = explainer.explain(columns_of(version, travel), budget=0.05)
    assert unusual.method == "permutation"
    answered = version.predictor.predict(columns_of(version, travel))[0, 1]
    assert unusual.output[0] == pytest.approx(answered, abs=1e-12)
    assert unusual.base[0] + unusual.values[0].sum() == pytest.approx(answered, abs=1e-9)


def test_without_reference_rows_only_trees_explain(
    registry: Registry, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    import lightgbm as lgb
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    booster = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(frame, binary_labels)
    version = registry.register(booster.booster_, name="bare")  # says its own inputs
    model = registry.load("bare", version.version)
    got = model.explainer().explain(columns_of(model, frame.iloc[:3]))
    np.testing.assert_allclose(
        got.base + got.values.sum(axis=1),
        booster.predict(frame.iloc[:3], raw_score=True),
        atol=1e-6,
    )

    graph = to_onnx(
        LogisticRegression().fit(frame.to_numpy(np.float32), binary_labels),
        frame.to_numpy(np.float32)[:1],
        options={"zipmap": False},
    )
    version = registry.register(graph, name="graph")
    model = registry.load("graph", version.version)
    with pytest.raises(InvalidInput, match="no reference rows") as caught:
        model.explainer()
    assert "sample=" in caught.value.message


def test_global_importance_ranks_what_the_model_relies_on(
    registry: Registry, frame: pd.DataFrame, target: np.ndarray
) -> None:
    from sklearn.linear_model import LinearRegression

    ols = LinearRegression().fit(
        frame, target
    )  # y = 3 amount - 2 hour + 0.5 distance + 1.5 velocity
    model = served(registry, ols, frame, "ols")
    reference = model.bundle.reference(model.signature)  # type: ignore[union-attr]
    importance = global_importance(model.explainer(), reference)
    assert importance["method"] == "linear"
    assert list(importance["features"]) == ["amount", "hour", "velocity", "distance"]
    # mean |coef * (x - mean x)|: each coefficient times its feature's mean absolute deviation
    for name, coef in zip(NUMERIC, ols.coef_, strict=True):
        values = frame[name].to_numpy()[: importance["rows"]]
        expected = abs(coef) * np.mean(np.abs(values - frame[name].mean()))
        assert math.isclose(importance["features"][name], expected, rel_tol=0.05)
