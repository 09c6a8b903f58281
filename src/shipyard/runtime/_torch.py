"""PyTorch networks, saved with `torch.export` (TorchScript when a network cannot be exported)
so a bundle loads without the user's Python class, and converted to ONNX with torch's exporter.

A network takes one float32 (rows x features) matrix in the signature's column order and
returns one tensor: `(rows,)` or `(rows, 1)` for a regressor, one column per class for a
classifier (or a single column for a binary one). A bare network is a regressor; a classifier
says its classes through `TorchModel`, since nothing in a network names them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shipyard.core import Columns, Signature
from shipyard.core.errors import MissingDependency, UnsupportedModel, missing_extra
from shipyard.runtime._predictor import (
    Flavour,
    ModelInfo,
    Task,
    as_probabilities,
    columns_to_matrix,
)
from shipyard.runtime._sklearn import native

__all__ = ["TorchFlavour", "TorchModel", "TorchPredictor", "read_torch_file"]

Outputs = Literal["logits", "probabilities"]

# what our own save writes beside the network, and what `read_torch_file` reads back
METADATA_FILE = "shipyard.json"
# torch.export specialises a batch of 0 or 1 rows to a constant; two keep the batch dynamic
_EXAMPLE_ROWS = 2
_WRAP_HINT = "shipyard.TorchModel(module, classes=[...])"


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise missing_extra("torch", "torch", "PyTorch models") from None
    return torch


@dataclass(frozen=True)
class TorchModel:
    """A PyTorch network with what it cannot say itself: its classes and what it outputs.

    Register a bare `torch.nn.Module` as a regressor; wrap a classifier in `TorchModel`:

        shipyard.register(shipyard.TorchModel(net, classes=[0, 1, 2]), name="digits", sample=X)

    Args:
        module: a `torch.nn.Module` (or a `torch.export.ExportedProgram`) that takes one float32
            (rows x features) tensor, columns in the order of the sample's, and returns one
            tensor. It is switched to eval mode while it is saved.
        classes: the class labels in the order of the network's output columns (a binary
            classifier may output a single column: the positive class, `classes[1]`); None for
            a regressor.
        outputs: `"logits"` (shipyard applies softmax, or sigmoid to a single binary column) or
            `"probabilities"` (the network already does).
    """

    module: Any
    classes: Sequence[Any] | None = None
    outputs: Outputs = "logits"

    def __post_init__(self) -> None:
        if self.outputs not in ("logits", "probabilities"):
            raise UnsupportedModel(
                f"TorchModel outputs={self.outputs!r} is not known; use 'logits' (shipyard "
                "applies softmax/sigmoid) or 'probabilities'"
            )
        if self.classes is not None:
            classes = tuple(native(c) for c in self.classes)
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise UnsupportedModel(
                    f"TorchModel classes={list(classes)!r} must be two or more distinct labels, "
                    "in the order of the network's output columns; for a regressor leave "
                    "classes out"
                )
            object.__setattr__(self, "classes", classes)


@contextlib.contextmanager
def _quiet(*, attempt: bool = False) -> Iterator[None]:
    """Hide torch's warnings about its own internals and about the deprecated paths we use on
    purpose (TorchScript, the TorchScript-based ONNX exporter): the user cannot act on them.

    An `attempt` (an export whose failure we handle) also hides torch's log records below
    errors (the ONNX exporter says on every export that torchvision is not installed) and what
    a failed export prints to stderr (the partial graph, pages of it): its reason is kept in
    one line instead.
    """
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        warnings.simplefilter("ignore")
        if attempt:
            torch_log.setLevel(logging.ERROR)
            stack.callback(torch_log.setLevel, level)
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
        yield


@contextlib.contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    """Eval mode (dropout off, batch-norm running statistics) for the duration, then back."""
    switched = False
    if getattr(module, "training", False):
        try:
            module.eval()
            switched = True
        except NotImplementedError:
            pass  # an exported graph refuses eval(): its mode was fixed when it was exported
    try:
        yield
    finally:
        if switched:
            module.train()


@contextlib.contextmanager
def _threads(torch: Any, count: int) -> Iterator[None]:
    """`count` intra-op threads for this call, as onnxruntime runs with one: small concurrent
    requests gain nothing from splitting. With torch's OpenMP backend the setting belongs to
    the calling thread, and it is put back, so nothing outside the call changes."""
    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if previous != count:
            torch.set_num_threads(previous)


def _network(torch: Any, model: Any) -> tuple[Any, TorchModel]:
    """The callable network inside `model`, and `model` as a `TorchModel`."""
    wrapped = model if isinstance(model, TorchModel) else TorchModel(model)
    module = wrapped.module
    if isinstance(module, torch.export.ExportedProgram):
        module = module.module()
    if not isinstance(module, torch.nn.Module):
        raise UnsupportedModel(f"TorchModel takes a torch.nn.Module, not a {type(module).__name__}")
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.device.type != "cpu":
            raise UnsupportedModel(
                f"the network's {name} is on {tensor.device}; move it with module.cpu() before "
                "registering: shipyard saves and serves networks on the CPU"
            )
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            raise UnsupportedModel(
                f"the network's {name} is {str(tensor.dtype).removeprefix('torch.')}; shipyard "
                "feeds networks float32 matrices, so convert it with module.float() first"
            )
    return module, wrapped


def _describe(
    output: Any, torch: Any, wrapped: TorchModel, rows: int
) -> tuple[Task, list[Any] | None, int]:
    """Task, classes and output width, from the network's output on an example batch."""
    if not isinstance(output, torch.Tensor):
        raise UnsupportedModel(
            f"the network returns a {type(output).__name__}; shipyard serves networks that "
            "return one tensor, (rows,) or (rows, outputs)"
        )
    if output.ndim not in (1, 2) or output.shape[0] != rows:
        raise UnsupportedModel(
            f"the network returns a tensor of shape {tuple(output.shape)} for {rows} rows; "
            "shipyard serves networks that return (rows,) or (rows, outputs)"
        )
    width = 1 if output.ndim == 1 else int(output.shape[1])
    classes = list(wrapped.classes) if wrapped.classes is not None else None
    if classes is None:
        if width != 1:
            raise UnsupportedModel(
                f"the network outputs {width} columns per row, and shipyard serves a bare "
                "network as a regressor with one output; for a classifier, say its classes: "
                f"{_WRAP_HINT} (outputs='logits' or 'probabilities')"
            )
        return "regression", None, width
    if width != len(classes) and not (width == 1 and len(classes) == 2):
        raise UnsupportedModel(
            f"the network outputs {width} columns per row but TorchModel names {len(classes)} "
            "classes; give one class per output column (a binary network may output one "
            "column, the positive class)"
        )
    return ("binary" if len(classes) == 2 else "multiclass"), classes, width


