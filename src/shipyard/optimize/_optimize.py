"""`optimize`: a smaller, faster version of a registered model, with proof of what it costs.

Each run applies the methods asked for, in this order, to the version's ONNX graph:

    prune      drop the trees or hidden units that contribute least
    distill    train a smaller student on the model's own scores
    quantize   int8 (dynamic or static QDQ) or fp16 weights

then scores the result on the holdout beside the parent, measures both as serving runs them,
and applies the accuracy gate: the child may lose at most `max_loss` of AUC (binary), of
accuracy (multiclass), or of RMSE relative to the parent's (regression). A child that passes
becomes the next version, with its lineage (`optimized_from`, the methods, their settings and
the report); one that fails is not registered, and the report says why.

`compare_all` tries every method on its own (and a distilled student quantised to int8) and
registers none: the table is for choosing, and shipyard chooses nothing silently.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core import Columns, Signature
from shipyard.core.errors import InvalidInput, UnsupportedModel
from shipyard.core.tables import read_table_file
from shipyard.core.values import category_text
from shipyard.monitoring import holdout_metrics
from shipyard.optimize._distill import Student, parse_student, train_student
from shipyard.optimize._graph import Broken, NotApplicable, served_graph
from shipyard.optimize._measure import Figures, measure
from shipyard.optimize._prune import prune as prune_graph
from shipyard.optimize._quantize import QUANTIZE_METHODS
from shipyard.optimize._quantize import quantize as quantize_graph
from shipyard.registry import ModelVersion, Registry
from shipyard.runtime import OnnxGraph, load_predictor, package

__all__ = ["OptimizationReport", "Optimizer", "Outcome", "parse_max_loss"]

DEFAULT_MAX_LOSS = 0.01
DEFAULT_STUDENT = "mlp:64,32"
SAMPLE_ROWS = 2000


@dataclass
class Outcome:
    """One method (or chain of methods) tried on the parent."""

    method: str
    settings: dict[str, Any]
    passed: bool
    reason: str = ""
    figures: Figures | None = None
    delta: dict[str, float] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["figures"] = self.figures.to_dict() if self.figures else None
        return out


@dataclass
class OptimizationReport:
    """The parent's figures and every method's, comparable row by row."""

    model: str
    parent_version: int
    parent: Figures
    gate_metric: str
    max_loss: float
    holdout_rows: int
    outcomes: list[Outcome]

    @property
    def registered(self) -> list[int]:
        return [o.version for o in self.outcomes if o.version is not None]

    def speedup(self, outcome: Outcome, batch: bool = False) -> float | None:
        """How many times faster than the parent per row (one row, or batches of 1,000)."""
        if outcome.figures is None:
            return None
        parent = self.parent.latency_ms_per_row_1000 if batch else self.parent.latency_ms_1_row
        child = (
            outcome.figures.latency_ms_per_row_1000 if batch else outcome.figures.latency_ms_1_row
        )
        return parent / child if child > 0 else None

    def shrink(self, outcome: Outcome) -> float | None:
        """How many times smaller than the parent's model file."""
        if outcome.figures is None or outcome.figures.size_bytes <= 0:
            return None
        return self.parent.size_bytes / outcome.figures.size_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "parent_version": self.parent_version,
            "parent": self.parent.to_dict(),
            "gate_metric": self.gate_metric,
            "max_loss": self.max_loss,
            "holdout_rows": self.holdout_rows,
            "outcomes": [
                {
                    **o.to_dict(),
                    "speedup_1_row": self.speedup(o),
                    "speedup_1000_rows": self.speedup(o, batch=True),
                    "smaller_by": self.shrink(o),
                }
                for o in self.outcomes
            ],
            "registered": self.registered,
        }


