"""ONNX models, served by onnxruntime: the fast path every convertible flavour is offered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns, ColumnSpec, ColumnType, Signature
from shipyard.core.errors import UnsupportedModel
from shipyard.runtime._predictor import Flavour, ModelInfo, Task, as_probabilities

__all__ = ["OnnxFlavour", "OnnxGraph", "OnnxPredictor", "onnx_feeds", "plan_inputs"]

_ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


_COLUMN_TYPES: dict[str, ColumnType] = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


def _column(name: str, onnx_type: str) -> ColumnSpec:
    kind = _COLUMN_TYPES[onnx_type]
    return ColumnSpec(name, kind, kind in ("float32", "float64"))


def _session(model: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # requests are small and concurrent: one thread per call beats contention on few cores
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def plan_inputs(
    session: Any, signature: Signature, order: list[str] | None = None
) -> dict[str, Any]:
    """How signature columns feed the graph: one matrix input, or one input per column.

    `order` is the model's feature order for a matrix input (default: the signature's).
    """
    inputs = session.get_inputs()
    names = order or signature.names
    if all(i.name in names for i in inputs):
        return {
            "mode": "columns",
            "inputs": [
                {"name": i.name, "dtype": np.dtype(_ONNX_DTYPES[i.type]).str, "rank": len(i.shape)}
                for i in inputs
            ],
        }
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        width = inputs[0].shape[1]
        if isinstance(width, int) and width != len(names):
            raise UnsupportedModel(
                f"the ONNX model's input {inputs[0].name!r} takes {width} features but the sample "
                f"has {len(names)} columns; pass a sample with exactly the model's features"
            )
        return {
            "mode": "matrix",
            "inputs": [
                {"name": inputs[0].name, "dtype": np.dtype(_ONNX_DTYPES[inputs[0].type]).str}
            ],
            "order": names,
        }
    raise UnsupportedModel(
        "cannot map the sample's columns to the ONNX model's inputs "
        f"({', '.join(i.name for i in inputs)}); name the sample's columns after the inputs, "
        "or use a model with one (rows x features) input"
    )


def onnx_feeds(plan: dict[str, Any], columns: Columns) -> dict[str, np.ndarray]:
    """The graph's inputs for validated columns, as `plan_inputs` mapped them."""
    feeds = {}
    if plan["mode"] == "matrix":
        spec = plan["inputs"][0]
        feeds[spec["name"]] = np.column_stack(
            [np.asarray(columns[c], dtype=spec["dtype"]) for c in plan["order"]]
        )
        return feeds
    for spec in plan["inputs"]:
        values = columns[spec["name"]]
        if spec["dtype"] == "|O":
            values = np.array(["" if v is None else v for v in values], dtype=object)
        else:
            values = np.asarray(values, dtype=spec["dtype"])
        feeds[spec["name"]] = values.reshape(-1, 1) if spec["rank"] == 2 else values
    return feeds


@dataclass(frozen=True)
class OnnxGraph:
    """An ONNX graph whose task and classes the caller states, for graphs that cannot say them
    (a classifier without a ZipMap, say): what the optimiser registers.

    `input_order` is the feature order of a graph with one (rows x features) input.
    """

    model: bytes
    task: Task
    classes: list[Any] | None = None
    input_order: list[str] | None = None


class OnnxPredictor:
    """Runs an ONNX graph on validated columns."""

    runtime = "onnxruntime"

    def __init__(self, model: bytes, plan: dict[str, Any], task: Task, n_classes: int) -> None:
        self._session = _session(model)
        self._plan = plan
        self._task = task
        self._n_classes = n_classes
        self._output = _pick_output(self._session, task)

    @classmethod
    def for_signature(
        cls, model: bytes, signature: Signature, order: list[str], task: Task, n_classes: int
    ) -> OnnxPredictor:
        """A predictor whose input plan is worked out from the graph and the signature."""
        predictor = cls(model, {}, task, n_classes)
        predictor._plan = plan_inputs(predictor._session, signature, order)
        return predictor

    @property
    def plan(self) -> dict[str, Any]:
        return self._plan

    def predict(self, columns: Columns) -> np.ndarray:
        feeds = onnx_feeds(self._plan, columns)
        raw = self._session.run([self._output], feeds)[0]
        if self._task == "regression":
            return np.asarray(raw, dtype=np.float64).reshape(-1)
        if isinstance(raw, list):  # ZipMap: a list of {class: probability}
            keys = list(raw[0]) if raw else []
            raw = np.array([[row[k] for k in keys] for row in raw], dtype=np.float64)
        return as_probabilities(raw, self._n_classes)