def _served(torch: Any, network: Any, info: ModelInfo) -> Any:
    """The network with its outputs made what predictors answer: probabilities for a
    classifier (softmax, or sigmoid for one binary column, over logits), values otherwise."""
    if info.task == "regression" or info.extra["outputs"] != "logits":
        return network
    last = torch.nn.Sigmoid() if info.extra["output_width"] == 1 else torch.nn.Softmax(dim=1)
    head = torch.nn.Sequential(network, last)
    head.training = False  # not eval(): that recurses into an exported graph, which refuses it
    return head


class TorchPredictor:
    """Runs a PyTorch network on the CPU, float32, one intra-op thread per call.

    Attributes:
        module: the loaded network (callable, in eval mode; an exported graph keeps the mode
            it was exported in). It maps a float32 (rows x features) tensor, columns in
            `ModelInfo.input_order`, to the raw outputs `ModelInfo.extra["outputs"]` names:
            `logits`, `probabilities` or `values`.
    """

    runtime = "torch"

    def __init__(self, module: Any, info: ModelInfo, *, threads: int = 1) -> None:
        self.module = module
        self._info = info
        self._threads = threads
        self._served = _served(_torch(), module, info)

    def predict(self, columns: Columns) -> np.ndarray:
        X = columns_to_matrix(columns, self._info.input_order, np.float32)
        n_classes = len(self._info.classes or [])
        if len(X) == 0:
            return np.empty((0, n_classes) if n_classes else (0,))
        torch = _torch()
        with _threads(torch, self._threads), torch.inference_mode():
            raw = self._served(torch.from_numpy(X)).numpy()
        if self._info.task == "regression":
            return np.asarray(raw, dtype=np.float64).reshape(-1)
        return as_probabilities(raw, n_classes)


