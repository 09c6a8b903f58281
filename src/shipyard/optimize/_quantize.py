"""Quantisation with onnxruntime's own tools, on the ONNX graph the bundle serves.

int8          dynamic: weights stored as int8, activations quantised per batch at run time
int8-static   static QDQ: weights and activations int8, activation ranges calibrated on rows
              (the `calibration` file, else the version's reference sample)
fp16          weights and arithmetic in float16, inputs and outputs unchanged

Only layers with constant weights are quantised (MatMul, Gemm, Conv): what a network is made
of. A graph without them (a tree ensemble, a linear model folded into ai.onnx.ml operators)
gains nothing, and the method says so instead of registering the same model again.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns
from shipyard.optimize._graph import Broken, NotApplicable, initializers, load
from shipyard.runtime import onnx_feeds

__all__ = ["QUANTIZE_METHODS", "quantize"]

QUANTIZE_METHODS = ("int8", "int8-static", "fp16")
_WEIGHTED = ("MatMul", "Gemm", "Conv")
_CALIBRATION_ROWS = 2000


def weighted_layers(model: bytes) -> int:
    """How many MatMul/Gemm/Conv nodes take a constant weight: what quantisation works on."""
    graph = load(model)
    constants = initializers(graph)
    return sum(
        1
        for node in graph.graph.node
        if node.op_type in _WEIGHTED and any(name in constants for name in node.input[1:2])
    )


def quantize(
    model: bytes, method: str, plan: dict[str, Any], calibration: Columns | None
) -> tuple[bytes, dict[str, Any]]:
    """The graph quantised by `method` (one of QUANTIZE_METHODS), and what was done."""
    layers = weighted_layers(model)
    if layers == 0:
        raise NotApplicable(
            "the model has no layers with weights to quantise (no MatMul, Gemm or Conv with "
            "constant weights: a tree ensemble or a folded linear model); quantisation would "
            "give the same model. Try --prune (tree ensembles) or --distill into a small network"
        )
    if method == "int8":
        return _dynamic(model), {"layers": layers, "weights": "int8", "activations": "dynamic"}
    if method == "int8-static":
        if calibration is None:
            raise NotApplicable(
                "static int8 needs calibration rows: pass --calibration PATH (rows of the "
                "model's features), or register the version with training data"
            )
        rows = len(next(iter(calibration.values())))
        return _static(model, plan, calibration), {
            "layers": layers,
            "weights": "int8",
            "activations": "int8 (QDQ)",
            "calibration_rows": min(rows, _CALIBRATION_ROWS),
        }
    if method == "fp16":
        return _fp16(model), {"layers": layers, "weights": "float16", "io": "float32"}
    raise NotApplicable(
        f"unknown quantisation {method!r}; use one of {', '.join(QUANTIZE_METHODS)}"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantiser advises on the root logger ("consider pre-processing") on every
    call; the advice is for image models and says nothing a user of this command can act on."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _dynamic(model: bytes) -> bytes:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="shipyard-quantize-") as scratch:
        source, target = Path(scratch) / "in.onnx", Path(scratch) / "out.onnx"
        source.write_bytes(model)
        with _quiet():
            quantize_dynamic(
                source, target, weight_type=QuantType.QInt8, op_types_to_quantize=list(_WEIGHTED)
            )
        return target.read_bytes()


class _Reader:
    """onnxruntime's CalibrationDataReader over validated columns, a batch at a time."""

    def __init__(self, plan: dict[str, Any], columns: Columns, batch: int = 200) -> None:
        rows = min(len(next(iter(columns.values()))), _CALIBRATION_ROWS)
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [
                onnx_feeds(plan, {k: v[start : start + batch] for k, v in columns.items()})
                for start in range(0, rows, batch)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def _static(model: bytes, plan: dict[str, Any], calibration: Columns) -> bytes:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(plan, calibration)
    with tempfile.TemporaryDirectory(prefix="shipyard-quantize-") as scratch:
        source, target = Path(scratch) / "in.onnx", Path(scratch) / "out.onnx"
        source.write_bytes(model)
        with _quiet():
            quantize_static(
                source,
                target,
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(_WEIGHTED),
                extra_options={"ActivationSymmetric": True},
            )
        return target.read_bytes()


def _fp16(model: bytes) -> bytes:
    """Each weighted layer in float16 between two casts, everything else as it was: the
    ai.onnx.ml operators around a network (scalers, encoders) have no float16 kernels, and
    onnxruntime's whole-graph converter breaks on graphs that mix them."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = load(model)
    constants = initializers(graph)
    nodes = []
    converted: dict[str, str] = {}
    for count, node in enumerate(list(graph.graph.node)):
        weight = node.input[1] if len(node.input) > 1 else ""
        if (
            node.op_type not in ("MatMul", "Gemm")
            or weight not in constants
            or constants[weight].data_type != TensorProto.FLOAT  # float32 layers only
        ):
            nodes.append(node)
            continue
        for name in node.input[1:]:
            if name in constants and name not in converted:
                full = numpy_helper.to_array(constants[name])
                with np.errstate(over="ignore"):
                    values = full.astype(np.float16)
                if not np.all(np.isfinite(values)):
                    raise Broken(
                        f"the weights {name!r} reach {float(np.abs(full).max()):.3g}, beyond "
                        "float16's range (65504)"
                    )
                half = numpy_helper.from_array(values, f"{name}_fp16")
                graph.graph.initializer.append(half)
                converted[name] = half.name
        tag = f"{node.name or node.op_type}_{count}"  # unique even when nodes have no names
        source, target = node.input[0], node.output[0]
        nodes.append(
            helper.make_node("Cast", [source], [f"{source}_fp16_{tag}"], to=TensorProto.FLOAT16)
        )
        node.input[0] = f"{source}_fp16_{tag}"
        for index in range(1, len(node.input)):
            node.input[index] = converted.get(node.input[index], node.input[index])
        node.output[0] = f"{target}_fp16_{tag}"
        nodes.append(node)
        nodes.append(
            helper.make_node("Cast", [f"{target}_fp16_{tag}"], [target], to=TensorProto.FLOAT)
        )
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    used = {name for node in graph.graph.node for name in node.input}
    kept = [t for t in graph.graph.initializer if t.name in used]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept)
    del graph.graph.value_info[:]
    onnx.checker.check_model(graph)
    return bytes(graph.SerializeToString())
