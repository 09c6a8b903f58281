"""`shipyard optimize`: every method's gate passing and refusing, lineage, and what each method
really does to the graph (trees dropped, units removed, weights int8 or float16)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.core import Settings
from shipyard.core.errors import InvalidInput
from shipyard.optimize import Optimizer, parse_max_loss, parse_student
from shipyard.registry import Registry

lightgbm = pytest.importorskip("lightgbm")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optimize")


@pytest.fixture(scope="module")
def registry(home: Path) -> Iterator[Registry]:
    with Registry.from_settings(Settings(home=home)) as reg:
        yield reg


@pytest.fixture(scope="module")
def digits() -> tuple[pd.DataFrame, pd.DataFrame]:
    """scikit-learn's digits (8x8 images, 10 classes): train and holdout, `label` column."""
    from sklearn.datasets import load_digits

    data = load_digits(as_frame=True)
    frame = data.frame.rename(columns={"target": "label"})
    frame.columns = [str(c).replace("pixel_", "p") for c in frame.columns]
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return shuffled.iloc[:1400], shuffled.iloc[1400:]


@pytest.fixture(scope="module")
def mlp(registry: Registry, digits: tuple[pd.DataFrame, pd.DataFrame]) -> int:
    """A network worth optimising: scaler + MLP (128, 64) on digits."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, _ = digits
    x = train.drop(columns="label")
    model = make_pipeline(StandardScaler(), MLPClassifier((128, 64), max_iter=300, random_state=0))
    model.fit(x, train["label"])
    return registry.register(model, name="digits", sample=x, training_data=x).version


@pytest.fixture(scope="module")
def separable() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A binary problem with a strong signal, so a model that loses trees loses AUC."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=6000, n_features=12, n_informative=8, random_state=3, flip_y=0.01
    )
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(12)]).assign(label=y)
    return frame.iloc[:4000], frame.iloc[4000:]


@pytest.fixture(scope="module")
def gbm(registry: Registry, separable: tuple[pd.DataFrame, pd.DataFrame]) -> tuple[int, Any]:
    train, _ = separable
    x = train.drop(columns="label")
    model = lightgbm.LGBMClassifier(n_estimators=120, num_leaves=15, verbose=-1, random_state=0)
    model.fit(x, train["label"])
    version = registry.register(model, name="gbm", sample=x, training_data=x).version
    return version, model


def _versions(registry: Registry, name: str) -> list[int]:
    return [v.version for v in registry.list_versions(name)]


def _graph(registry: Registry, name: str, version: int) -> Any:
    bundle = registry.open(name, version)
    path = bundle.folder / "model.onnx"
    if not path.is_file():
        path = bundle.folder / "model" / "model.onnx"
    return onnx.load(str(path))


# -- quantisation ------------------------------------------------------------------------------


def test_int8_makes_a_smaller_child_with_lineage_that_serves(
    registry: Registry, mlp: int, digits: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, holdout = digits
    report = Optimizer(registry).run(f"digits:{mlp}", holdout=holdout, quantize="int8")
    (outcome,) = report.outcomes
    assert outcome.passed, outcome.reason
    assert outcome.version is not None
    assert report.shrink(outcome) is not None
    assert report.shrink(outcome) >= 3  # float32 weights -> int8
    child = registry.get_version("digits", outcome.version)
    assert child.lineage is not None
    assert child.lineage["optimized_from"] == mlp
    assert child.lineage["method"] == "int8"
    assert child.lineage["gate"]["passed"] is True
    assert child.runtime == "onnxruntime"
    # the child's graph really holds int8 weights and integer matmuls
    graph = _graph(registry, "digits", outcome.version)
    ops = {n.op_type for n in graph.graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)
    # served, it answers like the parent on the holdout within the gate
    served = registry.load("digits", outcome.version)
    columns = served.record.signature.validate_frame(holdout.drop(columns="label"))
    predicted = np.asarray(served.classes)[served.predictor.predict(columns).argmax(axis=1)]
    accuracy = float(np.mean(predicted == holdout["label"].to_numpy()))
    assert accuracy == pytest.approx(outcome.figures.metrics["accuracy"])
    assert report.parent.metrics["accuracy"] - accuracy <= 0.01


def test_static_int8_calibrates_on_a_file_and_fp16_halves_the_weights(
    registry: Registry, mlp: int, digits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, holdout = digits
    calibration = tmp_path / "calibration.parquet"
    train.drop(columns="label").iloc[:500].to_parquet(calibration)
    static = Optimizer(registry).run(
        f"digits:{mlp}", holdout=holdout, quantize="int8-static", calibration=calibration,
        max_loss="2%",
    )  # fmt: skip
    (outcome,) = static.outcomes
    assert outcome.passed, outcome.reason
    assert outcome.details["quantize"]["calibration_rows"] == 500
    ops = {n.op_type for n in _graph(registry, "digits", outcome.version).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    half = Optimizer(registry).run(f"digits:{mlp}", holdout=holdout, quantize="fp16")
    (outcome,) = half.outcomes
    assert outcome.passed, outcome.reason
    graph = _graph(registry, "digits", outcome.version)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert 1.7 <= half.shrink(outcome) <= 2.3


def test_a_calibration_file_without_the_models_columns_is_refused(
    registry: Registry, mlp: int, digits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, holdout = digits
    wrong = tmp_path / "wrong.csv"
    train.drop(columns=["label", "p0_0", "p0_1"]).to_csv(wrong, index=False)
    before = _versions(registry, "digits")
    with pytest.raises(InvalidInput, match=r"calibration rows lack .*p0_0, p0_1"):
        Optimizer(registry).run(
            f"digits:{mlp}", holdout=holdout, quantize="int8-static", calibration=wrong
        )
    assert _versions(registry, "digits") == before


def test_quantising_a_tree_ensemble_says_it_changes_nothing(
    registry: Registry, gbm: tuple[int, Any], separable: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    version, _ = gbm
    before = _versions(registry, "gbm")
    with pytest.raises(InvalidInput, match=r"no layers with weights to quantise.*--prune"):
        Optimizer(registry).run(f"gbm:{version}", holdout=separable[1], quantize="int8")
    assert _versions(registry, "gbm") == before


# -- pruning -----------------------------------------------------------------------------------


def test_pruning_trees_keeps_the_strongest_and_their_sum_is_lightgbms(
    registry: Registry, gbm: tuple[int, Any], separable: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    version, model = gbm
    _, holdout = separable
    report = Optimizer(registry).run(f"gbm:{version}", holdout=holdout, prune=0.5, max_loss="5%")
    (outcome,) = report.outcomes
    assert outcome.passed, outcome.reason
    details = outcome.details["prune"]
    assert (details["trees_before"], details["trees_after"]) == (120, 60)
    kept = details["kept_trees"]
    assert len(set(kept)) == 60
    # the child's score is the sigmoid of the kept trees' leaves, as LightGBM itself has them
    x = holdout.drop(columns="label")
    leaves = model.booster_.predict(x, pred_leaf=True)
    dump = model.booster_.dump_model()["tree_info"]

    def leaf_values(tree: dict[str, Any]) -> dict[int, float]:
        out: dict[int, float] = {}
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "leaf_index" in node:
                out[node["leaf_index"]] = node["leaf_value"]
            else:
                stack += [node["left_child"], node["right_child"]]
        return out

    values = [leaf_values(t) for t in dump]
    raw = sum(np.array([values[t][leaf] for leaf in leaves[:, t]]) for t in kept)
    expected = 1 / (1 + np.exp(-raw))
    served = registry.load("gbm", outcome.version)
    got = served.predictor.predict(served.record.signature.validate_frame(x))[:, 1]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    graph = _graph(registry, "gbm", outcome.version)
    (ensemble,) = [n for n in graph.graph.node if n.op_type == "TreeEnsembleClassifier"]
    tree_ids = next(a.ints for a in ensemble.attribute if a.name == "nodes_treeids")
    assert len(set(tree_ids)) == 60
    assert report.speedup(outcome, batch=True) > 1.2


def test_pruning_too_much_is_refused_and_nothing_is_registered(
    registry: Registry, gbm: tuple[int, Any], separable: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    version, _ = gbm
    before = _versions(registry, "gbm")
    report = Optimizer(registry).run(
        f"gbm:{version}", holdout=separable[1], prune=0.97, max_loss="0.5%"
    )
    (outcome,) = report.outcomes
    assert not outcome.passed
    assert outcome.version is None
    assert outcome.gate["loss"] > 0.005
    assert "refused by the gate: auc" in outcome.reason
    assert _versions(registry, "gbm") == before


def test_pruning_a_network_removes_units_and_fine_tunes(
    registry: Registry, mlp: int, digits: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, holdout = digits
    report = Optimizer(registry).run(
        f"digits:{mlp}", holdout=holdout, prune=0.5, train=train, max_loss="3%"
    )
    (outcome,) = report.outcomes
    assert outcome.passed, outcome.reason
    details = outcome.details["prune"]
    assert details["hidden_units_before"] == [128, 64]
    assert details["hidden_units_after"] == [64, 32]
    shapes = sorted(
        numpy_helper.to_array(t).shape
        for t in _graph(registry, "digits", outcome.version).graph.initializer
        if numpy_helper.to_array(t).ndim == 2
    )
    assert {(64, 64), (64, 32), (32, 10)} <= set(
        shapes
    )  # 64 pixels -> 64 units (of 128) -> 32 (of 64) -> 10 digits
    if details.get("fine_tuned"):
        losses = details["fine_tune_loss"]
        assert losses[-1] < losses[0]
    else:
        assert "PyTorch" in details["fine_tune_skipped"]


# -- distillation ------------------------------------------------------------------------------


def test_distilling_the_gbm_into_a_small_int8_network(
    registry: Registry, gbm: tuple[int, Any], separable: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    version, _ = gbm
    report = Optimizer(registry).run(
        f"gbm:{version}", holdout=separable[1], distill="mlp:32", quantize="int8", max_loss="3%"
    )
    (outcome,) = report.outcomes
    assert outcome.method == "distill mlp:32+int8"
    assert outcome.passed, outcome.reason
    assert outcome.details["distill"]["targets"] == "teacher probabilities (soft targets)"
    child = registry.get_version("gbm", outcome.version)
    assert child.lineage["settings"] == {"distill": "mlp:32", "quantize": "int8"}
    assert report.shrink(outcome) > 10
    assert report.speedup(outcome, batch=True) > 2


def test_a_student_too_weak_is_refused_by_the_gate_with_exit_10(
    home: Path, registry: Registry, mlp: int, digits: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, holdout = digits
    path = home / "holdout.parquet"
    holdout.to_parquet(path)
    before = _versions(registry, "digits")
    result = CliRunner().invoke(
        app,
        ["--home", str(home), "optimize", f"digits:{mlp}", "--holdout", str(path),
         "--distill", "tree:depth=2", "--json"],
    )  # fmt: skip
    assert result.exit_code == 10, result.output
    report = json.loads(result.stdout)
    (outcome,) = report["outcomes"]
    assert outcome["passed"] is False
    assert outcome["gate"]["metric"] == "accuracy"
    assert outcome["gate"]["loss"] > 0.3  # a depth-2 tree cannot tell ten digits apart
    assert _versions(registry, "digits") == before


def test_a_model_without_a_graph_can_be_distilled_but_not_quantised(
    registry: Registry, digits: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    train, holdout = digits
    x = train.drop(columns="label")
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, train["label"])
    version = registry.register(model, name="native", sample=x, training_data=x)
    if version.runtime == "onnxruntime":
        pytest.skip("this skl2onnx converts HistGradientBoosting; the case needs a native model")
    with pytest.raises(InvalidInput, match=r"has no ONNX graph to quantize.*--distill"):
        Optimizer(registry).run(f"native:{version.version}", holdout=holdout, quantize="int8")
    report = Optimizer(registry).run(
        f"native:{version.version}", holdout=holdout, distill="mlp:64", max_loss="5%"
    )
    (outcome,) = report.outcomes
    assert outcome.passed, outcome.reason
    assert registry.get_version("native", outcome.version).runtime == "onnxruntime"


# -- comparing every method --------------------------------------------------------------------


def test_all_compares_every_method_in_one_table_and_registers_nothing(
    home: Path,
    registry: Registry,
    gbm: tuple[int, Any],
    separable: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    version, _ = gbm
    path = home / "separable.parquet"
    separable[1].to_parquet(path)
    before = _versions(registry, "gbm")
    command = ["--home", str(home), "optimize", f"gbm:{version}", "--holdout", str(path), "--all"]
    result = CliRunner().invoke(app, [*command, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [o["method"] for o in report["outcomes"]] == [
        "int8", "int8-static", "fp16", "prune 0.5", "distill mlp:64,32", "distill mlp:64,32+int8",
    ]  # fmt: skip
    for outcome in report["outcomes"][:3]:  # quantising trees
        assert outcome["reason"].startswith("not applicable: the model has no layers with weights")
        assert outcome["figures"] is None
    for outcome in report["outcomes"][3:]:
        assert outcome["figures"]["size_bytes"] > 0
        assert outcome["version"] is None
        assert outcome["speedup_1000_rows"] > 0
    assert report["registered"] == []
    table = CliRunner().invoke(app, command)
    assert table.exit_code == 0, table.output
    assert "holdout rows (gate: auc, max loss 1.00%)" in table.stdout
    assert "not applicable" in table.stdout
    assert _versions(registry, "gbm") == before


# -- what the user says ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mlp:wide", "mlp takes hidden layer sizes"),
        ("forest", "the kind must be one of"),
        ("gbm:trees=0", "trees must be between 1 and 2000"),
        ("gbm:leaves=3", "gbm takes trees=N, depth=N"),
        ("estimator:sklearn.tree.NoSuchTree()", "no importable sklearn.tree.NoSuchTree"),
        ("estimator:os.system('x')", "arguments by name"),
        ("estimator:sklearn.tree.DecisionTreeClassifier(max_depth=int)", "literal values"),
    ],
)
def test_a_student_spec_that_does_not_parse_says_how_to_write_one(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as error:
        parse_student(spec)
    assert "mlp:64,32" in str(error.value)


def test_student_specs_that_parse() -> None:
    assert parse_student("mlp:64,32").settings == {"hidden": [64, 32]}
    assert parse_student("gbm:trees=20").settings == {"trees": 20, "depth": 3}
    user = parse_student("estimator:sklearn.tree.DecisionTreeClassifier(max_depth=4)")
    assert user.estimator.max_depth == 4


@pytest.mark.parametrize(
    ("text", "value"), [("1%", 0.01), ("0.5%", 0.005), ("0.02", 0.02), (0.01, 0.01)]
)
def test_max_loss_reads_percent_or_share(text: Any, value: float) -> None:
    assert parse_max_loss(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["1", "150%", "-1%", "much"])
def test_max_loss_refuses_what_it_cannot_mean(text: str) -> None:
    with pytest.raises(InvalidInput, match="max-loss"):
        parse_max_loss(text)


def test_a_holdout_without_the_label_or_a_method_is_refused(
    registry: Registry, mlp: int, digits: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    _, holdout = digits
    with pytest.raises(InvalidInput, match=r"no label column 'label'.*--label"):
        Optimizer(registry).run(
            f"digits:{mlp}", holdout=holdout.drop(columns="label"), quantize="int8"
        )
    with pytest.raises(InvalidInput, match="say how to optimise"):
        Optimizer(registry).run(f"digits:{mlp}", holdout=holdout)
    with pytest.raises(InvalidInput, match="--quantize takes int8"):
        Optimizer(registry).run(f"digits:{mlp}", holdout=holdout, quantize="int4")


def test_pruning_a_forest_keeps_its_probabilities_on_their_scale(
    registry: Registry, separable: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    """A random forest averages its trees: the ones kept are reweighted, so a binary forest's
    scores (and the threshold that reads them) mean what they meant."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    train, holdout = separable
    x = train.drop(columns="label")
    forest = RandomForestClassifier(n_estimators=40, max_depth=8, random_state=0)
    version = registry.register(forest.fit(x, train["label"]), name="forest", sample=x).version
    report = Optimizer(registry).run(f"forest:{version}", holdout=holdout, prune=0.5, max_loss="2%")
    (outcome,) = report.outcomes
    assert outcome.passed, outcome.reason
    assert outcome.details["prune"]["averaging"] is True
    assert outcome.details["prune"]["weights_scaled_by"] == pytest.approx(2.0)
    rows = holdout.drop(columns="label")
    parent = registry.load("forest", version)
    child = registry.load("forest", outcome.version)
    before = parent.predictor.predict(parent.record.signature.validate_frame(rows))[:, 1]
    after = child.predictor.predict(child.record.signature.validate_frame(rows))[:, 1]
    assert abs(float(after.mean() - before.mean())) < 0.02
    assert float(np.mean((after >= 0.5) == (before >= 0.5))) > 0.95
    # a forest regressor too: its values stay on the target's scale
    target = holdout["f0"] * 3 + 10
    regressor = RandomForestRegressor(n_estimators=30, max_depth=6, random_state=0)
    reg_version = registry.register(
        regressor.fit(rows, target), name="forest-value", sample=rows
    ).version
    values = Optimizer(registry).run(
        f"forest-value:{reg_version}", holdout=rows.assign(label=target), prune=0.5, max_loss="5%"
    )
    (outcome,) = values.outcomes
    assert outcome.passed, outcome.reason