class TorchFlavour(Flavour):
    """A `torch.nn.Module` (a regressor) or a `TorchModel` (a regressor or classifier)."""

    name = "torch"
    requirements = ("torch", "numpy")

    def matches(self, model: Any) -> bool:
        if isinstance(model, TorchModel):
            return True
        # a torch object exists only once torch is imported: never import it to find out
        torch = sys.modules.get("torch")
        if torch is None:
            return False
        return isinstance(model, torch.nn.Module | torch.export.ExportedProgram)

    def save(self, model: Any, folder: Path, signature: Signature) -> ModelInfo:
        """Write `model.pt2` (`torch.export`), or `model.pt` (TorchScript, traced on an example
        batch) when the network cannot be exported; `extra["format"]` says which, and
        `extra["export_error"]` why export failed."""
        torch = _torch()
        network, wrapped = _network(torch, model)
        text = [s.name for s in signature.columns if not (s.is_numeric or s.type == "bool")]
        if text:
            raise UnsupportedModel(
                f"PyTorch networks take one float32 matrix, and column(s) "
                f"{', '.join(map(repr, text))} are not numeric; encode them into numbers first"
            )
        order = signature.names
        example = torch.zeros(_EXAMPLE_ROWS, len(order))
        with _eval_mode(network):
            try:
                with torch.inference_mode():
                    output = network(example)
            except Exception as error:
                raise UnsupportedModel(
                    f"the network fails on a float32 batch of {len(order)} features "
                    f"({type(error).__name__}: {_first_line(error)}); it must take one "
                    "(rows x features) tensor with the sample's columns in order"
                ) from None
            task, classes, width = _describe(output, torch, wrapped, _EXAMPLE_ROWS)
            outputs = wrapped.outputs if task != "regression" else "values"
            stated = json.dumps({"task": task, "classes": classes, "outputs": outputs})
            folder.mkdir(parents=True, exist_ok=True)
            extra = _save_network(torch, network, example, folder, stated)
        extra.update(outputs=outputs, output_width=width, module_class=type(network).__qualname__)
        return ModelInfo(self.name, task, classes, [extra.pop("file")], order, extra)

    def load(self, folder: Path, info: ModelInfo) -> TorchPredictor:
        torch = _torch()
        path = folder / info.files[0]
        if info.extra.get("format") == "torchscript":
            with _quiet():
                module = torch.jit.load(str(path), map_location="cpu")
            module.eval()
        else:
            module = torch.export.load(str(path)).module()
        return TorchPredictor(module, info)

    def onnx_candidates(
        self, model: Any, info: ModelInfo, signature: Signature
    ) -> list[tuple[str, Callable[[], bytes]]]:
        """torch's `torch.export`-based exporter first: torch's maintained one, the only one
        that takes `.pt2` graphs, and it refuses what it cannot capture instead of recording
        one path through it. The TorchScript-based exporter, deprecated since torch 2.9, is the
        fallback without `onnxscript`. Both fold softmax/sigmoid into the graph."""
        return [
            ("torch.onnx dynamo", functools.partial(_to_onnx, model, info, dynamo=True)),
            ("torch.onnx torchscript", functools.partial(_to_onnx, model, info, dynamo=False)),
        ]


