"""What an explanation costs over HTTP, on the serving bench's 100-tree LightGBM.

    .venv/bin/python bench/explain/run.py [--requests 400] [--rounds 5] [--base REV]

The serving harness's data and model (`../shared/bench/serving/make_data_train.py`: 200k rows,
30 features, `LGBMClassifier(n_estimators=100, num_leaves=31)`, trained on its 80% split) is
registered in a fresh home, deployed, and served by `shipyard server` (one worker, auth on,
the prediction log on: the defaults). One client on the same machine sends the harness's
record, one request at a time over a kept-alive connection, in rounds that alternate

    plain      {"instances": [record]}
    explained  {"instances": [record], "explain": true}

and the same plain requests to the code before explanations existed (`--base`, default the
commit that added them, in a git worktree: a request that does not ask must pay nothing).
Each figure is the median over the rounds of a round's p50 / p99 latency, and the server's
CPU time per request (`/proc/PID/stat`). In-process, for scale: LightGBM's own TreeSHAP
(`pred_contrib`) and `shap.TreeExplainer` on the same row, the library a peer (KServe's and
Seldon's explainers, Alibi) would call.

Writes `bench/explain/results/<git describe>.json` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(os.environ.get("SERVING_HARNESS", ROOT.parent / "shared" / "bench" / "serving"))
SEED = 20261125


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def train(folder: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The harness's LightGBM (joblib), a 1,000-row sample (parquet) and its record."""
    import joblib
    import lightgbm as lgb
    from sklearn.model_selection import train_test_split

    sys.path.insert(0, str(HARNESS))
    from make_data_train import make_data  # type: ignore[import-not-found]

    X, y = make_data()
    X_tr, _, y_tr, _ = train_test_split(X, y, test_size=0.2, random_state=SEED, stratify=y)
    model = lgb.LGBMClassifier(n_estimators=100, num_leaves=31, random_state=SEED, verbose=-1)
    model.fit(X_tr, y_tr)
    joblib.dump(model, folder / "lgbm.joblib")
    X_tr.iloc[:1000].to_parquet(folder / "sample.parquet")
    record = {k: float(v) for k, v in X_tr.iloc[0].items()}
    return folder / "lgbm.joblib", folder / "sample.parquet", record


