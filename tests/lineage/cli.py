"""The `shipyard` command as users run it, for the lineage tests: a real process over `home`
(embedded state; the environment's database left out), wide enough that no line wraps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def shipyard(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIPYARD_HOME": str(home), "COLUMNS": "200"}
    env.pop("SHIPYARD_DATABASE_URL", None)
    env.pop("SHIPYARD_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