def _pick_output(session: Any, task: Task) -> str:
    outputs = session.get_outputs()
    if task == "regression":
        return str(outputs[0].name)
    for output in outputs:
        if "prob" in output.name.lower():
            return str(output.name)
    for output in outputs:
        if output.type in ("tensor(float)", "tensor(double)") or output.type.startswith("seq(map"):
            return str(output.name)
    raise UnsupportedModel(
        "the ONNX classifier has no probability output; export it with probabilities "
        "(skl2onnx/onnxmltools do by default)"
    )


class OnnxFlavour(Flavour):
    """A model the user already has as ONNX (bytes, a path, or an `onnx.ModelProto`)."""

    name = "onnx"
    requirements = ("onnxruntime", "numpy")

    def matches(self, model: Any) -> bool:
        return isinstance(model, OnnxGraph) or (
            type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")
        )

    def save(self, model: Any, folder: Path, signature: Signature) -> ModelInfo:
        if isinstance(model, OnnxGraph):
            return self._save_stated(model, folder, signature)
        data = model.SerializeToString() if not isinstance(model, bytes) else model
        if isinstance(model, bytes):
            import onnx

            model = onnx.load_from_string(data)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_bytes(data)
        session = _session(data)
        plan = plan_inputs(session, signature)
        task, classes = _infer_task(model, session)
        return ModelInfo(
            flavour=self.name,
            task=task,
            classes=classes,
            files=["model.onnx"],
            input_order=signature.names,
            extra={"plan": plan},
        )

    def _save_stated(self, graph: OnnxGraph, folder: Path, signature: Signature) -> ModelInfo:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.onnx").write_bytes(graph.model)
        order = graph.input_order or signature.names
        plan = plan_inputs(_session(graph.model), signature, order)
        if graph.task != "regression" and len(graph.classes or []) < 2:
            raise UnsupportedModel(
                f"a {graph.task} ONNX graph needs its classes (two or more), in score order"
            )
        return ModelInfo(
            flavour=self.name,
            task=graph.task,
            classes=list(graph.classes or []) if graph.task != "regression" else None,
            files=["model.onnx"],
            input_order=order,
            extra={"plan": plan},
        )

    def described_inputs(self, model: Any) -> tuple[Signature, Any] | None:
        """An ONNX graph types its inputs: one input per column, or one (rows x k) matrix
        whose columns are named `<input>_0` ... `<input>_<k-1>`."""
        if isinstance(model, OnnxGraph):
            model = model.model
        data = model.SerializeToString() if not isinstance(model, bytes) else model
        try:
            inputs = _session(data).get_inputs()
        except Exception:
            return None  # packaging says what is wrong with the graph
        if any(i.type not in _COLUMN_TYPES for i in inputs):
            return None
        per_column = all(
            len(i.shape) == 1 or (len(i.shape) == 2 and i.shape[1] == 1) for i in inputs
        )
        if per_column:
            columns = [_column(i.name, i.type) for i in inputs]
        elif len(inputs) == 1 and len(inputs[0].shape) == 2 and isinstance(inputs[0].shape[1], int):
            only = inputs[0]
            columns = [_column(f"{only.name}_{j}", only.type) for j in range(only.shape[1])]
        else:
            return None
        return Signature(tuple(columns)), None

    def load(self, folder: Path, info: ModelInfo) -> OnnxPredictor:
        return OnnxPredictor(
            (folder / "model.onnx").read_bytes(),
            info.extra["plan"],
            info.task,
            len(info.classes or []),
        )


def _infer_task(model: Any, session: Any) -> tuple[Task, list[Any] | None]:
    """Classifier if the graph has a probability output; classes from a ZipMap or the width."""
    outputs = session.get_outputs()
    prob = [o for o in outputs if "prob" in o.name.lower() or o.type.startswith("seq(map")]
    if not prob:
        return "regression", None
    classes: list[Any] | None = None
    for node in model.graph.node:
        if node.op_type == "ZipMap":
            for attr in node.attribute:
                if attr.name == "classlabels_int64s" and attr.ints:
                    classes = [int(v) for v in attr.ints]
                elif attr.name == "classlabels_strings" and attr.strings:
                    classes = [s.decode() for s in attr.strings]
    if classes is None:
        width = prob[0].shape[-1] if prob[0].shape else None
        classes = list(range(width)) if isinstance(width, int) else [0, 1]
    return ("binary" if len(classes) == 2 else "multiclass"), classes