SETUP = """
import json, sys
import joblib, pandas as pd
from shipyard import Registry, Settings
from shipyard.access import KeyStore
home, model, sample = sys.argv[1:4]
with Registry.from_settings(Settings(home=home, auto_migrate=True, actor="bench")) as registry:
    v = registry.register(joblib.load(model), name="fraud-lgbm", sample=pd.read_parquet(sample))
    registry.deploy("fraud-lgbm", v.version)
    token = KeyStore(registry.database).create("predict", name="bench", rate_per_second=1e6)[1]
print(json.dumps({"token": token, "runtime": v.runtime}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`shipyard server` (one worker) from `src` (a checkout's source), on a fresh home."""

    def __init__(self, src: Path, model: Path, sample: Path, home: Path) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(src), "SHIPYARD_HOME": str(home)}
        self.env.pop("SHIPYARD_DATABASE_URL", None)
        setup = subprocess.run(
            [sys.executable, "-c", SETUP, str(home), str(model), str(sample)],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        found = json.loads(setup.stdout.strip().splitlines()[-1])
        self.token, self.runtime = found["token"], found["runtime"]
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shipyard", "server", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit(f"the server from {src} did not become ready")
        self.pids = self._pids()

    def _pids(self) -> list[int]:
        """The supervisor and its worker(s): their CPU time is what serving costs."""
        out = subprocess.run(
            ["pgrep", "-s", str(os.getpgid(self.process.pid))], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def measure(server: Server, body: dict[str, Any], requests: int) -> dict[str, float]:
    payload = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    path = "/v1/models/fraud-lgbm/predict"
    latencies = []
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as client:
        for _ in range(20):  # warm: the explainer is built on the first request that asks
            assert client.post(path, content=payload).status_code == 200
        cpu = server.cpu_seconds()
        for _ in range(requests):
            started = time.perf_counter()
            response = client.post(path, content=payload)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        cpu = server.cpu_seconds() - cpu
    ms = np.array(latencies) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "cpu_ms": cpu * 1e3 / requests,
    }


def in_process(model_path: Path, record: dict[str, Any]) -> dict[str, float]:
    import joblib
    import pandas as pd
    import shap

    model = joblib.load(model_path)
    booster = model.booster_
    x = pd.DataFrame([record]).to_numpy()
    tree = shap.TreeExplainer(model)

    def timed(call: Any, n: int = 300) -> float:
        call()
        started = time.perf_counter()
        for _ in range(n):
            call()
        return (time.perf_counter() - started) / n * 1e3

    return {
        "predict_ms": timed(lambda: booster.predict(x, num_threads=1)),
        "lightgbm_pred_contrib_ms": timed(
            lambda: booster.predict(x, pred_contrib=True, num_threads=1)
        ),
        "shap_tree_explainer_ms": timed(lambda: tree.shap_values(x)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per kind per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument(
        "--base", default=None, help="the code before explanations (a git revision)"
    )
    args = parser.parse_args()
    described = git("describe", "--always", "--dirty")
    base = args.base or git(
        "log", "--format=%H", "-1", "--", "src/shipyard/explain/_explainers.py", "--diff-filter=A"
    )
    base = git("rev-parse", f"{base}^") if args.base is None else git("rev-parse", base)

    with tempfile.TemporaryDirectory(prefix="shipyard-explain-bench-") as scratch:
        work = Path(scratch)
        model, sample, record = train(work)
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(work / "base"), base],
            cwd=ROOT,
            check=True,
        )
        try:
            now = Server(ROOT / "src", model, sample, work / "home-now")
            before = Server(work / "base" / "src", model, sample, work / "home-base")
            try:
                kinds = {
                    "plain": (now, {"instances": [record]}),
                    "explained": (now, {"instances": [record], "explain": True}),
                    "plain, before explanations": (before, {"instances": [record]}),
                }
                rounds: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
                order = list(kinds)
                for i in range(args.rounds):  # each round starts with the next kind: no order wins
                    for kind in order[i % len(order) :] + order[: i % len(order)]:
                        server, body = kinds[kind]
                        rounds[kind].append(measure(server, body, args.requests))
                runtime = now.runtime
            finally:
                now.stop()
                before.stop()
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(work / "base")], cwd=ROOT, check=True
            )
        library = in_process(model, record)

    summary = {
        kind: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for kind, rs in rounds.items()
    }

    # paired by round: each round's difference, then the median and the spread of those
    def paired(a: str, b: str) -> dict[str, float]:
        diffs = [x["p50_ms"] - y["p50_ms"] for x, y in zip(rounds[a], rounds[b], strict=True)]
        return {"median": statistics.median(diffs), "min": min(diffs), "max": max(diffs)}

    added = paired("explained", "plain")["median"]
    result = {
        "code": described,
        "base": git("describe", "--always", base),
        "model": "LGBMClassifier(n_estimators=100, num_leaves=31), the serving harness's",
        "runtime": runtime,
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "summary": summary,
        "explain_adds_p50_ms": paired("explained", "plain"),
        "plain_vs_before_p50_ms": paired("plain", "plain, before explanations"),
        "in_process": library,
        "raw": rounds,
    }
    out = ROOT / "bench" / "explain" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{described}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"code {described}, base {result['base']}, served on {runtime}; median of {args.rounds} rounds of {args.requests} requests\n"
    )
    print("| request | p50 | p99 | server CPU per request |")
    print("|---|---|---|---|")
    for kind, row in summary.items():
        print(
            f"| {kind} | {row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms | {row['cpu_ms']:.2f} ms |"
        )
    before = result["plain_vs_before_p50_ms"]
    print(
        f"\nexplaining adds {added:.2f} ms at p50 (median of the rounds' differences); plain "
        f"requests now vs before: {before['median']:+.3f} ms (rounds from {before['min']:+.3f} "
        f"to {before['max']:+.3f})"
    )
    print(
        f"in-process, one row: predict {library['predict_ms']:.3f} ms, LightGBM pred_contrib "
        f"{library['lightgbm_pred_contrib_ms']:.3f} ms, shap.TreeExplainer {library['shap_tree_explainer_ms']:.3f} ms"
    )


if __name__ == "__main__":
    main()
