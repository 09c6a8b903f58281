"""Run the drift matrix: every tool:config x size x repeat in a fresh process under
`/usr/bin/time -v`, repeats interleaved (repeat loop outermost), as the harness's
`run_drift.py` does. One raw JSON per run goes to `--raw`.

    .venv/bin/python bench/drift/matrix.py --raw DIR --sizes 100k 1m --repeats 3 \
        [--only evidently:default shipyard:parquet ...] [--timeout 900] [--skip-existing]

Entries (default: all but the ones marked optional):
  evidently:default | evidently:ks_chi2 | evidently:psi   bench/drift/peer_run.py (the harness's
  floor:core  (floor:compat optional)                      bench_drift.py + CPU time), venv-drift
  shipyard:parquet  (shipyard:frames optional)             bench/drift/shipyard_run.py, .venv

Interpreters: `PY_DRIFT` (default $ROOT/venv-drift/bin/python, ROOT default bench/.peers),
`PY_SHIPYARD` (default <repo>/.venv/bin/python). Data: `--data` (default $ROOT/data/drift),
one folder per size made by the harness's gen_data.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import DEFAULT_ROOT, HARNESS, HERE, REPO, module, script

DEFAULT_MATRIX = [
    "evidently:default",
    "evidently:ks_chi2",
    "evidently:psi",
    "shipyard:parquet",
    "floor:core",
]
OPTIONAL = ["shipyard:frames", "floor:compat"]
PEER_VERSIONS = ("evidently", "pandas", "numpy", "scipy", "pyarrow")
SHIPYARD_VERSIONS = ("shipyard", "pandas", "numpy", "scipy", "pyarrow")


def interpreters() -> dict[str, str]:
    drift = os.environ.get("PY_DRIFT", str(DEFAULT_ROOT / "venv-drift" / "bin" / "python"))
    return {
        "evidently": drift,
        "floor": drift,
        "shipyard": os.environ.get("PY_SHIPYARD", str(REPO / ".venv" / "bin" / "python")),
    }


def versions(python: str, dists: tuple[str, ...]) -> dict[str, str | None]:
    code = (
        "import json, importlib.metadata as m\n"
        "def v(d):\n"
        "    try:\n"
        "        return m.version(d)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        f"print(json.dumps({{d: v(d) for d in {list(dists)!r}}}))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, str | None] = json.loads(out.stdout)
    return result


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+dirty src" if git("status", "--porcelain", "src") else "")


def command(entry: str, data: Path, out: Path, py: dict[str, str]) -> list[str]:
    tool, config = entry.split(":")
    if tool == "shipyard":
        runner = [py["shipyard"], str(HERE / "shipyard_run.py"), "--config", config]
    else:
        script("bench_drift.py")  # exits unless the harness is there
        runner = [py[tool], str(HERE / "peer_run.py"), "--tool", tool, "--config", config]
    return ["/usr/bin/time", "-v", *runner, "--data", str(data), "--out", str(out)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--raw", required=True, type=Path, help="folder for the per-run JSON")
    ap.add_argument("--data", type=Path, default=DEFAULT_ROOT / "data" / "drift")
    ap.add_argument("--sizes", nargs="+", default=["100k", "1m"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="+", default=None, help="tool:config entries")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per run")
    ap.add_argument("--skip-existing", action="store_true", help="keep runs whose JSON has rc 0")
    a = ap.parse_args()
    entries = a.only or DEFAULT_MATRIX
    unknown = [e for e in entries if e not in DEFAULT_MATRIX + OPTIONAL]
    if unknown:
        ap.error(f"unknown entries {unknown}; known: {DEFAULT_MATRIX + OPTIONAL}")
    py = interpreters()
    for tool in {e.split(":")[0] for e in entries}:
        if not Path(py[tool]).exists():
            sys.exit(f"no interpreter for {tool} at {py[tool]} (run bench/drift/run.sh once)")
    for size in a.sizes:
        if not (a.data / size / "columns.json").is_file():
            sys.exit(f"no data at {a.data / size}: run the harness's gen_data.py (run.sh does)")
    parse_time_v = module("run_drift").parse_time_v
    env = {**os.environ, "DRIFT_HARNESS": str(HARNESS)}
    a.raw.mkdir(parents=True, exist_ok=True)

    run_info_path = a.raw / "run.json"
    run_info: dict[str, Any] = (
        json.loads(run_info_path.read_text()) if run_info_path.exists() else {"invocations": []}
    )
    run_info.setdefault(
        "versions",
        {
            "drift_venv": versions(py["evidently"], PEER_VERSIONS),
            "shipyard_venv": versions(py["shipyard"], SHIPYARD_VERSIONS),
        },
    )
    run_info["shipyard_commit"] = git_commit()
    run_info["cpus"] = os.cpu_count()
    run_info["invocations"].append(
        {
            "argv": sys.argv[1:],
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "interpreters": py,
            "data": str(a.data),
        }
    )
    run_info_path.write_text(json.dumps(run_info, indent=1))

    failed = 0
    for rep in range(1, a.repeats + 1):
        for size in a.sizes:
            for entry in entries:
                tool, config = entry.split(":")
                tag = f"{size}_{tool}_{config}_r{rep}"
                res_path = a.raw / f"{tag}.json"
                done = res_path.exists() and json.loads(res_path.read_text()).get("rc") == 0
                if a.skip_existing and done:
                    continue
                cmd = command(entry, a.data / size, res_path, py)
                load = os.getloadavg()
                started = time.time()
                try:
                    p = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=a.timeout, env=env
                    )
                    rc: int | str = p.returncode
                    err = p.stderr
                except subprocess.TimeoutExpired as ex:
                    rc = "timeout"
                    raw_err = ex.stderr or b""
                    err = raw_err.decode() if isinstance(raw_err, bytes) else raw_err
                tv = parse_time_v(err)
                res: dict[str, Any] = {}
                if rc == 0 and res_path.exists():
                    res = json.loads(res_path.read_text())
                res.update(
                    {
                        "tag": tag,
                        "size": size,
                        "tool": tool,
                        "config": config,
                        "repeat": rep,
                        "rc": rc,
                        "time_v": tv,
                        "loadavg_before": load,
                        "loadavg_after": os.getloadavg(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                        "command": cmd,
                    }
                )
                if rc != 0:
                    failed += 1
                    res["stderr_tail"] = err[-3000:]
                res_path.write_text(json.dumps(res, indent=1, default=str))
                compute = res.get("phases", {}).get("compute", float("nan"))
                print(
                    f"{tag:34s} rc={rc} wall={tv['wall_s']} compute={compute:.2f} "
                    f"rss={tv['maxrss_mb']:.0f}MB load={load[0]:.2f} drifted={res.get('drifted')}",
                    flush=True,
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
