"""Edge export: a self-contained folder a device runs with onnxruntime alone.

    model.onnx       the version's graph, preprocessing folded in (scalers, encoders, imputers:
                     no scikit-learn on the device), tensor outputs only (no ZipMap)
    model.ort        phone: the ORT format ONNX Runtime Mobile loads
    signature.json   the input columns, how they feed the graph, task, classes, threshold
    run.py           a runner needing only onnxruntime and numpy (shipyard.optimize._runner)
    run.mjs          browser: the same runner as an ES module for onnxruntime-web (runner.mjs)
    manifest.json    every file's SHA-256 and size, the profile and its budget, the operators

A profile is a size budget and an operator set: the device's runtime has those kernels and
room for that much. An export over budget, or using an operator the profile lacks, is refused
naming the offender (before anything is written).

Unless told `exact`, exporting NAME:VERSION ships its int8 child where one exists (a version
`shipyard optimize --quantize int8` registered from it, so one that passed the accuracy gate).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard.core.errors import InvalidInput, UnsupportedModel
from shipyard.core.version import __version__
from shipyard.optimize import _runner
from shipyard.optimize._graph import ML_DOMAIN, load, served_graph, session
from shipyard.registry import ModelVersion, Registry

__all__ = ["PROFILES", "ExportResult", "Profile", "export_edge"]

_CORE_OPS = frozenset(
    [
        "Abs",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "BatchNormalization",
        "Cast",
        "Ceil",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvInteger",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "DynamicQuantizeLinear",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "Gemm",
        "Greater",
        "GreaterOrEqual",
        "Identity",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "MatMul",
        "MatMulInteger",
        "Max",
        "Min",
        "Mul",
        "Neg",
        "Not",
        "Or",
        "Pow",
        "QLinearConv",
        "QLinearMatMul",
        "QuantizeLinear",
        "Reciprocal",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Round",
        "Selu",
        "Shape",
        "Sigmoid",
        "Sign",
        "Slice",
        "Softmax",
        "Softplus",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tanh",
        "Tile",
        "TopK",
        "Transpose",
        "Unsqueeze",
        "Where",
    ]
)
_ML_NUMERIC = frozenset(
    [
        "ArrayFeatureExtractor",
        "Binarizer",
        "Imputer",
        "LinearClassifier",
        "LinearRegressor",
        "Normalizer",
        "Scaler",
        "TreeEnsembleClassifier",
        "TreeEnsembleRegressor",
    ]
)
_ML_TEXT = frozenset({"OneHotEncoder", "LabelEncoder", "CategoryMapper"})


@dataclass(frozen=True)
class Profile:
    """What a class of device can run: a size budget, operators and input types."""

    name: str
    budget_bytes: int
    runtime: str
    operators: frozenset[tuple[str, str]]
    strings: bool
    ort_format: bool
    description: str


def _ops(core: frozenset[str], ml: frozenset[str]) -> frozenset[tuple[str, str]]:
    return frozenset({("", op) for op in core} | {(ML_DOMAIN, op) for op in ml})


PROFILES: dict[str, Profile] = {
    "phone": Profile(
        "phone", 50_000_000, "ONNX Runtime Mobile (Android/iOS)",
        _ops(_CORE_OPS, _ML_NUMERIC | _ML_TEXT), True, True,
        "an app on a phone: ORT format, up to 50 MB, text inputs allowed",
    ),
    "iot": Profile(
        "iot", 2_000_000, "onnxruntime on a small Linux board",
        _ops(_CORE_OPS, _ML_NUMERIC), False, False,
        "a gateway or board: up to 2 MB, numeric inputs only (no string kernels)",
    ),
    "browser": Profile(
        "browser", 10_000_000, "onnxruntime-web (WebAssembly)",
        _ops(_CORE_OPS, _ML_NUMERIC | _ML_TEXT), True, False,
        "a web page: up to 10 MB downloaded, tensor outputs only",
    ),
}  # fmt: skip


@dataclass
class ExportResult:
    folder: Path
    name: str
    version: int
    requested_version: int
    profile: str
    size_bytes: int
    budget_bytes: int
    files: dict[str, dict[str, Any]]
    operators: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder), "name": self.name, "version": self.version,
            "requested_version": self.requested_version, "profile": self.profile,
            "size_bytes": self.size_bytes, "budget_bytes": self.budget_bytes,
            "files": self.files, "operators": self.operators,
        }  # fmt: skip


def profile_named(name: str) -> Profile:
    if name not in PROFILES:
        raise InvalidInput(
            f"there is no edge profile {name!r}; use one of {', '.join(PROFILES)} "
            f"({'; '.join(f'{p.name}: {p.description}' for p in PROFILES.values())})"
        )
    return PROFILES[name]


def _int8_child(registry: Registry, record: ModelVersion) -> ModelVersion | None:
    """The newest ready version optimised from `record` with int8 quantisation."""
    children = [
        v
        for v in registry.list_versions(record.name)
        if v.status == "ready"
        and (v.lineage or {}).get("optimized_from") == record.version
        and "int8" in str((v.lineage or {}).get("method", ""))
    ]
    return max(children, key=lambda v: v.version) if children else None


def export_edge(
    registry: Registry,
    ref: str,
    *,
    profile: str,
    out: Path,
    exact: bool = False,
    overwrite: bool = False,
) -> ExportResult:
    """Export the version `ref` for the device class `profile` into the folder `out`."""
    chosen = profile_named(profile)
    requested = registry.resolve(ref)
    record = requested if exact else (_int8_child(registry, requested) or requested)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"{out} is a file; --out names the folder the export goes into")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InvalidInput(
                f"{out} exists and is not empty; choose another --out, or pass --overwrite to "
                "replace an earlier export there"
            )
        if not (out / "manifest.json").is_file():
            raise InvalidInput(
                f"{out} holds files that are not a shipyard export (no manifest.json); "
                "--overwrite replaces only an earlier export: choose another --out"
            )
    bundle = registry.open(record.name, record.version)
    info = bundle.metadata["model"]
    served = served_graph(bundle.folder, info)
    if served is None:
        raise UnsupportedModel(
            f"{record.name}:{record.version} has no ONNX graph (its {record.flavour} model did not "
            f"convert), so it cannot run on a device; distil it into one that does: shipyard "
            f"optimize {record.name}:{record.version} --distill mlp --holdout PATH"
        )
    graph_bytes, plan = served
    graph, output = _tensor_outputs(graph_bytes, record.task)
    operators = sorted({(n.domain or "", n.op_type) for n in graph.graph.node})
    unsupported = [
        f"{d + '.' if d else ''}{op}" for d, op in operators if (d, op) not in chosen.operators
    ]
    if unsupported:
        raise UnsupportedModel(
            f"{record.name}:{record.version} uses operator(s) the {chosen.name} profile lacks: "
            f"{', '.join(unsupported)}; choose another profile, or distil the model into a "
            "small network (shipyard optimize --distill mlp)"
        )
    if not chosen.strings:
        text = [c.name for c in record.signature.columns if c.type == "string"]
        if text:
            raise UnsupportedModel(
                f"the {chosen.name} profile takes numeric inputs only, and {record.name} takes "
                f"text column(s) {', '.join(text)}; encode them before the model, or use the "
                "phone profile"
            )
    model_bytes = graph.SerializeToString()
    try:  # what ships must load: the ZipMap removal, the operators, the inputs
        session(model_bytes)
    except Exception as error:
        raise UnsupportedModel(
            f"{record.name}:{record.version}'s graph does not load after preparing it for the "
            f"edge: {str(error).splitlines()[0][:300]}"
        ) from None
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-export-"))
    try:
        (scratch / "model.onnx").write_bytes(model_bytes)
        if chosen.ort_format:
            _to_ort(scratch)
        spec = {
            "name": record.name, "version": record.version, "exported_from": requested.version,
            "task": record.task, "classes": info.get("classes"), "threshold": record.threshold,
            "signature": record.signature.to_dict(), "plan": plan, "output": output,
        }  # fmt: skip
        (scratch / "signature.json").write_text(json.dumps(spec, indent=2, default=str))
        (scratch / "run.py").write_text(inspect.getsource(_runner))
        if chosen.name == "browser":  # the same runner for onnxruntime-web, as an ES module
            shutil.copyfile(Path(__file__).with_name("runner.mjs"), scratch / "run.mjs")
        files: dict[str, dict[str, Any]] = {
            p.name: {
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                "bytes": p.stat().st_size,
            }
            for p in sorted(scratch.iterdir())
        }
        shipped = int(files["model.ort" if "model.ort" in files else "model.onnx"]["bytes"])
        size = shipped
        if shipped > chosen.budget_bytes:
            raise UnsupportedModel(
                f"{record.name}:{record.version}'s model is {shipped / 1e6:.2f} MB, over the "
                f"{chosen.name} profile's {chosen.budget_bytes / 1e6:.0f} MB budget; make it "
                "smaller first (shipyard optimize --prune 0.5, --distill mlp or --quantize int8)"
            )
        operator_names = [f"{d + '.' if d else ''}{op}" for d, op in operators]
        manifest = {
            "format": 1, "shipyard_version": __version__, "created_at": datetime.now(UTC).isoformat(),
            "model": f"{record.name}:{record.version}", "exported_from": f"{requested.name}:{requested.version}",
            "profile": {"name": chosen.name, "runtime": chosen.runtime, "budget_bytes": chosen.budget_bytes},
            "model_bytes": shipped, "operators": operator_names,
            "files": files,
        }  # fmt: skip
        (scratch / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(
        out, record.name, record.version, requested.version, chosen.name, size,
        chosen.budget_bytes, files, operator_names,
    )  # fmt: skip


def _tensor_outputs(model: bytes, task: str) -> tuple[Any, str]:
    """The graph with a ZipMap (a list of maps: no tensor) replaced by the tensor it reads,
    and the name of the output that carries probabilities (or values)."""
    graph = load(model)
    zipmaps = [n for n in graph.graph.node if n.op_type == "ZipMap"]
    for node in zipmaps:
        for output in graph.graph.output:
            if output.name == node.output[0]:
                output.name = node.input[0]
                output.type.Clear()
                output.type.tensor_type.elem_type = 1  # float
        graph.graph.node.remove(node)
    outputs = [o.name for o in graph.graph.output]
    if task == "regression":
        return graph, outputs[0]
    named = [o for o in outputs if "prob" in o.lower()]
    if named:
        return graph, named[0]
    return graph, outputs[-1]


def _to_ort(folder: Path) -> None:
    """model.ort beside model.onnx: the graph after onnxruntime's basic optimisations (the
    ones every platform's kernels support), saved in the flatbuffer format ONNX Runtime Mobile
    loads without the protobuf parser."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folder / "model.ort")
    options.add_session_config_entry("session.save_model_format", "ORT")
    try:
        ort.InferenceSession(
            str(folder / "model.onnx"), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise UnsupportedModel(
            f"onnxruntime could not save the model in the ORT format: {error}"
        ) from None
