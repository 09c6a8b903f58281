"""MLflow model directories (an `MLmodel` file plus the flavour's files), so MLflow users bring
what they have. The sklearn flavour loads natively (and gets the ONNX fast path); any other
flavour is served through `mlflow.pyfunc`, which needs the `mlflow` extra.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns, ColumnSpec, ColumnType, Signature
from shipyard.core.errors import UnsupportedModel, missing_extra
from shipyard.runtime._predictor import Flavour, ModelInfo, as_probabilities, columns_to_frame
from shipyard.runtime._sklearn import SklearnPredictor, describe_estimator, sklearn_onnx_candidates

__all__ = ["MlflowFlavour", "is_mlflow_dir", "mlflow_input_example", "mlflow_signature"]

_MLFLOW_TYPES: dict[str, ColumnType] = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "string",
}


def is_mlflow_dir(model: Any) -> bool:
    return isinstance(model, Path | str) and (Path(model) / "MLmodel").is_file()


def _read_mlmodel(folder: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load((folder / "MLmodel").read_text())
    if not isinstance(data, dict) or "flavors" not in data:
        raise UnsupportedModel(
            f"{folder / 'MLmodel'} has no 'flavors' section; is it an MLflow model?"
        )
    return data


def mlflow_signature(folder: Path) -> Signature | None:
    """The column signature an MLflow model directory declares, if it declares one."""
    spec = _read_mlmodel(Path(folder)).get("signature", {}).get("inputs")
    if not spec:
        return None
    columns = []
    for item in json.loads(spec):
        if "name" not in item or item.get("type") not in _MLFLOW_TYPES:
            return None
        columns.append(
            ColumnSpec(item["name"], _MLFLOW_TYPES[item["type"]], not item.get("required", True))
        )
    return Signature(tuple(columns))


def mlflow_input_example(folder: Path) -> Any:
    """The example rows an MLflow model directory carries (a DataFrame), if it carries some."""
    info = _read_mlmodel(Path(folder)).get("saved_input_example_info") or {}
    if info.get("type") != "dataframe":
        return None
    import pandas as pd

    try:
        data = json.loads(
            (Path(folder) / info.get("artifact_path", "input_example.json")).read_text()
        )
        if info.get("pandas_orient", "split") == "split":
            return pd.DataFrame(data["data"], columns=data["columns"])
        return pd.DataFrame.from_records(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an example that cannot be read is no example


# types a skops file may hold without being named by whoever saved it: the libraries a
# scikit-learn model is made of; anything else must be listed as trusted when saving
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


def _load_sklearn(folder: Path, flavour: dict[str, Any]) -> Any:
    path = folder / flavour["pickled_model"]
    if flavour.get("serialization_format") == "skops":
        return _load_skops(path, flavour.get("skops_trusted_types") or [])
    with path.open("rb") as fh:
        return pickle.load(fh)  # the bundle's hashes were verified before this load


def _load_skops(path: Path, declared: list[str]) -> Any:
    """A skops file, trusting only scikit-learn's own types and those declared when it was
    saved (`skops_trusted_types`); any other type is refused by name, never loaded."""
    try:
        import skops.io as sio
    except ImportError:
        raise missing_extra("skops", "mlflow", "MLflow models saved in the skops format") from None
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as error:
        raise UnsupportedModel(
            f"{path.name} is not a skops file that can be read ({type(error).__name__}: {error})"
        ) from None
    refused = [t for t in untrusted if t not in declared and not t.startswith(_TRUSTED_PREFIXES)]
    if refused:
        raise UnsupportedModel(
            f"{path.name} (skops) holds types shipyard does not trust: {', '.join(refused)}; "
            "if you trust them, save the model with mlflow.sklearn.save_model(..., "
            f"skops_trusted_types={refused!r})"
        )
    return sio.load(path, trusted=untrusted)


class PyfuncPredictor:
    runtime = "mlflow"

    def __init__(self, model: Any, info: ModelInfo) -> None:
        self._model = model
        self._info = info

    def predict(self, columns: Columns) -> np.ndarray:
        out = np.asarray(self._model.predict(columns_to_frame(columns, self._info.input_order)))
        if self._info.task == "regression":
            if out.ndim == 2 and out.shape[1] > 1:
                # probabilities before `refine` has seen them: keep the shape that tells it so
                return out.astype(np.float64)
            return out.astype(np.float64).reshape(-1)
        return as_probabilities(out, len(self._info.classes or []))


class MlflowFlavour(Flavour):
    name = "mlflow"
    requirements = ("numpy",)

    def matches(self, model: Any) -> bool:
        return is_mlflow_dir(model)

    def described_inputs(self, model: Any) -> tuple[Signature, Any] | None:
        """The columns of the model's signature, and its input example when it has one."""
        signature = mlflow_signature(Path(model))
        if signature is None:
            return None
        example = mlflow_input_example(Path(model))
        if example is not None and not set(signature.names) <= set(map(str, example.columns)):
            example = None
        return signature, None if example is None else example[signature.names]

    def save(self, model: Any, folder: Path, signature: Signature) -> ModelInfo:
        source = Path(model)
        mlmodel = _read_mlmodel(source)
        shutil.copytree(source, folder, dirs_exist_ok=True)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        flavours = mlmodel["flavors"]
        if "sklearn" in flavours:
            estimator = _load_sklearn(folder, flavours["sklearn"])
            task, classes, order, kind = describe_estimator(estimator, signature)
            numeric = all(
                s.is_numeric or s.type == "bool" for s in signature.columns if s.name in order
            )
            extra = {
                "loader": "sklearn",
                "input": kind,
                "numeric": numeric,
                "serialization": flavours["sklearn"].get("serialization_format"),
            }
            return ModelInfo(self.name, task, classes, files, order, extra)
        if "python_function" not in flavours:
            raise UnsupportedModel(
                f"the MLflow model at {source} has flavours {', '.join(flavours)} but no "
                "python_function; save it with an MLflow flavour that supports pyfunc"
            )
        return ModelInfo(
            self.name, "regression", None, files, signature.names, {"loader": "pyfunc"}
        )

    def load(self, folder: Path, info: ModelInfo) -> SklearnPredictor | PyfuncPredictor:
        if info.extra.get("loader") == "sklearn":
            flavour = _read_mlmodel(folder)["flavors"]["sklearn"]
            return SklearnPredictor(_load_sklearn(folder, flavour), info)
        try:
            import mlflow.pyfunc
        except ImportError:
            raise missing_extra("mlflow", "mlflow", "MLflow pyfunc models") from None
        return PyfuncPredictor(mlflow.pyfunc.load_model(str(folder)), info)

    def requirements_for(self, info: ModelInfo) -> tuple[str, ...]:
        if info.extra.get("loader") == "sklearn":
            skops = ("skops",) if info.extra.get("serialization") == "skops" else ()
            return ("scikit-learn", *skops, "numpy")
        # either MLflow distribution can load a pyfunc model; only the installed one is pinned
        return ("mlflow", "mlflow-skinny", "cloudpickle", "pandas", "numpy")

    def refine(self, info: ModelInfo, output: np.ndarray) -> ModelInfo:
        """A pyfunc model's task shows only in its output: 2-D probabilities or 1-D values."""
        if info.extra.get("loader") != "pyfunc" or output.ndim != 2 or output.shape[1] < 2:
            return info
        classes = list(range(output.shape[1]))
        info.task = "binary" if len(classes) == 2 else "multiclass"
        info.classes = classes
        return info

    def onnx_candidates(
        self, model: Any, info: ModelInfo, signature: Signature
    ) -> list[tuple[str, Callable[[], bytes]]]:
        if info.extra.get("loader") != "sklearn":
            return []
        source = Path(model)
        estimator = _load_sklearn(source, _read_mlmodel(source)["flavors"]["sklearn"])
        return sklearn_onnx_candidates(estimator, info, signature)
