"""Small synthetic data and a `serve` helper: package a model, then load it back as serving does."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core import Columns, Signature
from shipyard.runtime import ModelInfo, Packaged, Predictor, load_predictor, package

ROWS = 300
NUMERIC = ["amount", "hour", "distance", "velocity"]


@pytest.fixture(scope="session")
def mixed_frame() -> pd.DataFrame:
    """Four float columns, a string `merchant` and an int64 `items`; drawn with a fixed seed."""
    rng = np.random.default_rng(20240611)
    frame = pd.DataFrame(rng.normal(size=(ROWS, len(NUMERIC))), columns=NUMERIC)
    frame["merchant"] = rng.choice(["grocery", "travel", "online"], size=ROWS)
    frame["items"] = rng.integers(1, 8, size=ROWS)
    return frame


@pytest.fixture(scope="session")
def frame(mixed_frame: pd.DataFrame) -> pd.DataFrame:
    """The four float columns only."""
    return mixed_frame[NUMERIC].copy()


@pytest.fixture(scope="session")
def features(frame: pd.DataFrame) -> np.ndarray:
    """`frame` as a plain (rows x 4) float64 matrix, without column names."""
    return frame.to_numpy(dtype=np.float64)


@pytest.fixture(scope="session")
def binary_labels(mixed_frame: pd.DataFrame) -> np.ndarray:
    """0/1 labels that depend on every column, strings included."""
    rng = np.random.default_rng(7)
    f = mixed_frame
    logit = (
        f["amount"] - 0.8 * f["hour"] + 0.5 * f["distance"] + (f["merchant"] == "online")
    ).to_numpy() + 0.1 * f["items"].to_numpy()
    return (logit + rng.normal(scale=0.7, size=ROWS) > 0.7).astype(np.int64)


@pytest.fixture(scope="session")
def class_labels(frame: pd.DataFrame) -> np.ndarray:
    """Three classes 0/1/2."""
    score = (frame["amount"] + 0.5 * frame["velocity"]).to_numpy()
    return np.digitize(score, [-0.6, 0.6]).astype(np.int64)


@pytest.fixture(scope="session")
def target(features: np.ndarray) -> np.ndarray:
    """A real-valued regression target."""
    rng = np.random.default_rng(11)
    return features @ np.array([3.0, -2.0, 0.5, 1.5]) + rng.normal(scale=0.3, size=ROWS)


@dataclass(frozen=True)
class Served:
    """A packaged model loaded back the way serving loads a bundle."""

    folder: Path  # what `package` wrote
    packaged: Packaged
    info: ModelInfo  # read back from JSON, as serving reads metadata.json
    columns: Columns  # the sample, validated against its signature
    predictor: Predictor  # on the runtime packaging chose
    native: Predictor  # from the flavour's own files, ignoring any ONNX graph


def _serve(folder: Path, model: Any, sample: pd.DataFrame) -> Served:
    signature = Signature.infer(sample)
    columns = signature.validate_frame(sample)
    packaged = package(model, signature, columns, folder)
    info = ModelInfo.from_dict(json.loads(json.dumps(packaged.info.to_dict())))
    predictor = load_predictor(folder, info, packaged.runtime, packaged.onnx)
    native = load_predictor(folder, info, info.flavour, None)
    return Served(folder, packaged, info, columns, predictor, native)


@pytest.fixture
def serve(tmp_path: Path) -> Callable[[Any, pd.DataFrame], Served]:
    """Package a model with a sample into a fresh folder and load it back for serving."""
    folders = (tmp_path / f"model-{i}" for i in itertools.count())
    return lambda model, sample: _serve(next(folders), model, sample)
