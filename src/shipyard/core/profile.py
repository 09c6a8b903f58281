"""Reference profiles and fingerprints of training data.

A profile is what drift checks later compare live traffic against: per numeric column the
quantiles, mean, standard deviation and an equal-frequency histogram; per categorical column
the category frequencies; for every column the missing rate. It is plain JSON so it outlives
any library version.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from shipyard.core.errors import InvalidInput
from shipyard.core.signature import Signature

__all__ = ["as_arrow", "fingerprint", "profile", "reference_sample", "table_sha256"]

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
HISTOGRAM_BINS = 20
MAX_CATEGORIES = 100


def profile(sample: Any, signature: Signature) -> dict[str, Any]:
    """Profile each signature column of `sample` (anything `Signature.infer` reads)."""
    import pandas as pd

    from shipyard.core.signature import _to_frame

    frame = _to_frame(sample, pd)
    columns: dict[str, Any] = {}
    for spec in signature.columns:
        series = frame[spec.name]
        missing = series.isna()
        entry: dict[str, Any] = {
            "type": spec.type,
            "count": len(series),
            "missing": int(missing.sum()),
            "missing_rate": float(missing.mean()) if len(series) else 0.0,
        }
        present = series[~missing]
        if spec.is_numeric or spec.type == "bool":
            entry.update(_numeric(present.to_numpy(dtype=np.float64)))
        else:
            entry.update(_categorical(present.astype(str)))
        columns[spec.name] = entry
    return {"rows": len(frame), "columns": columns}


def reference_sample(data: Any, signature: Signature, rows: int = 100_000, seed: int = 0) -> Any:
    """Up to `rows` rows of the signature's columns, drawn at random (training data is often in
    time order, so its head is not representative), as a pyarrow Table for drift tests."""
    import pandas as pd
    import pyarrow as pa

    from shipyard.core.signature import _to_frame

    frame = _to_frame(data, pd)[signature.names]
    if len(frame) > rows:
        frame = frame.sample(n=rows, random_state=seed).sort_index()
    return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def _numeric(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"kind": "numeric", "quantiles": None, "histogram": None}
    quantiles = np.quantile(values, QUANTILES)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, HISTOGRAM_BINS + 1)))
    if edges.size < 2:
        edges = np.array([edges[0], edges[0]])
        counts = np.array([values.size])
    else:
        counts, edges = np.histogram(values, bins=edges)
    return {
        "kind": "numeric",
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def _categorical(values: Any) -> dict[str, Any]:
    counts = values.value_counts()
    total = int(counts.sum())
    top = counts.iloc[:MAX_CATEGORIES]
    frequencies = {str(k): int(v) / total for k, v in top.items()} if total else {}
    other = total - int(top.sum())
    return {
        "kind": "categorical",
        "distinct": int(counts.size),
        "frequencies": frequencies,
        "other_rate": other / total if total else 0.0,
    }


def fingerprint(data: Any) -> dict[str, Any]:
    """A SHA-256 fingerprint of a data set: a file or folder path, or an in-memory table.

    In-memory data is hashed through its Arrow IPC serialisation, so the same values with the
    same column names and types give the same fingerprint in any process.
    """
    if isinstance(data, str | Path):
        return _fingerprint_path(Path(data))
    table = as_arrow(data)
    return {
        "sha256": table_sha256(table),
        "rows": int(table.num_rows),
        "columns": [str(c) for c in table.column_names],
        "source": "in-memory",
    }


def as_arrow(data: Any) -> Any:
    """An in-memory data set (frame, Arrow table, records, 2-D array) as the pyarrow Table its
    fingerprint hashes: pandas' index and schema metadata left out."""
    import pandas as pd
    import pyarrow as pa

    from shipyard.core.signature import _to_frame

    frame = _to_frame(data, pd)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        found = re.search(r"column (\S+) with type", str(error))
        where = f"column {found.group(1)!r}" if found else "a column"
        raise InvalidInput(
            f"{where} cannot be stored as one typed column ({error.args[0] if error.args else error}); "
            "give each column one type (numbers, text, booleans or timestamps)"
        ) from None


def table_sha256(table: Any) -> str:
    """The SHA-256 of a pyarrow Table's Arrow IPC stream: the same values with the same column
    names and types give the same digest in any process."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _fingerprint_path(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InvalidInput(f"training data path {str(path)!r} does not exist")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return {"sha256": digest.hexdigest(), "files": len(files), "source": str(path.resolve())}
