"""`shipyard export --target edge`: a folder that runs with onnxruntime alone, answers as the
server answers, and refuses what a device cannot run."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from shipyard.cli import app
from shipyard.core import Settings
from shipyard.core.errors import InvalidInput, UnsupportedModel
from shipyard.demo._data import FEATURES
from shipyard.optimize import EdgeModel, ExportCorrupted, Optimizer, export_edge
from shipyard.registry import Registry
from tests.conftest import records


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def registry(home: Path) -> Iterator[Registry]:
    with Registry.from_settings(Settings(home=home)) as reg:
        yield reg


@pytest.fixture(scope="module")
def fraud(registry: Registry, fraud_model: Any, fraud_data: pd.DataFrame) -> int:
    """The demo's pipeline (imputer, scaler, one-hot, logistic regression): text input."""
    return registry.register(
        fraud_model, name="fraud", sample=fraud_data[FEATURES].iloc[:500], threshold=0.3
    ).version


@pytest.fixture(scope="module")
def digits(registry: Registry) -> tuple[int, pd.DataFrame]:
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_digits(as_frame=True)
    frame = data.frame.rename(columns={"target": "label"})
    frame.columns = [str(c).replace("pixel_", "p") for c in frame.columns]
    train, holdout = frame.iloc[:1400], frame.iloc[1400:]
    x = train.drop(columns="label")
    model = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=200, random_state=0))
    model.fit(x, train["label"])
    version = registry.register(model, name="digits", sample=x, training_data=x).version
    return version, holdout


def _served(registry: Registry, name: str, version: int, frame: pd.DataFrame) -> np.ndarray:
    served = registry.load(name, version)
    return np.asarray(served.predictor.predict(served.record.signature.validate_frame(frame)))


def test_the_phone_export_answers_as_the_server_does(
    registry: Registry, fraud: int, fraud_data: pd.DataFrame, tmp_path: Path
) -> None:
    result = export_edge(registry, f"fraud:{fraud}", profile="phone", out=tmp_path / "phone")
    assert set(result.files) == {"model.onnx", "model.ort", "signature.json", "run.py"}
    model = EdgeModel(result.folder)
    assert model.model_file == "model.ort"  # what ONNX Runtime Mobile loads
    rows = fraud_data[FEATURES].iloc[1000:1400]
    answers = model.predict(records(rows))
    scores = np.array([a["score"] for a in answers])
    np.testing.assert_allclose(scores, _served(registry, "fraud", fraud, rows)[:, 1], atol=1e-6)
    # the threshold the version was registered with decides the label, as on the server
    assert [a["label"] for a in answers] == [1 if s >= 0.3 else 0 for s in scores]
    manifest = json.loads((result.folder / "manifest.json").read_text())
    assert manifest["profile"]["name"] == "phone"
    assert "ai.onnx.ml.OneHotEncoder" in manifest["operators"]
    assert manifest["model_bytes"] == result.files["model.ort"]["bytes"]


