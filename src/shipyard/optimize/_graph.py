"""Reading and editing ONNX graphs: what a node's input holds on real rows, and attributes and
weights as numpy arrays. The optimiser's methods all work on the graph a bundle already serves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns
from shipyard.runtime import onnx_feeds

__all__ = [
    "ML_DOMAIN",
    "Broken",
    "NotApplicable",
    "attribute",
    "initializers",
    "load",
    "served_graph",
    "session",
    "set_attribute",
    "tap",
]

ML_DOMAIN = "ai.onnx.ml"


class NotApplicable(Exception):
    """A method that cannot apply to this model; the message says why and what to try."""


class Broken(Exception):
    """A method that ran, but whose result does not work (non-finite outputs, weights beyond
    the format's range, not servable): the gate refuses it, saying why."""


def load(model: bytes) -> Any:
    import onnx

    return onnx.load_from_string(model)


def session(model: bytes) -> Any:
    """A session as serving opens one (one thread, all graph optimisations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def tap(model: bytes, plan: dict[str, Any], columns: Columns, names: Iterable[str]) -> list[Any]:
    """The values the tensors `names` hold when the graph runs on `columns`: each becomes an
    extra output of a copy of the graph (the way to see what reaches a node after the
    preprocessing the graph folds in)."""
    import onnx

    graph = load(model)
    wanted = list(names)
    present = {o.name for o in graph.graph.output}
    for name in wanted:
        if name not in present:
            graph.graph.output.append(onnx.ValueInfoProto(name=name))
    out = session(graph.SerializeToString()).run(wanted, onnx_feeds(plan, columns))
    return list(out)


def attribute(node: Any, name: str, default: Any = None) -> Any:
    """A node attribute as a Python value (lists of numbers as numpy arrays)."""
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            if hasattr(value, "dims"):  # a tensor attribute
                return numpy_helper.to_array(value)
            if isinstance(value, list):
                if value and isinstance(value[0], bytes):
                    return [v.decode() for v in value]
                return np.asarray(value)
            return value.decode() if isinstance(value, bytes) else value
    return default


def set_attribute(node: Any, name: str, value: Any) -> None:
    """Replace (or add) an attribute, keeping its kind (floats, ints, strings or a tensor)."""
    from onnx import helper, numpy_helper

    for index, attr in enumerate(node.attribute):
        if attr.name == name:
            if attr.type == attr.TENSOR:
                tensor = numpy_helper.from_array(
                    np.asarray(value, dtype=numpy_helper.to_array(attr.t).dtype), name
                )
                new = helper.make_attribute(name, tensor)
            elif attr.type == attr.STRINGS:
                new = helper.make_attribute(name, [str(v).encode() for v in value])
            elif attr.type == attr.FLOATS:
                new = helper.make_attribute(name, [float(v) for v in value])
            elif attr.type == attr.INTS:
                new = helper.make_attribute(name, [int(v) for v in value])
            else:
                new = helper.make_attribute(name, value)
            del node.attribute[index]
            node.attribute.insert(index, new)
            return
    node.attribute.append(helper.make_attribute(name, value))


def initializers(graph: Any) -> dict[str, Any]:
    """The graph's constant tensors by name."""
    return {t.name: t for t in graph.graph.initializer}


def served_graph(folder: Path, info: dict[str, Any]) -> tuple[bytes, dict[str, Any]] | None:
    """The ONNX graph a bundle serves and the plan that feeds it: the fast path packaging
    kept (`model.onnx`), or the model itself when it is an ONNX model; None when it has none."""
    if (folder / "model.onnx").is_file():
        return (folder / "model.onnx").read_bytes(), info["extra"]["onnx_plan"]
    if info.get("flavour") == "onnx":
        return (folder / "model" / "model.onnx").read_bytes(), info["extra"]["plan"]
    return None
