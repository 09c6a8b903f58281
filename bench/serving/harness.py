"""Where the shared serving harness lives, and its modules imported from there.

The peers (MLflow, BentoML, the FastAPI reference), the data and model script, the
in-process floor and the /proc CPU readers are the shared harness's own files, used as they
are (its README invites reuse): `SERVING_HARNESS` points at it, default
`<repo>/../shared/bench/serving`.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["BENCH", "DEFAULT_ROOT", "HARNESS", "REPO", "features", "module"]

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
REPO = BENCH.parent
HARNESS = Path(
    os.environ.get("SERVING_HARNESS", REPO.parent / "shared" / "bench" / "serving")
).resolve()
DEFAULT_ROOT = Path(os.environ.get("ROOT", BENCH / ".peers")).resolve()


def module(name: str) -> ModuleType:
    """Import the harness module `name` (`run`, `peers`, `floor`, `features`)."""
    if not (HARNESS / f"{name}.py").is_file():
        sys.exit(
            f"the shared serving harness is not at {HARNESS} (no {name}.py); "
            "set SERVING_HARNESS to its folder"
        )
    if str(HARNESS) not in sys.path:
        sys.path.append(str(HARNESS))
    return importlib.import_module(name)


def features() -> list[str]:
    """The 30 feature names, in the harness's order."""
    names: list[str] = module("features").FEATURES
    return names