def _save_network(
    torch: Any, network: Any, example: Any, folder: Path, stated: str
) -> dict[str, Any]:
    export_error = None
    if not isinstance(network, torch.jit.ScriptModule):
        try:
            with _quiet(attempt=True):
                program = torch.export.export(
                    network, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
                )
                torch.export.save(
                    program, str(folder / "model.pt2"), extra_files={METADATA_FILE: stated}
                )
            return {"file": "model.pt2", "format": "torch.export"}
        except Exception as error:
            export_error = _reason(error)
            (folder / "model.pt2").unlink(missing_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            script = (
                network
                if isinstance(network, torch.jit.ScriptModule)
                else torch.jit.trace(network, example)
            )
            torch.jit.save(script, str(folder / "model.pt"), _extra_files={METADATA_FILE: stated})
        except Exception as error:
            raise UnsupportedModel(
                f"the {type(network).__name__} cannot be saved without its Python class: "
                f"torch.export failed ({export_error}) and so did TorchScript tracing "
                f"({_reason(error)}); make forward() take one "
                "float32 tensor and return one tensor"
            ) from None
    extra: dict[str, Any] = {"file": "model.pt", "format": "torchscript"}
    if export_error is not None:
        extra["export_error"] = export_error
    # a trace records the path the example batch took: keep torch's warnings about that
    traced = [str(w.message)[:300] for w in caught if w.category is torch.jit.TracerWarning]
    if traced:
        extra["trace_warnings"] = traced[:3]
    return extra


def _to_onnx(model: Any, info: ModelInfo, *, dynamo: bool) -> bytes:
    torch = _torch()
    network, _ = _network(torch, model)
    if dynamo:
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise MissingDependency(
                "torch's dynamo ONNX exporter needs the 'onnxscript' package; install it with: "
                "pip install 'shipyard[torch]'"
            ) from None
    example = torch.zeros(_EXAMPLE_ROWS, len(info.input_order))
    output = "values" if info.task == "regression" else "probabilities"
    try:
        with _eval_mode(network), _quiet(attempt=True):
            served = _served(torch, network, info)
            if dynamo:
                program = torch.onnx.export(
                    served,
                    (example,),
                    input_names=["X"],
                    output_names=[output],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    dynamo=True,
                    verbose=False,
                )
                return bytes(program.model_proto.SerializeToString())
            buffer = io.BytesIO()
            torch.onnx.export(
                served,
                (example,),
                buffer,
                input_names=["X"],
                output_names=[output],
                dynamic_axes={"X": {0: "batch"}, output: {0: "batch"}},
                dynamo=False,
            )
            return buffer.getvalue()
    except Exception as error:
        raise UnsupportedModel(f"torch.onnx.export failed: {_reason(error)}") from None


def read_torch_file(path: Path) -> TorchModel:
    """A `.pt2` (`torch.export.save`) or `.pt` (`torch.jit.save`) file as a `TorchModel`.

    A network file cannot say its classes: they are read from the `shipyard.json` extra file
    that shipyard's own save writes (`{"classes": [...], "outputs": "logits"}`; pass it as
    `extra_files=` / `_extra_files=` to save your own), and without it the network is a
    regressor.
    """
    torch = _torch()
    stated = {METADATA_FILE: ""}
    if path.suffix.lower() == ".pt2":
        try:
            with _quiet():
                module = torch.export.load(str(path), extra_files=stated).module()
        except Exception:
            raise UnsupportedModel(
                f"{path.name} is not a torch.export program (torch.export.save) that can be "
                "read; check the file, or give a TorchScript file the extension .pt"
            ) from None
    else:
        try:
            with _quiet():
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=stated)
        except Exception:
            raise UnsupportedModel(
                f"{path.name} is not a TorchScript module (torch.jit.save); a file written by "
                "torch.save needs its Python class to load, so save the network with "
                "torch.export.save(torch.export.export(net, (X[:2],)), 'model.pt2') and "
                "register that"
            ) from None
        module.eval()
    raw = stated[METADATA_FILE]
    said = json.loads(raw) if raw else {}
    outputs = said.get("outputs")
    return TorchModel(
        module,
        classes=said.get("classes"),
        outputs=outputs if outputs in ("logits", "probabilities") else "logits",
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(error: BaseException) -> str:
    text = _ANSI.sub("", str(error)).strip()
    return text.splitlines()[0][:200] if text else ""


def _reason(error: BaseException) -> str:
    """The root cause in one line: torch wraps what went wrong in errors that say which step
    of theirs failed."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {_first_line(error)}"