def test_the_runner_needs_only_onnxruntime_and_numpy(
    registry: Registry, fraud: int, fraud_data: pd.DataFrame, tmp_path: Path
) -> None:
    folder = tmp_path / "browser"
    export_edge(registry, f"fraud:{fraud}", profile="browser", out=folder)
    tree = ast.parse((folder / "run.py").read_text())
    imported = {
        (node.module or "").split(".")[0]
        if isinstance(node, ast.ImportFrom)
        else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {
        "__future__",
        "hashlib",
        "json",
        "math",
        "sys",
        "pathlib",
        "typing",
        "numpy",
        "onnxruntime",
    }
    rows = fraud_data[FEATURES].iloc[:5]
    (tmp_path / "rows.json").write_text(json.dumps({"instances": records(rows)}))
    # run from the export folder with shipyard's source off the path
    done = subprocess.run(
        [sys.executable, "-I", str(folder / "run.py"), str(tmp_path / "rows.json")],
        capture_output=True, text=True, check=False, cwd=folder,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["model"], out["version"]) == ("fraud", fraud)
    expected = _served(registry, "fraud", fraud, rows)[:, 1]
    np.testing.assert_allclose([p["score"] for p in out["predictions"]], expected, atol=1e-6)
    bad = subprocess.run(
        [sys.executable, "-I", str(folder / "run.py"), "-"],
        input=json.dumps([{"transaction_amount": 1.0}]), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "has no 'hour_of_day'" in bad.stderr


def test_a_changed_file_is_caught_before_the_model_loads(
    registry: Registry, fraud: int, tmp_path: Path
) -> None:
    folder = tmp_path / "phone"
    export_edge(registry, f"fraud:{fraud}", profile="phone", out=folder)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ExportCorrupted, match=r"model.onnx does not match manifest.json"):
        EdgeModel(folder)
    done = subprocess.run(
        [sys.executable, "-I", str(folder / "run.py"), "--check"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1 or done.returncode == 2
    assert "does not match manifest.json" in done.stderr


def test_iot_takes_numbers_only_and_names_the_text_column(
    registry: Registry, fraud: int, tmp_path: Path
) -> None:
    with pytest.raises(UnsupportedModel, match=r"iot profile lacks: ai.onnx.ml.OneHotEncoder"):
        export_edge(registry, f"fraud:{fraud}", profile="iot", out=tmp_path / "iot")
    assert not (tmp_path / "iot").exists()


def test_an_operator_the_profile_lacks_is_named(registry: Registry, tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    # a user's ONNX graph, cos(x @ w): an operator no profile lists
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cos", ["h"], ["y"])],
        "cosine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        [numpy_helper.from_array(np.array([[0.5], [-1.0]], dtype=np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version = registry.register(model, name="cosine").version
    with pytest.raises(UnsupportedModel, match=r"operator\(s\) the browser profile lacks: Cos;"):
        export_edge(registry, f"cosine:{version}", profile="browser", out=tmp_path / "cos")


def test_a_model_over_the_budget_is_refused_with_its_size(
    registry: Registry, tmp_path: Path
) -> None:
    from sklearn.ensemble import ExtraTreesClassifier

    # fully grown trees on noise: megabytes of graph
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(3000, 8)), columns=[f"f{i}" for i in range(8)])
    big = ExtraTreesClassifier(n_estimators=20, random_state=0).fit(frame, rng.integers(0, 2, 3000))
    version = registry.register(big, name="big", sample=frame.iloc[:200]).version
    with pytest.raises(
        UnsupportedModel, match=r"MB, over the iot profile's 2 MB budget; make it smaller"
    ):
        export_edge(registry, f"big:{version}", profile="iot", out=tmp_path / "big")


def test_export_ships_the_int8_child_unless_told_exact(
    registry: Registry, digits: tuple[int, pd.DataFrame], tmp_path: Path
) -> None:
    version, holdout = digits
    report = Optimizer(registry).run(
        f"digits:{version}", holdout=holdout, quantize="int8", max_loss="2%"
    )
    child = report.outcomes[0].version
    assert child is not None
    shipped = export_edge(registry, f"digits:{version}", profile="iot", out=tmp_path / "int8")
    assert (shipped.version, shipped.requested_version) == (child, version)
    exact = export_edge(
        registry, f"digits:{version}", profile="iot", out=tmp_path / "fp32", exact=True
    )
    assert exact.version == version
    assert shipped.size_bytes * 2 < exact.size_bytes
    # the int8 export answers as the int8 version serves, within float rounding
    x = holdout.drop(columns="label")
    edge = EdgeModel(shipped.folder)
    got = np.array(
        [[a["probabilities"][str(c)] for c in range(10)] for a in edge.predict(records(x))]
    )
    np.testing.assert_allclose(got, _served(registry, "digits", child, x), atol=1e-5)


def test_export_refuses_what_it_cannot_do(
    registry: Registry, fraud: int, home: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        InvalidInput, match=r"no edge profile 'watch'; use one of phone, iot, browser"
    ):
        export_edge(registry, f"fraud:{fraud}", profile="watch", out=tmp_path / "x")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        export_edge(registry, f"fraud:{fraud}", profile="phone", out=occupied)
    assert (occupied / "keep.txt").read_text() == "mine"
    done = subprocess.run(
        [sys.executable, "-m", "shipyard", "--home", str(home), "export", f"fraud:{fraud}",
         "--profile", "watch", "--out", str(tmp_path / "y")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no edge profile 'watch'" in done.stderr
    assert "Traceback" not in done.stderr
    result = CliRunner().invoke(
        app,
        [
            "--home",
            str(home),
            "export",
            f"fraud:{fraud}",
            "--profile",
            "phone",
            "--out",
            str(tmp_path / "z"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["profile"] == "phone"


def test_overwrite_replaces_only_an_earlier_export(
    registry: Registry, fraud: int, tmp_path: Path
) -> None:
    folder = tmp_path / "again"
    export_edge(registry, f"fraud:{fraud}", profile="browser", out=folder)
    again = export_edge(registry, f"fraud:{fraud}", profile="phone", out=folder, overwrite=True)
    assert "model.ort" in again.files
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInput, match="not a shipyard export"):
        export_edge(registry, f"fraud:{fraud}", profile="phone", out=mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_the_runner_refuses_what_the_server_would(
    registry: Registry, fraud: int, fraud_data: pd.DataFrame, tmp_path: Path
) -> None:
    model = EdgeModel(
        export_edge(registry, f"fraud:{fraud}", profile="phone", out=tmp_path / "x").folder
    )
    row = records(fraud_data[FEATURES].iloc[:1])[0]
    for column, value, message in [
        ("hour_of_day", 2.5, "must be an integer"),
        ("merchant_category", 42, "must be a string"),
        ("transaction_amount", "lots", "must be a number"),
        ("transaction_amount", True, "must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.predict([{**row, column: value}])
    assert model.predict([{**row, "hour_of_day": 3.0}])[0]["score"] >= 0
