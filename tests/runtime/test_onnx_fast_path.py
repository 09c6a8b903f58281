"""The ONNX fast path: a conversion is kept only when it agrees with the native model within 1e-5,
and `Packaged.onnx_report` says which converter won or why each one was refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from shipyard.runtime import load_predictor

TOLERANCE = 1e-5
NATIVE_ATOL = 1e-9

Serve = Callable[[Any, pd.DataFrame], Any]


def test_model_whose_conversion_agrees_is_served_by_onnxruntime_with_the_converter_recorded(
    serve: Serve, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)

    served = serve(model, frame)

    packaged = served.packaged
    assert packaged.runtime == "onnxruntime"
    assert packaged.onnx is not None
    assert served.predictor.runtime == "onnxruntime"
    report = packaged.onnx_report
    assert report["tolerance"] == TOLERANCE
    assert report["chosen"] == "skl2onnx float32"
    [attempt] = report["attempts"]
    assert attempt["converter"] == "skl2onnx float32"
    assert "error" not in attempt
    assert 0 <= attempt["max_abs_diff"] <= TOLERANCE


def test_float32_graph_that_drifts_is_refused_and_the_exact_float64_graph_is_kept(
    serve: Serve, frame: pd.DataFrame, target: np.ndarray
) -> None:
    # outputs in the tens of thousands: float32 rounding alone is far above the tolerance
    model = Ridge().fit(frame, target * 10_000)

    served = serve(model, frame)

    report = served.packaged.onnx_report
    float32, float64 = report["attempts"]
    assert float32["converter"] == "skl2onnx float32"
    assert float32["max_abs_diff"] > TOLERANCE
    assert float64["converter"] == "skl2onnx float64"
    assert float64["max_abs_diff"] <= TOLERANCE
    assert report["chosen"] == "skl2onnx float64"
    assert served.packaged.runtime == "onnxruntime"
    np.testing.assert_allclose(
        served.predictor.predict(served.columns), model.predict(frame), rtol=0, atol=TOLERANCE
    )


def _pipeline_skl2onnx_cannot_convert() -> Any:
    # skl2onnx converts a FunctionTransformer only when its function is the identity
    return make_pipeline(FunctionTransformer(np.tanh), LogisticRegression())


def test_model_no_converter_can_handle_is_served_natively_with_each_refusal_explained(
    serve: Serve, features: np.ndarray, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = _pipeline_skl2onnx_cannot_convert().fit(features, binary_labels)

    served = serve(model, frame)

    packaged = served.packaged
    assert packaged.runtime == "sklearn"
    assert packaged.onnx is None
    assert "onnx_plan" not in served.info.extra
    report = packaged.onnx_report
    assert "chosen" not in report
    assert [a["converter"] for a in report["attempts"]] == ["skl2onnx float32", "skl2onnx float64"]
    for attempt in report["attempts"]:
        assert "FunctionTransformer" in attempt["error"]
        assert "max_abs_diff" not in attempt
    assert served.predictor.runtime == "sklearn"
    np.testing.assert_allclose(
        served.predictor.predict(served.columns),
        model.predict_proba(features),
        atol=NATIVE_ATOL,
    )


def test_model_served_natively_pins_no_onnxruntime(
    serve: Serve, features: np.ndarray, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = _pipeline_skl2onnx_cannot_convert().fit(features, binary_labels)

    served = serve(model, frame)

    names = [line.split("==")[0] for line in served.packaged.requirements]
    assert "scikit-learn" in names
    assert "onnxruntime" not in names


def test_load_predictor_falls_back_to_the_native_files_when_the_onnx_graph_is_missing(
    serve: Serve, frame: pd.DataFrame, binary_labels: np.ndarray
) -> None:
    model = LogisticRegression().fit(frame, binary_labels)
    served = serve(model, frame)
    assert served.packaged.runtime == "onnxruntime"

    predictor = load_predictor(served.folder, served.info, "onnxruntime", None)

    assert predictor.runtime == "sklearn"
    np.testing.assert_allclose(
        predictor.predict(served.columns), model.predict_proba(frame), atol=NATIVE_ATOL
    )
