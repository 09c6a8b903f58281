"""Where the shared drift harness lives, and its modules imported from there.

The data generator (`gen_data.py`), the one-run script for Evidently and the numpy/scipy
floor (`bench_drift.py`, `floor.py`) and the `/usr/bin/time -v` parser (`run_drift.py`) are
the shared harness's own files, used as they are: `DRIFT_HARNESS` points at it, default
`<repo>/../shared/bench/drift`.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["BENCH", "DEFAULT_ROOT", "HARNESS", "REPO", "module", "script"]

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
HARNESS = Path(
    os.environ.get("DRIFT_HARNESS", REPO.parent / "shared" / "bench" / "drift")
).resolve()
DEFAULT_ROOT = Path(os.environ.get("ROOT", BENCH / ".peers")).resolve()


def script(name: str) -> Path:
    """The path of the harness file `name` (e.g. `bench_drift.py`); exits if it is missing."""
    path = HARNESS / name
    if not path.is_file():
        sys.exit(
            f"the shared drift harness is not at {HARNESS} (no {name}); "
            "set DRIFT_HARNESS to its folder"
        )
    return path


def module(name: str) -> ModuleType:
    """Import the harness module `name` (`run_drift`, `floor`, `gen_data`)."""
    script(f"{name}.py")
    if str(HARNESS) not in sys.path:
        sys.path.append(str(HARNESS))
    return importlib.import_module(name)