def parse_max_loss(value: str | float) -> float:
    """`1%` or `0.01` -> 0.01: the most the child may lose on the gate's metric."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise InvalidInput(f"--max-loss takes a share like 1% or 0.01, got {value!r}") from None
    if not text.endswith("%") and number >= 1:
        raise InvalidInput(
            f"--max-loss {value} reads as {number:.0%}; write 1% (or 0.01) for one point"
        )
    if not 0 <= number < 1:
        raise InvalidInput(f"--max-loss must be between 0% and 100%, got {value!r}")
    return number


@dataclass
class _Parent:
    record: ModelVersion
    signature: Signature
    classes: list[Any] | None
    predictor: Any
    onnx: bytes | None
    plan: dict[str, Any] | None
    size_bytes: int
    reference: Any  # a DataFrame of training rows (the bundle's reference sample), or None


@dataclass
class _Candidate:
    """Where a chain of methods stands: an ONNX graph, or a fitted scikit-learn student."""

    onnx: bytes | None
    plan: dict[str, Any] | None
    student: Any = None
    details: dict[str, Any] = field(default_factory=dict)
    classes: list[Any] | None = None  # in the order of the graph's scores; None: the parent's


class Optimizer:
    """Optimises registered versions; `run` is `shipyard optimize` (see the module docstring)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def run(
        self,
        ref: str,
        *,
        holdout: Any,
        label: str = "label",
        quantize: str | None = None,
        calibration: Any = None,
        prune: float | None = None,
        distill: Any = None,
        train: Any = None,
        data: Any = None,
        max_loss: str | float = DEFAULT_MAX_LOSS,
        compare_all: bool = False,
        register: bool = True,
        seed: int = 0,
    ) -> OptimizationReport:
        """Optimise the version `ref` (`name:version` or `name:alias`) and register the result
        if it passes the gate.

        Args:
            holdout: labelled rows (a DataFrame, or a .parquet/.csv path) the gate scores the
                parent and the child on; never used for training.
            label: the holdout's (and `train`'s) label column.
            quantize: `int8`, `int8-static` or `fp16`.
            calibration: rows for static int8's activation ranges (default: the version's
                reference sample).
            prune: the share of trees or hidden units to remove, e.g. 0.5.
            distill: a student spec (`mlp:32`, `gbm:trees=50,depth=3`, ...) or an unfitted
                scikit-learn estimator.
            train: labelled training rows for the short fine-tune after pruning a network.
            data: rows (unlabelled is fine) the student learns the teacher's scores on
                (default: the version's reference sample).
            max_loss: the most the child may lose, `1%` or 0.01 (default 1%).
            compare_all: try every method and register none.
            register: register a child that passes (False: report only).
        """
        loss_bar = parse_max_loss(max_loss)
        if quantize is not None and quantize not in QUANTIZE_METHODS:
            raise InvalidInput(f"--quantize takes {', '.join(QUANTIZE_METHODS)}, not {quantize!r}")
        if prune is not None and not 0 < float(prune) < 1:
            raise InvalidInput(f"--prune takes the share to remove, between 0 and 1; got {prune}")
        student = parse_student(distill) if distill is not None else None
        chains = self._chains(quantize, prune, student, compare_all)
        parent = self._parent(ref)
        task = parent.record.task
        columns, truth = self._labelled(holdout, label, parent.signature, "holdout")
        calibration_columns = (
            self._columns(calibration, parent.signature, "calibration")
            if calibration is not None
            else self._reference_columns(parent)
        )
        train_set = (
            (*self._labelled(train, label, parent.signature, "training"), parent.classes)
            if train is not None
            else None
        )
        teacher_rows = parent.reference
        if data is not None:
            teacher_rows = self._frame(data, "data")
            self._columns(teacher_rows, parent.signature, "data")  # says what is missing
        parent_metrics = holdout_metrics(
            parent.predictor, columns, truth, task, parent.classes, parent.record.threshold
        )
        parent_figures = Figures(
            parent.size_bytes, *measure(parent.predictor, columns), _quality(parent_metrics)
        )
        gate_metric = _gate_metric(task, parent_metrics)
        report = OptimizationReport(
            parent.record.name, parent.record.version, parent_figures, gate_metric, loss_bar,
            len(truth), [],
        )  # fmt: skip
        for chain in chains:
            outcome, model = self._try(
                chain, parent, columns, truth, calibration_columns, train_set, teacher_rows,
                report, seed,
            )  # fmt: skip
            report.outcomes.append(outcome)
            if model is None and not compare_all and outcome.reason.startswith("not applicable"):
                # the one thing asked for cannot be done: an error with the fix, not a report
                raise InvalidInput(outcome.reason.removeprefix("not applicable: "))
            if outcome.passed and register and not compare_all:
                outcome.version = self._register(model, parent, outcome, report, columns).version
        return report

    # -- planning ------------------------------------------------------------------------------

    @staticmethod
    def _chains(
        quantize: str | None, prune: float | None, student: Student | None, compare_all: bool
    ) -> list[list[tuple[str, Any]]]:
        if compare_all:
            chosen = student or parse_student(DEFAULT_STUDENT)
            return [
                [("quantize", "int8")],
                [("quantize", "int8-static")],
                [("quantize", "fp16")],
                [("prune", float(prune) if prune is not None else 0.5)],
                [("distill", chosen)],
                [("distill", chosen), ("quantize", quantize or "int8")],
            ]
        chain: list[tuple[str, Any]] = []
        if prune is not None:
            chain.append(("prune", float(prune)))
        if student is not None:
            chain.append(("distill", student))
        if quantize is not None:
            chain.append(("quantize", quantize))
        if not chain:
            raise InvalidInput(
                "say how to optimise: --quantize int8|int8-static|fp16, --prune SHARE, "
                "--distill STUDENT, or --all to compare every method"
            )
        return [chain]

    # -- inputs --------------------------------------------------------------------------------

    def _parent(self, ref: str) -> _Parent:
        record = self.registry.resolve(ref)
        bundle = self.registry.open(record.name, record.version)
        info = bundle.metadata["model"]
        onnx, plan = served_graph(bundle.folder, info) or (None, None)
        if record.runtime == "onnxruntime" and onnx is not None:
            size = len(onnx)
        else:
            size = sum(
                p.stat().st_size for p in (bundle.folder / "model").rglob("*") if p.is_file()
            )
        reference = None
        sample = bundle.folder / "reference" / "sample.parquet"
        if sample.is_file():
            reference = read_table_file(sample, "parquet")
        return _Parent(
            record, record.signature, info.get("classes"), bundle.predictor,
            onnx, plan, size, reference,
        )  # fmt: skip

    @staticmethod
    def _frame(given: Any, what: str) -> Any:
        if isinstance(given, str | Path):
            path = Path(given)
            suffix = path.suffix.lower()
            if not path.is_file():
                raise InvalidInput(f"the {what} file {str(path)!r} does not exist")
            if suffix not in (".parquet", ".csv"):
                raise InvalidInput(f"the {what} file must be .parquet or .csv, not {path.name}")
            return read_table_file(path, "csv" if suffix == ".csv" else "parquet")
        if not hasattr(given, "columns"):
            raise InvalidInput(f"the {what} rows must be a DataFrame or a .parquet/.csv path")
        return given

    def _columns(self, given: Any, signature: Signature, what: str) -> Columns:
        frame = self._frame(given, what)
        missing = [c for c in signature.names if c not in frame.columns]
        if missing:
            raise InvalidInput(
                f"the {what} rows lack the model's column(s) {', '.join(missing)}; they need "
                f"every input column ({', '.join(signature.names)})"
            )
        if len(frame) == 0:
            raise InvalidInput(f"the {what} rows are empty")
        try:
            return signature.validate_frame(frame[signature.names])
        except InvalidInput as error:
            raise InvalidInput(
                f"the {what} rows do not fit the model's signature: {error}"
            ) from None

    def _labelled(
        self, given: Any, label: str, signature: Signature, what: str
    ) -> tuple[Columns, np.ndarray]:
        frame = self._frame(given, what)
        if label not in frame.columns:
            raise InvalidInput(
                f"the {what} rows have no label column {label!r} (columns: "
                f"{', '.join(map(str, frame.columns))}); name it with --label"
            )
        frame = frame[frame[label].notna()]
        return self._columns(frame, signature, what), frame[label].to_numpy()

    def _reference_columns(self, parent: _Parent) -> Columns | None:
        if parent.reference is None:
            return None
        return parent.signature.validate_frame(parent.reference[parent.signature.names])

    # -- one chain -----------------------------------------------------------------------------

    def _try(
        self,
        chain: list[tuple[str, Any]],
        parent: _Parent,
        columns: Columns,
        truth: np.ndarray,
        calibration: Columns | None,
        train_set: tuple[Columns, np.ndarray, list[Any] | None] | None,
        teacher_rows: Any,
        report: OptimizationReport,
        seed: int,
    ) -> tuple[Outcome, Any]:
        """The outcome of one chain, and the model to register if it passed."""
        method = "+".join(_step_name(step, arg) for step, arg in chain)
        settings = {step: _setting(arg) for step, arg in chain}
        outcome = Outcome(method, settings, passed=False)
        candidate = _Candidate(parent.onnx, parent.plan)
        task = parent.record.task
        try:
            for step, arg in chain:
                candidate = self._apply(
                    step, arg, candidate, parent, columns, calibration, train_set, teacher_rows,
                    seed,
                )  # fmt: skip
            model = self._registrable(candidate, parent)
            predictor, size, classes = _packaged(model, parent, self._sample(parent, columns))
            metrics = holdout_metrics(
                _Finite(predictor), columns, truth, task, classes, parent.record.threshold
            )
        except NotApplicable as error:
            outcome.reason = f"not applicable: {error}"
            outcome.details = candidate.details
            return outcome, None
        except Broken as error:
            outcome.reason = f"refused: {error}"
            outcome.details = candidate.details
            return outcome, None
        except (InvalidInput, UnsupportedModel):
            raise
        except Exception as error:  # a method that breaks on this model: a refusal, not a crash
            first = str(error).splitlines()[0][:300] if str(error) else ""
            outcome.reason = (
                f"refused: the method failed on this model: {type(error).__name__}: {first}"
            )
            outcome.details = candidate.details
            return outcome, None
        outcome.figures = Figures(size, *measure(predictor, columns), _quality(metrics))
        outcome.details = candidate.details
        outcome.delta = {
            k: round(v - report.parent.metrics[k], 6)
            for k, v in outcome.figures.metrics.items()
            if k in report.parent.metrics
        }
        outcome.gate = _gate(
            task,
            report.gate_metric,
            report.parent.metrics,
            outcome.figures.metrics,
            report.max_loss,
        )
        outcome.passed = bool(outcome.gate["passed"])
        if not outcome.passed:
            outcome.reason = (
                f"refused by the gate: {report.gate_metric} {outcome.gate['child']:.4f} against "
                f"the parent's {outcome.gate['parent']:.4f} loses {outcome.gate['loss']:.2%}, "
                f"more than the {report.max_loss:.2%} allowed"
            )
        return outcome, model

    def _apply(
        self,
        step: str,
        arg: Any,
        candidate: _Candidate,
        parent: _Parent,
        columns: Columns,
        calibration: Columns | None,
        train_set: tuple[Columns, np.ndarray, list[Any] | None] | None,
        teacher_rows: Any,
        seed: int,
    ) -> _Candidate:
        details = dict(candidate.details)
        if step == "distill":
            if teacher_rows is None:
                raise NotApplicable(
                    "distillation needs rows to learn the model's scores on: pass --data PATH "
                    "(unlabelled is fine); this version was registered without a reference sample"
                )
            frame = teacher_rows
            teacher = parent.predictor.predict(
                parent.signature.validate_frame(frame[parent.signature.names])
            )
            fitted, info = train_student(
                arg,
                frame,
                np.asarray(teacher),
                parent.signature,
                parent.record.task,
                parent.classes,
                seed,
            )
            learned = [category_text(c) for c in getattr(fitted, "classes_", [])]
            missing = [c for c in parent.classes or [] if category_text(c) not in learned]
            if missing:
                raise NotApplicable(
                    f"the student never learned class(es) {', '.join(map(str, missing))} from "
                    "the teacher's answers on these rows; give it more rows (--data) or a "
                    "larger student"
                )
            onnx, plan = _student_graph(fitted, parent, self._sample(parent, columns))
            details["distill"] = info
            classes = list(fitted.classes_) if hasattr(fitted, "classes_") else None
            return _Candidate(onnx, plan, fitted, details, classes)
        if candidate.onnx is None or candidate.plan is None:
            raise NotApplicable(
                f"{parent.record.name}:{parent.record.version} has no ONNX graph to {step} (its "
                f"{parent.record.flavour} model did not convert); --distill trains a student "
                "that has one"
            )
        if step == "prune":
            # trees are ranked on rows the gate does not score: the reference sample (or the
            # calibration rows); on the holdout only when the version has neither
            ranking = calibration if calibration is not None else columns
            graph, info = prune_graph(candidate.onnx, arg, candidate.plan, ranking, train_set)
            info["ranked_on"] = (
                "holdout" if calibration is None else "reference or calibration rows"
            )
            details["prune"] = info
            return _Candidate(graph, candidate.plan, None, details, candidate.classes)
        graph, info = quantize_graph(candidate.onnx, arg, candidate.plan, calibration)
        details["quantize"] = {"method": arg, **info}
        return _Candidate(graph, candidate.plan, None, details, candidate.classes)

    @staticmethod
    def _registrable(candidate: _Candidate, parent: _Parent) -> Any:
        if candidate.student is not None:
            return candidate.student
        assert candidate.onnx is not None
        assert candidate.plan is not None
        order = candidate.plan.get("order") if candidate.plan.get("mode") == "matrix" else None
        classes = candidate.classes if candidate.classes is not None else parent.classes
        return OnnxGraph(candidate.onnx, parent.record.task, classes, order)  # type: ignore[arg-type]

    @staticmethod
    def _sample(parent: _Parent, columns: Columns) -> Any:
        if parent.reference is not None:
            return parent.reference[parent.signature.names].iloc[:SAMPLE_ROWS]
        import pandas as pd

        return pd.DataFrame({k: v[:SAMPLE_ROWS] for k, v in columns.items()})

    # -- registering ---------------------------------------------------------------------------

    def _register(
        self,
        model: Any,
        parent: _Parent,
        outcome: Outcome,
        report: OptimizationReport,
        columns: Columns,
    ) -> ModelVersion:
        record = parent.record
        sample = self._sample(parent, columns)
        return self.registry.register(
            model,
            name=record.name,
            sample=sample,
            training_data=parent.reference if parent.reference is not None else None,
            signature=parent.signature,
            metrics={k: round(v, 6) for k, v in outcome.figures.metrics.items()}
            if outcome.figures
            else {},
            params={"optimized_from": record.version, "method": outcome.method, **outcome.settings},
            tags={"optimized": outcome.method},
            description=f"{outcome.method} of {record.name}:{record.version}",
            purpose=record.purpose,
            features=record.features,
            threshold=record.threshold if record.task == "binary" else None,
            lineage={
                "optimized_from": record.version,
                "method": outcome.method,
                "settings": outcome.settings,
                "gate": outcome.gate,
                "parent": report.parent.to_dict(),
                "child": outcome.figures.to_dict() if outcome.figures else None,
                "details": outcome.details,
            },
        )


