"""The most any Python HTTP server can give the 100-record goal here: an empty server and a
bare one that only scores, beside the in-process floor, in one run.

    .venv/bin/python bench/serving/http_ceiling.py --root bench/.peers --rounds 3

For each model registered by `shipyard_setup.py` (`lr`, `lgbm`):

    floor          shipyard's loaded predictor on the 100 rows in-process (`predictor.predict`,
                   as `shipyard_floor.py` times it); the goal is 50 % of its rows/s
    empty          uvicorn (uvloop + httptools, 1 worker, as `shipyard server` runs) with a
                   raw ASGI app that reads the body and answers fixed bytes: HTTP alone
    bare-scoring   the same server, whose app parses the binary extension's inference header,
                   views the [100, k] FP64 tensor, calls the same predictor (one native thread,
                   as the server) and answers the scores as a binary output: no auth, limits,
                   routing, logging, metrics, ids or validation

Both servers get shipyard's own `bin_batch100` body with `wrk -t1 -c16` (the serving
benchmark's 100-record cell). The bare server's scores are checked against the predictor's
once before it is loaded. Writes `bench/results/raw/http_ceiling-<stamp>.json` and prints a
table; the Serving section of `bench/RESULTS.md` quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from harness import BENCH, DEFAULT_ROOT, module
from wrk_load import read_headers, wrk_once

PORT = 18499
floor = module("floor")


# -- the ASGI apps (run by uvicorn in a child process: `uvicorn http_ceiling:empty`) ----------


async def _body(receive: Any) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def empty(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await _body(receive)
    answer = b"\0" * 900  # about the size of 100 binary scores and their header
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(answer)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


_SCORING: dict[str, Any] = {}


def _predictor() -> tuple[Any, list[str]]:
    if not _SCORING:
        from shipyard import Registry, Settings
        from shipyard.app import limit_native_threads

        limit_native_threads(1)  # as `shipyard server` (SHIPYARD_PREDICT_THREADS default)
        settings = Settings(home=Path(os.environ["CEILING_HOME"]))
        name, version = os.environ["CEILING_MODEL"], int(os.environ["CEILING_VERSION"])
        with Registry.from_settings(settings) as registry:
            bundle = registry.open(name, version)
            names = registry.get_version(name, version).signature.names
        _SCORING.update(predictor=bundle.predictor, names=names)
    return _SCORING["predictor"], _SCORING["names"]


async def bare_scoring(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    predictor, names = _predictor()
    body = await _body(receive)
    length = int(dict(scope["headers"])[b"inference-header-content-length"])
    shape = orjson.loads(body[:length])["inputs"][0]["shape"]
    matrix = np.frombuffer(body, dtype="<f8", offset=length).reshape(shape)
    scores = predictor.predict({n: matrix[:, i] for i, n in enumerate(names)})[:, -1]
    values = np.ascontiguousarray(scores, dtype="<f8").tobytes()
    header = orjson.dumps({"outputs": [{"name": "score", "datatype": "FP64", "shape": [len(scores)],
                                        "parameters": {"binary_data_size": len(values)}}]})  # fmt: skip
    answer = header + values
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(header)).encode()),
        (b"content-length", str(len(answer)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


# -- the run ------------------------------------------------------------------------------------


def _serve(app: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    uvicorn = Path(sys.executable).with_name("uvicorn")
    p = subprocess.Popen(
        [str(uvicorn), f"http_ceiling:{app}", "--host", "127.0.0.1", "--port", str(PORT),
         "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
        cwd=Path(__file__).parent, env={**os.environ, **env},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return p
        except OSError:
            if p.poll() is not None:
                raise SystemExit(f"{app} exited with {p.returncode}") from None
            time.sleep(0.1)
    p.kill()
    raise SystemExit(f"{app} did not listen on {PORT} within 60 s")


def _post(body: bytes, headers: dict[str, str]) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return bytes(answer.read())


def measure(root: Path, model: str, info: dict[str, Any], rounds: int, duration: int,
            calls: int) -> dict[str, Any]:  # fmt: skip
    requests = root / "shipyard" / model / "requests"
    body_file, headers_file = requests / "bin_batch100.bin", requests / "bin_batch100.headers"
    env = {"CEILING_HOME": info["home"], "CEILING_MODEL": info["name"],
           "CEILING_VERSION": str(info["version"]), "OMP_NUM_THREADS": "1"}  # fmt: skip
    os.environ.update({k: v for k, v in env.items() if k.startswith("CEILING_")})
    _SCORING.clear()  # this model's predictor, in this process too
    predictor, names = _predictor()
    body = body_file.read_bytes()
    length = int(read_headers(headers_file)["Inference-Header-Content-Length"])
    shape = orjson.loads(body[:length])["inputs"][0]["shape"]
    matrix = np.frombuffer(body, dtype="<f8", offset=length).reshape(shape)
    columns = {n: matrix[:, i] for i, n in enumerate(names)}
    expected = predictor.predict(columns)[:, -1]
    out: dict[str, Any] = {"rows": shape[0], "floor": [], "empty": [], "bare-scoring": []}
    for _ in range(rounds):
        timed = floor.time_calls(lambda: predictor.predict(columns), calls)
        out["floor"].append(shape[0] / (timed["p50_us"] / 1e6))
        for app in ("empty", "bare-scoring"):
            p = _serve(app.replace("-", "_"), env)
            try:
                if app == "bare-scoring":
                    answer = _post(body, read_headers(headers_file))
                    head = len(answer) - 8 * shape[0]
                    got = np.frombuffer(answer, dtype="<f8", offset=head)
                    if not np.allclose(got, expected, rtol=0, atol=1e-12):
                        raise SystemExit(f"{model}: the bare server's scores differ")
                run = wrk_once(f"http://127.0.0.1:{PORT}/", str(body_file), 16, duration,
                               headers_files=[str(headers_file)], server_pid=p.pid)  # fmt: skip
                if run["non2xx"] or run["socket_errors"]:
                    raise SystemExit(f"{model} {app}: {run['non2xx']} non-2xx, errors {run['err_detail']}")  # fmt: skip
                out[app].append(run["rps"] * shape[0])
                out.setdefault(f"{app}-cpu-ms-per-req", []).append(run.get("server_cpu_ms_per_req"))  # fmt: skip
            finally:
                p.terminate()
                p.wait(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--calls", type=int, default=3000, help="floor calls per round")
    args = ap.parse_args()
    root = args.root.resolve()
    setup = json.loads((root / "shipyard" / "setup.json").read_text())
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                            text=True, cwd=BENCH).stdout.strip()  # fmt: skip
    result: dict[str, Any] = {"commit": commit, "cpus": os.cpu_count(),
                              "machine": platform.processor() or platform.machine(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "models": {}}  # fmt: skip
    for model in ("lr", "lgbm"):
        result["models"][model] = measure(
            root, model, setup[model], args.rounds, args.duration, args.calls
        )
    raw = BENCH / "results" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = raw / f"http_ceiling-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"{commit}; medians over {args.rounds} rounds; wrk -t1 -c16, 100-row binary body")
    print("| model | floor rows/s | goal (50 %) | empty server req/s | bare scoring server rows/s | bare / goal |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for model, m in result["models"].items():
        fl, em, bare = (statistics.median(m[k]) for k in ("floor", "empty", "bare-scoring"))
        print(f"| {model.upper()} | {fl:,.0f} | {fl / 2:,.0f} | {em / m['rows']:,.0f} | "
              f"{bare:,.0f} | {bare / (fl / 2):.0%} |")  # fmt: skip
    print(f"raw: {out}")


if __name__ == "__main__":
    main()
