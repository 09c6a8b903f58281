"""Distillation: a smaller student learns the teacher's scores, then serves through ONNX.

Student specs (`--distill SPEC`):

    mlp                   a network with one hidden layer of 32 units
    mlp:64,32             hidden layer sizes
    gbm:trees=50,depth=3  shallow gradient-boosted trees
    tree:depth=8          one decision tree
    linear                logistic regression (classifiers) or ridge regression
    estimator:sklearn.ensemble.ExtraTreesClassifier(n_estimators=20, max_depth=8)
                          any scikit-learn estimator, by import path, with literal arguments

A classifier student learns the teacher's probabilities, not its hard labels: every row is
shown once per class, weighted by the teacher's probability of that class (cross-entropy
against soft targets, the loss of knowledge distillation). A regressor learns the teacher's
values. The student sits behind the preprocessing it needs (imputing, scaling, one-hot
encoding), so the graph it becomes takes the same columns as its teacher.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shipyard.core import Signature
from shipyard.core.errors import InvalidInput

__all__ = ["Student", "parse_student", "train_student"]

_SPEC = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<args>.*))?$")
_KINDS = ("mlp", "gbm", "tree", "linear", "estimator")


@dataclass(frozen=True)
class Student:
    """What to train: a kind and its settings (or a scikit-learn estimator given in Python)."""

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    estimator: Any = None

    def describe(self) -> str:
        if self.kind == "estimator":
            return f"estimator:{self.settings.get('class', type(self.estimator).__name__)}"
        if self.kind == "mlp":
            return "mlp:" + ",".join(str(u) for u in self.settings["hidden"])
        if self.settings:
            return f"{self.kind}:" + ",".join(f"{k}={v}" for k, v in self.settings.items())
        return self.kind


def _bad(spec: str, why: str) -> InvalidInput:
    return InvalidInput(
        f"cannot read the student spec {spec!r}: {why}. Write one of: mlp, mlp:64,32, "
        "gbm:trees=50,depth=3, tree:depth=8, linear, or "
        "estimator:sklearn.tree.DecisionTreeClassifier(max_depth=6)"
    )


def parse_student(spec: Any) -> Student:
    """A student from its spec text, or from a scikit-learn estimator object."""
    if not isinstance(spec, str):
        if not hasattr(spec, "fit"):
            raise InvalidInput(
                f"a student must be a spec text or an unfitted scikit-learn estimator, not a "
                f"{type(spec).__name__}"
            )
        return Student("estimator", {"class": type(spec).__name__}, spec)
    text = spec.strip()
    match = _SPEC.match(text)
    if match is None or match.group("kind") not in _KINDS:
        raise _bad(spec, f"the kind must be one of {', '.join(_KINDS)}")
    kind, args = match.group("kind"), (match.group("args") or "").strip()
    if kind == "mlp":
        try:
            hidden = [int(u) for u in args.split(",")] if args else [32]
        except ValueError:
            raise _bad(spec, "mlp takes hidden layer sizes, e.g. mlp:64,32") from None
        if not hidden or any(not 1 <= u <= 4096 for u in hidden) or len(hidden) > 8:
            raise _bad(spec, "an mlp has 1-8 hidden layers of 1-4096 units")
        return Student("mlp", {"hidden": hidden})
    if kind == "estimator":
        return _estimator(spec, args)
    allowed = {
        "gbm": {"trees": (1, 2000), "depth": (1, 12)},
        "tree": {"depth": (1, 30)},
        "linear": {},
    }[kind]
    settings: dict[str, Any] = {
        "gbm": {"trees": 50, "depth": 3},
        "tree": {"depth": 8},
        "linear": {},
    }[kind]
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, _, value = part.partition("=")
        if key not in allowed or not value.isdigit():
            raise _bad(
                spec, f"{kind} takes {', '.join(f'{k}=N' for k in allowed) or 'no settings'}"
            )
        low, high = allowed[key]
        if not low <= int(value) <= high:
            raise _bad(spec, f"{key} must be between {low} and {high}")
        settings[key] = int(value)
    return Student(kind, settings)


def _estimator(spec: str, args: str) -> Student:
    try:
        call = ast.parse(args, mode="eval").body
    except SyntaxError:
        raise _bad(spec, "the estimator must be written module.Class(arg=value, ...)") from None
    if isinstance(call, ast.Attribute | ast.Name):
        call = ast.Call(func=call, args=[], keywords=[])
    if not isinstance(call, ast.Call) or call.args:
        raise _bad(spec, "give the estimator's arguments by name, e.g. max_depth=6")
    path = ast.unparse(call.func)
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise _bad(
            spec, "name the estimator with its module, e.g. sklearn.tree.DecisionTreeClassifier"
        )
    try:
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    except ValueError:
        raise _bad(spec, "the estimator's arguments must be literal values") from None
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise _bad(spec, f"there is no importable {path}") from None
    try:
        estimator = cls(**kwargs)
    except TypeError as error:
        raise _bad(spec, f"{path} does not take those arguments ({error})") from None
    if not hasattr(estimator, "fit"):
        raise _bad(spec, f"{path} is not an estimator (it has no fit)")
    return Student("estimator", {"class": path, **kwargs}, estimator)


def _head(student: Student, task: str, seed: int) -> Any:
    classify = task != "regression"
    if student.kind == "estimator":
        from sklearn.base import clone

        return clone(student.estimator)
    if student.kind == "mlp":
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPClassifier if classify else MLPRegressor
        return cls(
            tuple(student.settings["hidden"]),
            max_iter=200,
            early_stopping=True,
            n_iter_no_change=8,
            random_state=seed,
        )
    if student.kind == "gbm":
        from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

        gbm = GradientBoostingClassifier if classify else GradientBoostingRegressor
        return gbm(
            n_estimators=student.settings["trees"],
            max_depth=student.settings["depth"],
            random_state=seed,
        )
    if student.kind == "tree":
        from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

        tree = DecisionTreeClassifier if classify else DecisionTreeRegressor
        return tree(max_depth=student.settings["depth"], random_state=seed)
    from sklearn.linear_model import LogisticRegression, Ridge

    return LogisticRegression(max_iter=2000) if classify else Ridge()


def _preprocessing(signature: Signature, scale: bool) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    text = [c.name for c in signature.columns if c.type == "string"]
    numeric = [c.name for c in signature.columns if c.type != "string"]
    parts = []
    if numeric:
        steps = [SimpleImputer(strategy="median"), *([StandardScaler()] if scale else [])]
        parts.append(("numeric", make_pipeline(*steps), numeric))
    if text:
        parts.append(("text", OneHotEncoder(handle_unknown="ignore", sparse_output=False), text))
    return ColumnTransformer(parts)


def train_student(
    student: Student,
    frame: Any,
    teacher_output: np.ndarray,
    signature: Signature,
    task: str,
    classes: list[Any] | None,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Fit `student` on `frame` (the signature's columns) to the teacher's output; returns a
    fitted scikit-learn Pipeline and what was done."""
    import pandas as pd
    from sklearn.pipeline import Pipeline

    head = _head(student, task, seed)
    scale = student.kind in ("mlp", "linear") or student.kind == "estimator"
    features = frame[signature.names].reset_index(drop=True)
    if any(c.type == "string" for c in signature.columns):
        pipeline = Pipeline([("features", _preprocessing(signature, scale)), ("student", head)])
    else:
        # numbers only: fitted on a matrix in the signature's order, the graph takes one
        # (rows x features) input, which costs less per call than one input per column
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import StandardScaler

        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        if scale:
            steps.append(("scale", StandardScaler()))
        pipeline = Pipeline([*steps, ("student", head)])
        features = features.to_numpy(dtype=np.float64)
    details: dict[str, Any] = {"student": student.describe(), "rows": len(features)}
    if task == "regression":
        pipeline.fit(features, np.asarray(teacher_output, dtype=np.float64).reshape(-1))
        details["targets"] = "teacher values"
        return pipeline, details
    proba = np.asarray(teacher_output, dtype=np.float64)
    labels = list(classes or range(proba.shape[1]))
    accepts_weights = "sample_weight" in inspect.signature(head.fit).parameters
    if not accepts_weights:
        pipeline.fit(features, np.asarray(labels, dtype=object)[proba.argmax(axis=1)].tolist())
        details["targets"] = "teacher labels (the estimator takes no sample_weight)"
        return pipeline, details
    # every row once per class, weighted by the teacher's probability of it
    if isinstance(features, np.ndarray):
        repeated: Any = np.concatenate([features] * len(labels))
    else:
        repeated = pd.concat([features] * len(labels), ignore_index=True)
    target = np.repeat(np.arange(len(labels)), len(features))
    weights = proba.T.reshape(-1)
    used = weights > 1e-4
    y = [labels[k] for k in target[used]]
    rows = (
        repeated[used]
        if isinstance(repeated, np.ndarray)
        else repeated[used].reset_index(drop=True)
    )
    pipeline.fit(rows, y, student__sample_weight=weights[used])
    details["targets"] = "teacher probabilities (soft targets)"
    details["weighted_rows"] = int(used.sum())
    return pipeline, details
