#!/usr/bin/env python3
"""Score rows with an exported shipyard model. Needs only onnxruntime and numpy.

    python run.py rows.json        # a list of rows, {"instances": [...]}, or one row object
    python run.py - < rows.json    # the same from stdin
    python run.py --check          # verify every file against manifest.json, then exit

    from run import EdgeModel
    EdgeModel(".").predict([{"transaction_amount": 12.5, ...}])

Every file is checked against the SHA-256 in manifest.json before the model loads. Each answer
is a score and label (binary), a label and probabilities (multiclass) or a value (regression),
the same as the server answers for the version this was exported from.
"""

# This file is shipyard.optimize._runner, copied into every export as run.py: it must import
# nothing but the standard library, numpy and onnxruntime.

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EdgeModel", "ExportCorrupted"]

_DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
    "string": np.object_,
}


class ExportCorrupted(Exception):
    """A file of the export is missing or does not match manifest.json."""


class EdgeModel:
    """An exported model, loaded with onnxruntime (the ORT format where the export has it)."""

    def __init__(self, folder: str | Path = ".", *, prefer_ort: bool = True) -> None:
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest = self._verified()
        self.spec: dict[str, Any] = json.loads((self.folder / "signature.json").read_text())
        model = self.folder / "model.ort"
        if not (prefer_ort and model.is_file()):
            model = self.folder / "model.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.model_file = model.name
        self.task: str = self.spec["task"]
        self.classes: list[Any] | None = self.spec.get("classes")
        self.threshold: float | None = self.spec.get("threshold")
        self.columns: list[dict[str, Any]] = self.spec["signature"]["columns"]
        self.output: str = self.spec["output"]

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def version(self) -> int:
        return int(self.spec["version"])

    def _verified(self) -> dict[str, Any]:
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise ExportCorrupted(
                f"{self.folder} has no manifest.json: it is not a shipyard export"
            )
        manifest: dict[str, Any] = json.loads(path.read_text())
        for name, meta in manifest["files"].items():
            file = self.folder / name
            if not file.is_file():
                raise ExportCorrupted(f"{name} is missing from the export in {self.folder}")
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            if digest != meta["sha256"]:
                raise ExportCorrupted(
                    f"{name} does not match manifest.json (sha256 {digest}, expected "
                    f"{meta['sha256']}): the export was changed or damaged; export it again"
                )
        return manifest

    def columns_of(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """Rows as typed columns, by the server's rules: a ValueError names the first value the
        server would refuse (so nothing is answered here that could not be logged there)."""
        out: dict[str, np.ndarray] = {}
        for column in self.columns:
            name, kind, nullable = column["name"], column["type"], column.get("nullable", False)
            values = []
            for index, row in enumerate(rows):
                if name not in row and not nullable:
                    raise ValueError(f"row {index} has no {name!r}")
                value = row.get(name)
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    if not nullable:
                        raise ValueError(f"row {index}: {name!r} may not be null")
                    value = (
                        math.nan if kind.startswith("float") else ("" if kind == "string" else None)
                    )
                    if value is None:
                        raise ValueError(f"row {index}: {name!r} has no value")
                else:
                    problem = _problem(value, kind)
                    if problem:
                        raise ValueError(f"row {index}: {name!r} {problem}, not {value!r}")
                values.append(value)
            out[name] = np.asarray(values, dtype=_DTYPES[kind])
        return out

    def raw(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's output for typed columns: probabilities (n, k) or values (n,)."""
        plan = self.spec["plan"]
        feeds = {}
        if plan["mode"] == "matrix":
            spec = plan["inputs"][0]
            feeds[spec["name"]] = np.column_stack(
                [np.asarray(columns[c], dtype=spec["dtype"]) for c in plan["order"]]
            )
        else:
            for spec in plan["inputs"]:
                values = columns[spec["name"]]
                if spec["dtype"] == "|O":
                    values = np.array(["" if v is None else v for v in values], dtype=object)
                else:
                    values = np.asarray(values, dtype=spec["dtype"])
                feeds[spec["name"]] = values.reshape(-1, 1) if spec["rank"] == 2 else values
        out = np.asarray(self.session.run([self.output], feeds)[0], dtype=np.float64)
        if self.task == "regression":
            return out.reshape(-1)
        if out.ndim == 1 or out.shape[1] == 1:
            positive = out.reshape(-1)
            out = np.column_stack([1.0 - positive, positive])
        return out

    def predict(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One answer per row, shaped as the server shapes them."""
        if not rows:
            return []
        raw = self.raw(self.columns_of(rows))
        if self.task == "regression":
            return [{"value": float(v)} for v in raw]
        classes = self.classes or list(range(raw.shape[1]))
        if self.task == "binary":
            threshold = 0.5 if self.threshold is None else self.threshold
            return [
                {
                    "score": float(p),
                    "label": classes[1] if p >= threshold else classes[0],
                    "threshold": threshold,
                }
                for p in raw[:, 1]
            ]
        names = [str(c) for c in classes]
        return [
            {
                "label": classes[int(np.argmax(row))],
                "score": float(np.max(row)),
                "probabilities": {n: float(p) for n, p in zip(names, row, strict=True)},
            }
            for row in raw
        ]

    def confidence(self, answer: dict[str, Any]) -> float | None:
        """How sure the model is of an answer: the probability of the class it chose (None for
        a regressor, which has no such measure)."""
        if "value" in answer:
            return None
        score = float(answer["score"])
        return max(score, 1.0 - score) if self.task == "binary" else score


def _problem(value: Any, kind: str) -> str | None:
    """Why the server would refuse `value` for a column of type `kind`, or None."""
    if kind == "string":
        return None if type(value) is str else "must be a string"
    if kind == "bool":
        return None if type(value) is bool else "must be true or false"
    if type(value) is bool or type(value) not in (int, float):
        return "must be a number"
    if kind in ("int64", "int32"):
        if type(value) is float and not value.is_integer():
            return "must be an integer"
        bits = 32 if kind == "int32" else 64
        if not -(2 ** (bits - 1)) <= int(value) < 2 ** (bits - 1):
            return f"is out of the {bits}-bit integer range"
    return None


def _rows(source: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    data = json.loads(text)
    if isinstance(data, dict) and "instances" in data:
        data = data["instances"]
    return [data] if isinstance(data, dict) else list(data)


def main(argv: list[str]) -> int:
    folder = Path(__file__).resolve().parent
    if argv == ["--check"]:
        EdgeModel(folder)
        print("ok: every file matches manifest.json")
        return 0
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        model = EdgeModel(folder)
        answers = model.predict(_rows(argv[0]))
    except (ExportCorrupted, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    json.dump({"model": model.name, "version": model.version, "predictions": answers}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
