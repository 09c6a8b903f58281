"""PyTorch networks as a flavour: saved without their Python class, served by onnxruntime when
the exported graph agrees, and by torch itself otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from fastapi.testclient import TestClient  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from tests.conftest import records  # noqa: E402

import shipyard  # noqa: E402
from shipyard.access import KeyStore  # noqa: E402
from shipyard.app import create_app  # noqa: E402
from shipyard.core import Settings  # noqa: E402
from shipyard.core.errors import MissingDependency, UnsupportedModel  # noqa: E402
from shipyard.registry import Registry  # noqa: E402
from shipyard.runtime import ModelInfo, TorchModel, load_model_file, load_predictor  # noqa: E402

TOLERANCE = 1e-5
SAMPLE_ROWS = 400

Serve = Callable[[Any, pd.DataFrame], Any]


@pytest.fixture(scope="module")
def digits() -> tuple[pd.DataFrame, np.ndarray]:
    """scikit-learn's 8x8 digits (shipped with it): 64 pixel columns scaled to 0-1, labels 0-9."""
    X, y = load_digits(return_X_y=True)
    return pd.DataFrame(X / 16.0, columns=[f"pixel_{i}" for i in range(64)]), y


def _fit(module: Any, X: pd.DataFrame, target: np.ndarray, loss: Callable[..., Any]) -> Any:
    """A few full-batch Adam steps, seeded: enough for a network whose outputs mean something."""
    inputs = torch.tensor(X.to_numpy(), dtype=torch.float32)
    optimiser = torch.optim.Adam(module.parameters(), lr=0.01)
    for _ in range(40):
        optimiser.zero_grad()
        loss(module(inputs), target).backward()
        optimiser.step()
    return module  # left in training mode, as after a training loop


def _mlp(outputs: int, *, dropout: float = 0.0) -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 32),
        torch.nn.ReLU(),
        torch.nn.Dropout(dropout),
        torch.nn.Linear(32, outputs),
    )


def _run(module: Any, X: pd.DataFrame) -> Any:
    """What the network itself answers, in eval mode."""
    module.eval()
    try:
        with torch.no_grad():
            return module(torch.tensor(X.to_numpy(), dtype=torch.float32))
    finally:
        module.train()


@pytest.fixture(scope="module")
def classifier(digits: tuple[pd.DataFrame, np.ndarray]) -> Any:
    """Ten logits per row, with dropout (so eval mode matters)."""
    X, y = digits
    return _fit(_mlp(10, dropout=0.2), X, torch.tensor(y), torch.nn.functional.cross_entropy)


