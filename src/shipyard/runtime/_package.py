"""Packaging: recognise a model's flavour, save it natively, and offer it an ONNX fast path."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns, Signature
from shipyard.core.errors import MissingDependency, ModelUnavailable, UnsupportedModel
from shipyard.runtime._lightgbm import LightGBMFlavour
from shipyard.runtime._mlflow import MlflowFlavour
from shipyard.runtime._onnx import OnnxFlavour, OnnxPredictor
from shipyard.runtime._predictor import Flavour, ModelInfo, Predictor
from shipyard.runtime._sklearn import SklearnFlavour
from shipyard.runtime._torch import TorchFlavour, read_torch_file
from shipyard.runtime._xgboost import XGBoostFlavour

__all__ = [
    "FLAVOURS",
    "Packaged",
    "described_inputs",
    "detect_flavour",
    "get_flavour",
    "load_model_file",
    "load_predictor",
    "package",
]

ONNX_TOLERANCE = 1e-5

# the first that matches packages a model: scikit-learn, which takes any BaseEstimator, last
FLAVOURS: dict[str, Flavour] = {
    f.name: f
    for f in (
        MlflowFlavour(),
        OnnxFlavour(),
        LightGBMFlavour(),
        XGBoostFlavour(),
        TorchFlavour(),
        SklearnFlavour(),
    )
}


@dataclass
class Packaged:
    """A model saved natively under `folder`, with its ONNX fast path when one agrees."""

    info: ModelInfo
    runtime: str
    onnx: bytes | None
    onnx_report: dict[str, Any]
    requirements: list[str] = field(default_factory=list)


def get_flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise ModelUnavailable(
            f"this shipyard does not know the model flavour {name!r}; upgrade shipyard"
        ) from None


def detect_flavour(model: Any) -> Flavour:
    for flavour in FLAVOURS.values():
        if flavour.matches(model):
            return flavour
    raise UnsupportedModel(
        f"shipyard cannot package a {type(model).__module__}.{type(model).__name__}; supported: "
        "scikit-learn estimators and pipelines, LightGBM, XGBoost, PyTorch networks "
        "(torch.nn.Module, or shipyard.TorchModel for a classifier), ONNX models and MLflow "
        "model directories"
    )


def described_inputs(model: Any) -> tuple[Signature, Any] | None:
    """What `model` says it takes (its signature, and example rows when it carries them), or
    None when only a sample can tell (a scikit-learn estimator, say)."""
    return detect_flavour(model).described_inputs(model)


def load_model_file(path: Path) -> Any:
    """Read a model from disk as the object `package` takes, by its format.

    A folder with an `MLmodel` file is an MLflow model; `.onnx` is ONNX; `.joblib`/`.pkl` a
    pickled scikit-learn (or LightGBM/XGBoost scikit-learn-API) model; `.txt` a LightGBM
    booster; `.json`/`.ubj` an XGBoost booster; `.pt2` a PyTorch network saved with
    `torch.export.save`, `.pt` one saved with `torch.jit.save` (TorchScript). A network file
    cannot say its classes: they come from the `shipyard.json` extra file that shipyard's own
    bundles carry (`{"classes": [...], "outputs": "logits"}`), and without it the network is a
    regressor. A file that is not what its name says is refused naming the file and what it is
    not (`UnsupportedModel`), never a traceback.
    """
    if not path.exists():
        raise UnsupportedModel(f"model path {str(path)!r} does not exist")
    if path.is_dir():
        if (path / "MLmodel").is_file():
            return path
        raise UnsupportedModel(
            f"{path} is a folder without an MLmodel file; point at the model file"
        )
    suffix = path.suffix.lower()
    readers = {
        ".onnx": (_read_onnx, "an ONNX model"),
        ".joblib": (_read_pickle, "a joblib/pickle file of a model"),
        ".pkl": (_read_pickle, "a joblib/pickle file of a model"),
        ".pickle": (_read_pickle, "a joblib/pickle file of a model"),
        ".txt": (_read_lightgbm, "a LightGBM model in its text format"),
        ".json": (_read_xgboost, "an XGBoost model in its JSON format"),
        ".ubj": (_read_xgboost, "an XGBoost model in its UBJSON format"),
        ".pt2": (read_torch_file, "a PyTorch program saved with torch.export.save"),
        ".pt": (read_torch_file, "a TorchScript module saved with torch.jit.save"),
    }
    if suffix == ".pth":
        raise UnsupportedModel(
            f"{path.name} looks like a PyTorch state_dict or torch.save file, which needs its "
            "Python class to load; save the network with torch.export.save (.pt2) or "
            "torch.jit.save (.pt) and register that file"
        )
    if suffix not in readers:
        raise UnsupportedModel(
            f"cannot tell the format of {path.name}; use .joblib/.pkl (scikit-learn), .onnx, "
            ".txt (LightGBM), .json/.ubj (XGBoost), .pt2/.pt (PyTorch) or an MLflow model folder"
        )
    read, what = readers[suffix]
    try:
        return read(path)
    except (MissingDependency, UnsupportedModel):
        raise
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise UnsupportedModel(
            f"{path.name} is not {what} that can be read ({type(error).__name__}"
            f"{': ' + detail if detail else ''}); check the file, or give it the extension of "
            "its format"
        ) from None


def _read_onnx(path: Path) -> Any:
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


def _read_pickle(path: Path) -> Any:
    import joblib

    return joblib.load(path)  # pickle runs code: only register files you trust


def _read_lightgbm(path: Path) -> Any:
    from shipyard.runtime._lightgbm import _lgb

    return _lgb().Booster(model_file=str(path))


def _read_xgboost(path: Path) -> Any:
    from shipyard.runtime._xgboost import _xgb

    booster = _xgb().Booster()
    booster.load_model(str(path))
    return booster


def _requirements(flavour: Flavour, info: ModelInfo, uses_onnx: bool) -> list[str]:
    names = list(flavour.requirements_for(info)) + (["onnxruntime"] if uses_onnx else [])
    pins = []
    for name in dict.fromkeys(names):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def package(model: Any, signature: Signature, sample: Columns, folder: Path) -> Packaged:
    """Save `model` under `folder` and decide which runtime serves it.

    The native model is saved and loaded back, and must score the sample; an ONNX conversion is
    kept only if it agrees with the native scores on the sample within 1e-5.
    """
    flavour = detect_flavour(model)
    info = flavour.save(model, folder, signature)
    try:
        native = flavour.load(folder, info)
        expected = np.asarray(native.predict(sample))
    except (UnsupportedModel, ModelUnavailable):
        raise
    except Exception as error:
        raise UnsupportedModel(
            f"the {flavour.name} model fails on the sample it was registered with: "
            f"{type(error).__name__}: {error}; check that the sample has the model's features"
        ) from None
    info = flavour.refine(info, expected)
    if info.task == "regression" and expected.ndim != 1:
        expected = expected.reshape(-1)
    if not np.all(np.isfinite(expected)):
        raise UnsupportedModel(
            f"the {flavour.name} model gives non-finite outputs on the sample; check the model"
        )
    report: dict[str, Any] = {"attempts": []}
    onnx_bytes = None
    for label, convert in flavour.onnx_candidates(model, info, signature):
        attempt: dict[str, Any] = {"converter": label}
        report["attempts"].append(attempt)
        try:
            started = time.perf_counter()
            candidate = convert()
            predictor = OnnxPredictor.for_signature(
                candidate, signature, info.input_order, info.task, len(info.classes or [])
            )
            diff = (
                float(np.max(np.abs(predictor.predict(sample) - expected)))
                if len(expected)
                else 0.0
            )
        except Exception as error:
            attempt["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            continue
        attempt["max_abs_diff"] = diff
        attempt["seconds"] = round(time.perf_counter() - started, 3)
        if diff <= ONNX_TOLERANCE:
            onnx_bytes = candidate
            info.extra["onnx_plan"] = predictor.plan
            report["chosen"] = label
            break
    runtime = "onnxruntime" if onnx_bytes is not None else native.runtime
    report["tolerance"] = ONNX_TOLERANCE
    return Packaged(
        info, runtime, onnx_bytes, report, _requirements(flavour, info, onnx_bytes is not None)
    )


def load_native(folder: Path, info: ModelInfo) -> Any:
    """The model object the flavour loads from `folder` (a scikit-learn estimator, a LightGBM or
    XGBoost booster), for what a graph cannot tell (an explainer's coefficients and trees);
    None for flavours served through a wrapper only."""
    return getattr(load_predictor(folder, info, info.flavour, None), "native", None)


def load_predictor(
    folder: Path, info: ModelInfo, runtime: str, onnx_model: bytes | None
) -> Predictor:
    """Load a packaged model for serving on the runtime packaging chose."""
    try:
        if onnx_model is not None and runtime == "onnxruntime" and "onnx_plan" in info.extra:
            return OnnxPredictor(
                onnx_model, info.extra["onnx_plan"], info.task, len(info.classes or [])
            )
        return get_flavour(info.flavour).load(folder, info)
    except (UnsupportedModel, ModelUnavailable, ImportError):
        raise
    except Exception as error:
        raise ModelUnavailable(
            f"the {info.flavour} model cannot be loaded: {type(error).__name__}: {error}; "
            "check that the installed libraries match the bundle's requirements.txt"
        ) from None