class _Finite:
    """A predictor whose non-finite answers are a refusal: the holdout is scored once, for the
    check and the metrics alike."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def predict(self, columns: Columns) -> np.ndarray:
        answers = np.asarray(self.predictor.predict(columns), dtype=np.float64)
        if not np.all(np.isfinite(answers)):
            raise Broken("the result gives non-finite outputs on the holdout rows")
        return answers


def _packaged(model: Any, parent: _Parent, sample: Any) -> tuple[Any, int, list[Any] | None]:
    """The predictor serving would load for `model`, the size of what it runs, and its classes
    in the order of its scores."""
    folder = Path(tempfile.mkdtemp(prefix="shipyard-optimize-"))
    try:
        checked = parent.signature.validate_frame(sample)
        try:
            packaged = package(model, parent.signature, checked, folder / "model")
        except UnsupportedModel as error:
            raise Broken(f"the result cannot be served: {error}") from None
        predictor = load_predictor(folder / "model", packaged.info, packaged.runtime, packaged.onnx)
        if packaged.onnx is not None:
            size = len(packaged.onnx)
        else:
            size = sum(p.stat().st_size for p in (folder / "model").rglob("*") if p.is_file())
        return predictor, size, packaged.info.classes
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _student_graph(
    fitted: Any, parent: _Parent, sample: Any
) -> tuple[bytes | None, dict[str, Any] | None]:
    """The student's ONNX graph and input plan, as registration would make them."""
    folder = Path(tempfile.mkdtemp(prefix="shipyard-student-"))
    try:
        checked = parent.signature.validate_frame(sample)
        packaged = package(fitted, parent.signature, checked, folder / "model")
        return packaged.onnx, packaged.info.extra.get("onnx_plan")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _quality(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k != "latency_per_row_ms"}


def _gate_metric(task: str, parent: dict[str, float]) -> str:
    if task == "binary":
        return "auc" if "auc" in parent else "accuracy"
    return "accuracy" if task == "multiclass" else "rmse"


def _gate(
    task: str, metric: str, parent: dict[str, float], child: dict[str, float], max_loss: float
) -> dict[str, Any]:
    before, after = parent[metric], child.get(metric, float("nan"))
    if task == "regression":
        loss = (after - before) / before if before > 0 else after - before
        kind = "relative increase"
    else:
        loss = before - after
        kind = "absolute drop"
    passed = bool(np.isfinite(loss) and loss <= max_loss + 1e-12)
    return {
        "metric": metric, "parent": before, "child": after, "loss": loss, "loss_kind": kind,
        "max_loss": max_loss, "passed": passed,
    }  # fmt: skip


def _step_name(step: str, arg: Any) -> str:
    if step == "quantize":
        return str(arg)
    if step == "prune":
        return f"prune {arg:g}"
    return f"distill {arg.describe()}"


def _setting(arg: Any) -> Any:
    return arg.describe() if isinstance(arg, Student) else arg
