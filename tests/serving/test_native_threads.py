"""A serving process gives native libraries (OpenMP, BLAS) the threads it is told: one per
model call by default. With a thread per core, a 10-row call on a busy 2-core machine took up
to 1 s instead of 150 ms (OpenMP's threads spinning against the other work), and answered 504."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json
from shipyard.app import factory
factory()  # what uvicorn calls in every worker, before any model loads
from sklearn.ensemble import HistGradientBoostingClassifier  # loads scikit-learn's OpenMP
from threadpoolctl import threadpool_info
print(json.dumps(sorted({(i["user_api"], i["num_threads"]) for i in threadpool_info()})))
"""


@pytest.mark.parametrize(("setting", "threads"), [(None, 1), ("2", 2)])
def test_a_serving_process_gives_native_libraries_the_threads_it_is_told(
    tmp_path: Path, setting: str | None, threads: int
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env = {k: v for k, v in env.items() if not k.startswith("SHIPYARD_")}
    env["SHIPYARD_HOME"] = str(tmp_path)
    if setting is not None:
        env["SHIPYARD_PREDICT_THREADS"] = setting
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert {api for api, _ in found} == {"blas", "openmp"}
    assert all(n == threads for _, n in found), found