class Residual(torch.nn.Module):
    """A network of the user's own class: one logit ("is it a zero?") through a skip path."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(64, 64)
        self.out = torch.nn.Linear(64, 1)

    def forward(self, x: Any) -> Any:
        return self.out(x + torch.tanh(self.hidden(x))).squeeze(-1)


@dataclass
class Registered:
    registry: Registry
    settings: Settings
    version: Any


@pytest.fixture(scope="module")
def registered(
    tmp_path_factory: pytest.TempPathFactory,
    classifier: Any,
    digits: tuple[pd.DataFrame, np.ndarray],
) -> Iterator[Registered]:
    """The digits classifier registered once as digits:1, aliased production, on SQLite."""
    settings = Settings(home=tmp_path_factory.mktemp("torch") / "home", actor="tester")
    with Registry.from_settings(settings) as registry:
        version = registry.register(
            TorchModel(classifier, classes=list(range(10))),
            name="digits",
            sample=digits[0].iloc[:SAMPLE_ROWS],
            aliases=["production"],
        )
        yield Registered(registry, settings, version)


def test_classifier_registers_with_the_onnx_fast_path_and_answers_its_softmax(
    registered: Registered, classifier: Any, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X = digits[0]
    assert registered.version.flavour == "torch"
    assert registered.version.runtime == "onnxruntime"
    metadata = registered.registry.metadata("digits", 1)
    assert metadata["onnx"]["chosen"] == "torch.onnx dynamo"
    assert metadata["model"]["classes"] == list(range(10))
    assert metadata["model"]["extra"]["format"] == "torch.export"
    assert classifier.training  # put back as it was

    served = registered.registry.load("digits", 1)

    assert served.predictor.runtime == "onnxruntime"
    columns = served.signature.validate_frame(X)
    expected = torch.softmax(_run(classifier, X), dim=1).numpy()
    np.testing.assert_allclose(served.predictor.predict(columns), expected, atol=TOLERANCE)


def test_native_torch_predictor_loads_the_bundle_and_exposes_its_network(
    registered: Registered, classifier: Any, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X = digits[0]
    bundle = registered.registry.open("digits", 1)
    info = ModelInfo.from_dict(bundle.metadata["model"])
    assert info.files == ["model.pt2"]

    native = load_predictor(bundle.folder / "model", info, "torch", None)

    assert native.runtime == "torch"
    columns = registered.version.signature.validate_frame(X)
    expected = torch.softmax(_run(classifier, X), dim=1).numpy()
    np.testing.assert_allclose(native.predict(columns), expected, atol=TOLERANCE)
    # the raw network, for an optimiser to read: logits, and the trained weights by name
    module = native.module
    with torch.inference_mode():
        logits = module(torch.tensor(X.to_numpy()[:5], dtype=torch.float32))
    np.testing.assert_allclose(logits.numpy(), _run(classifier, X.iloc[:5]).numpy(), atol=1e-6)
    weights = dict(module.named_parameters())
    assert torch.equal(weights["0.weight"], classifier[0].weight)


def test_http_predict_answers_the_classes_probabilities(
    registered: Registered, classifier: Any, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X = digits[0].iloc[:3]
    token = KeyStore(registered.registry.database).create("admin", name="tests")[1]
    app = create_app(registered.settings)
    headers = {"Authorization": f"Bearer {token}"}

    with TestClient(app, raise_server_exceptions=False, headers=headers) as client:
        response = client.post("/v1/models/digits/predict", json={"instances": records(X)})

    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    expected = torch.softmax(_run(classifier, X), dim=1).numpy()
    for answer, row in zip(answers, expected, strict=True):
        assert answer["label"] == int(np.argmax(row))
        got = [answer["probabilities"][str(c)] for c in range(10)]
        np.testing.assert_allclose(got, row, atol=TOLERANCE)


def test_custom_module_with_one_logit_is_a_binary_classifier_with_sigmoid_scores(
    serve: Serve, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X, y = digits
    torch.manual_seed(0)
    zero = torch.tensor((y == 0).astype(np.float32))
    network = _fit(Residual(), X, zero, torch.nn.functional.binary_cross_entropy_with_logits)

    served = serve(TorchModel(network, classes=["other", "zero"]), X.iloc[:SAMPLE_ROWS])

    assert served.info.task == "binary"
    assert served.info.classes == ["other", "zero"]
    assert served.info.extra["module_class"] == "Residual"
    assert served.packaged.runtime == "onnxruntime"
    positive = torch.sigmoid(_run(network, X.iloc[:SAMPLE_ROWS])).numpy()
    for predictor in (served.predictor, served.native):
        scores = predictor.predict(served.columns)
        np.testing.assert_allclose(scores[:, 1], positive, atol=TOLERANCE)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=TOLERANCE)


def test_bare_network_with_one_output_is_a_regressor(
    serve: Serve, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X, y = digits
    network = _fit(_mlp(1), X, torch.tensor(y, dtype=torch.float32), _mse)

    served = serve(network, X.iloc[:SAMPLE_ROWS])

    assert served.info.task == "regression"
    assert served.info.classes is None
    assert served.packaged.runtime == "onnxruntime"
    expected = _run(network, X.iloc[:SAMPLE_ROWS]).numpy().reshape(-1)
    for predictor in (served.predictor, served.native):
        np.testing.assert_allclose(predictor.predict(served.columns), expected, atol=TOLERANCE)


def _mse(output: Any, target: Any) -> Any:
    return torch.nn.functional.mse_loss(output.reshape(-1), target)


def test_without_onnxscript_the_torchscript_exporter_gives_the_fast_path(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` raises
    network = _mlp(10)
    X = digits[0].iloc[:SAMPLE_ROWS]

    served = serve(TorchModel(network, classes=list(range(10))), X)

    dynamo, torchscript = served.packaged.onnx_report["attempts"]
    assert "pip install 'shipyard[torch]'" in dynamo["error"]
    assert (
        served.packaged.onnx_report["chosen"]
        == torchscript["converter"]
        == "torch.onnx torchscript"
    )
    expected = torch.softmax(_run(network, X), dim=1).numpy()
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=TOLERANCE)


def test_bare_network_with_several_outputs_is_refused_with_how_to_wrap_it(
    serve: Serve, classifier: Any, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    with pytest.raises(
        UnsupportedModel,
        match=r"outputs 10 columns.*shipyard\.TorchModel\(module, classes=\[\.\.\.\]\)",
    ):
        serve(classifier, digits[0].iloc[:20])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda net: TorchModel(net, classes=[0, 1, 2]), "outputs 10 columns.*names 3 classes"),
        (lambda net: TorchModel(net, classes=[1, 1]), "two or more distinct labels"),
        (lambda net: TorchModel(net, classes=list(range(10)), outputs="logit"), "'logits'"),
        (lambda net: TorchModel(net.double(), classes=list(range(10))), r"module\.float\(\)"),
        (lambda net: TorchModel(lambda x: net(x), classes=list(range(10))), "torch.nn.Module"),
    ],
    ids=["classes-and-outputs-differ", "repeated-class", "unknown-outputs", "float64", "function"],
)
def test_networks_shipyard_cannot_serve_are_refused_with_what_to_change(
    serve: Serve, digits: tuple[pd.DataFrame, np.ndarray], make: Callable[[Any], Any], message: str
) -> None:
    with pytest.raises(UnsupportedModel, match=message):
        serve(make(_mlp(10)), digits[0].iloc[:20])


def test_network_torch_export_cannot_capture_is_saved_as_torchscript(
    serve: Serve, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    class Branching(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(64, 1)

        def forward(self, x: Any) -> Any:
            if x.sum() >= 0:  # data-dependent: torch.export refuses, a trace records one path
                return self.linear(x)
            return -self.linear(x)

    torch.manual_seed(0)
    network = Branching()
    X = digits[0].iloc[:SAMPLE_ROWS]

    served = serve(network, X)

    extra = served.info.extra
    assert served.info.files == ["model.pt"]
    assert extra["format"] == "torchscript"
    assert extra["export_error"]
    assert extra["trace_warnings"]
    expected = _run(network, X).numpy().reshape(-1)
    np.testing.assert_allclose(served.native.predict(served.columns), expected, atol=TOLERANCE)
    np.testing.assert_allclose(served.predictor.predict(served.columns), expected, atol=TOLERANCE)


def test_pt2_file_registers_with_the_classes_its_extra_file_names(
    registered: Registered, tmp_path: Path, classifier: Any, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X = digits[0]
    network = torch.nn.Sequential(*list(classifier)).eval()
    program = torch.export.export(
        network, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    stated = json.dumps({"classes": list(range(10)), "outputs": "logits"})
    torch.export.save(program, str(tmp_path / "digits.pt2"), extra_files={"shipyard.json": stated})

    model = load_model_file(tmp_path / "digits.pt2")

    assert isinstance(model, TorchModel)
    assert list(model.classes or []) == list(range(10))
    version = registered.registry.register(model, name="digits-file", sample=X.iloc[:SAMPLE_ROWS])
    assert (version.task, version.runtime) == ("multiclass", "onnxruntime")
    served = registered.registry.load("digits-file", 1)
    expected = torch.softmax(_run(network, X), dim=1).numpy()
    np.testing.assert_allclose(
        served.predictor.predict(served.signature.validate_frame(X)), expected, atol=TOLERANCE
    )


def test_network_files_without_shipyard_metadata_are_regressors(
    serve: Serve, tmp_path: Path, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    X = digits[0].iloc[:SAMPLE_ROWS]
    network = _mlp(1).eval()
    example = torch.zeros(2, 64)
    torch.export.save(
        torch.export.export(network, (example,), dynamic_shapes=({0: torch.export.Dim("b")},)),
        str(tmp_path / "plain.pt2"),
    )
    with pytest.warns(DeprecationWarning, match="torch.jit"):
        torch.jit.save(torch.jit.trace(network, example), str(tmp_path / "plain.pt"))
    expected = _run(network, X).numpy().reshape(-1)

    for name, saved_as in (("plain.pt2", "torch.export"), ("plain.pt", "torchscript")):
        model = load_model_file(tmp_path / name)
        assert model.classes is None
        served = serve(model, X)
        assert (served.info.task, served.info.extra["format"]) == ("regression", saved_as)
        assert served.packaged.runtime == "onnxruntime"
        np.testing.assert_allclose(
            served.predictor.predict(served.columns), expected, atol=TOLERANCE
        )


def test_files_that_need_their_python_class_are_refused_with_how_to_export_them(
    tmp_path: Path,
) -> None:
    torch.save(_mlp(1), tmp_path / "pickled.pt")
    torch.save(_mlp(1).state_dict(), tmp_path / "weights.pth")

    with pytest.raises(
        UnsupportedModel, match=r"pickled\.pt is not a TorchScript module.*torch\.export\.save"
    ):
        load_model_file(tmp_path / "pickled.pt")
    with pytest.raises(UnsupportedModel, match=r"weights\.pth .*torch\.export\.save \(\.pt2\)"):
        load_model_file(tmp_path / "weights.pth")


def test_torch_bundle_without_torch_installed_names_the_extra(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, digits: tuple[pd.DataFrame, np.ndarray]
) -> None:
    served = serve(_mlp(1), digits[0].iloc[:20])
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError

    with pytest.raises(MissingDependency, match=r"pip install 'shipyard\[torch\]'"):
        load_predictor(served.folder, served.info, "torch", None)
    # the ONNX fast path serves without torch
    served_again = load_predictor(served.folder, served.info, "onnxruntime", served.packaged.onnx)
    assert served_again.runtime == "onnxruntime"


def test_shipyard_imports_without_torch_and_a_bundle_loads_without_the_network_class(
    registered: Registered, tmp_path: Path
) -> None:
    bundle = registered.registry.open("digits", 1)
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        import numpy as np
        import shipyard, shipyard.registry
        from shipyard.runtime import FLAVOURS, ModelInfo, load_predictor
        assert not FLAVOURS["torch"].matches(object())
        assert "torch" not in sys.modules, "importing shipyard imported torch"
        info = ModelInfo.from_dict(json.loads({json.dumps(json.dumps(bundle.metadata["model"]))}))
        predictor = load_predictor(Path({str(bundle.folder / "model")!r}), info, "torch", None)
        columns = {{name: np.full(2, 0.5) for name in info.input_order}}
        print(predictor.predict(columns).shape)
        """
    )
    # run away from the repository: nothing there can lend the network's class
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 10)"


def test_torch_model_is_a_top_level_name() -> None:
    assert shipyard.TorchModel is TorchModel