def test_distillation_data_without_the_models_columns_is_refused(
    registry: Registry, mlp: int, digits: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, holdout = digits
    with pytest.raises(InvalidInput, match=r"the data rows lack the model's column\(s\) p0_0"):
        Optimizer(registry).run(
            f"digits:{mlp}", holdout=holdout, distill="mlp", data=train.drop(columns="p0_0")
        )


def _network(digits: tuple[pd.DataFrame, pd.DataFrame], change: str) -> Any:
    """An MLP on digits whose weights quantisation cannot carry, serving exactly as before:
    `outlier` gives one weight 10,000 times the largest, on a pixel that is always blank (int8's
    one scale per tensor then rounds every other weight to zero); `tiny` moves a factor of 1e8
    from the first layer to the second (ReLU does not mind; float16 cannot hold the result)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, _ = digits
    x = train.drop(columns="label")
    assert (x["p0_0"] == 0).all()
    model = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=300, random_state=0))
    model.fit(x, train["label"])
    mlp = model[-1]
    if change == "outlier":
        mlp.coefs_[0][0, 0] = 1e4 * float(np.abs(mlp.coefs_[0]).max())
    else:
        mlp.coefs_[0] *= 1e-8
        mlp.intercepts_[0] *= 1e-8
        mlp.coefs_[1] *= 1e8
    return model


@pytest.mark.parametrize(
    ("method", "change"), [("int8", "outlier"), ("int8-static", "outlier"), ("fp16", "tiny")]
)
def test_quantisation_that_breaks_the_model_is_refused_and_not_registered(
    registry: Registry, digits: tuple[pd.DataFrame, pd.DataFrame], method: str, change: str
) -> None:
    train, holdout = digits
    x = train.drop(columns="label")
    name = f"fragile-{change}"
    if name not in {m.name for m in registry.list_models()}:
        registry.register(_network(digits, change), name=name, sample=x, training_data=x)
    before = _versions(registry, name)
    report = Optimizer(registry).run(f"{name}:1", holdout=holdout, quantize=method)
    (outcome,) = report.outcomes
    assert report.parent.metrics["accuracy"] > 0.9  # the parent still works
    assert not outcome.passed
    assert outcome.version is None
    if method == "fp16":  # 1e8 times a weight is past float16's largest number
        assert outcome.reason.startswith("refused: the weights"), outcome.reason
        assert "beyond float16's range (65504)" in outcome.reason
    else:  # int8's one scale per tensor rounds every other weight to zero
        assert outcome.reason.startswith("refused by the gate: accuracy"), outcome.reason
        assert outcome.gate["loss"] > 0.5
    assert _versions(registry, name) == before
