"""Load-test a gRPC `inference.GRPCInferenceService` with h2load, checked with grpcio.

h2load (nghttp2) posts one fixed body over HTTP/2 (h2c, prior knowledge) on every request,
one request in flight per connection:

    h2load -c16 -m1 -t1 -D 10 -d body.bin -H 'content-type: application/grpc' \
        -H 'te: trailers' -H 'authorization: Bearer KEY' --log-file LOG \
        http://127.0.0.1:PORT/inference.GRPCInferenceService/ModelInfer

The body is one length-prefixed `ModelInferRequest` (`oip_bodies.grpc_body`). A gRPC error
comes back as HTTP 200 with trailers only (no DATA), so h2load counts it a success. Hence:

* before the load, `check_grpc` makes one real call with grpcio and checks the scores equal
  the JSON path's, and notes the answer's size on the wire (5 + message bytes; the answer is
  the same size every time: same outputs, fixed-length prediction ids);
* after the load, `h2load_scenario` compares h2load's received DATA bytes with 2xx responses
  x that size: every missing answer is a failed call, counted in `non2xx`, and more than 1 %
  of them (or more bytes than possible) fails the cell.

Latency percentiles come from h2load's `--log-file` (per request: start time in µs since the
epoch, HTTP status, µs to the end of the response); CPU from `wrk_load.CpuWindow`.
"""

from __future__ import annotations

import math
import re
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
from oip_bodies import grpc_message, grpc_scores
from wrk_load import SCORE_TOLERANCE, CpuWindow, Scenario, read_headers

__all__ = ["check_grpc", "h2load_scenario", "parse_h2load"]

MAX_FAILED_SHARE = 0.01
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_PATTERNS = {
    "finished": r"finished in ([\d.]+)(s|ms|us),",
    "requests": r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout",
    "status": r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx",
    "traffic": r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data",
}


def _address(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def _metadata(s: Scenario) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in read_headers(s.headers_files).items()]


def check_grpc(s: Scenario) -> dict[str, Any]:
    """One real `ModelInfer` call with grpcio with the scenario's body and metadata; raise
    unless its scores are the expected ones."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    request = grpc_message(Path(s.body).read_bytes())
    started = time.perf_counter()
    with grpc.insecure_channel(_address(s.url)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            response = stub.ModelInfer(request, metadata=_metadata(s), timeout=30)
        except grpc.RpcError as error:
            raise RuntimeError(f"{s.name}: gRPC {error.code()}: {error.details()}") from None
    out: dict[str, Any] = {
        "status": "OK",
        "ms": round((time.perf_counter() - started) * 1e3, 2),
        "response_bytes": 5 + response.ByteSize(),
        "outputs": [o.name for o in response.outputs],
    }
    if s.scores is not None:
        got = grpc_scores(response)
        if len(got) != len(s.scores):
            raise RuntimeError(f"{s.name}: {len(got)} scores in the answer, not {len(s.scores)}")
        out["max_score_diff"] = float(np.max(np.abs(got - np.asarray(s.scores))))
        if out["max_score_diff"] > SCORE_TOLERANCE:
            raise RuntimeError(f"{s.name}: scores differ from the JSON path's by {out}")
    return out


def _line(key: str, stdout: str) -> re.Match[str]:
    found = re.search(_PATTERNS[key], stdout)
    if found is None:
        raise RuntimeError(f"h2load printed no {key} line: {stdout[-2000:]}")
    return found


def parse_h2load(stdout: str) -> dict[str, int | float]:
    """h2load's summary lines as numbers."""
    fields = {
        "requests": ("total", "started", "done", "succeeded", "failed", "errored", "timeout"),
        "status": ("s2xx", "s3xx", "s4xx", "s5xx"),
        "traffic": ("bytes", "header_bytes", "data_bytes"),
    }
    out: dict[str, int | float] = {}
    for key, names in fields.items():
        out.update(zip(names, map(int, _line(key, stdout).groups()), strict=True))
    finished = _line("finished", stdout)
    out["seconds"] = float(finished.group(1)) * _UNITS[finished.group(2)]
    return out


def _latencies_us(log: Path) -> np.ndarray:
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    return np.array([int(r[2]) for r in rows], dtype=np.float64)


def h2load_scenario(
    s: Scenario, duration: int, server_pid: int | None, check: dict[str, Any]
) -> dict[str, Any]:
    """One h2load run of the scenario; raise when the answers' bytes show failed calls."""
    headers = {"content-type": "application/grpc", "te": "trailers", **dict(_metadata(s))}
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        cmd = ["h2load", f"-c{s.concurrency}", "-m1", "-t1", "-D", str(duration), "-d", s.body]
        cmd += [arg for k, v in headers.items() for arg in ("-H", f"{k}: {v}")]
        cmd += ["--log-file", str(log), s.url]
        with CpuWindow(server_pid) as cpu:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        if p.returncode != 0:
            raise RuntimeError(
                f"h2load failed rc={p.returncode}: {p.stdout[-2000:]} {p.stderr[-2000:]}"
            )
        h = parse_h2load(p.stdout)
        lat = _latencies_us(log) if log.exists() else np.array([])
    done, size = int(h["done"]), int(check["response_bytes"])
    ok = min(int(h["succeeded"]), int(h["s2xx"]))
    in_flight = int(h["started"]) - done
    data = int(h["data_bytes"])
    grpc_failed = max(0, math.ceil((ok * size - data) / size))
    if data > (ok + in_flight) * size or grpc_failed > MAX_FAILED_SHARE * max(done, 1):
        raise RuntimeError(
            f"{s.name} c={s.concurrency}: h2load received {data} DATA bytes for {ok} 2xx "
            f"responses of {size} bytes ({in_flight} in flight at the end): about {grpc_failed} "
            "calls answered with a gRPC error (trailers only) or answers of another size; "
            f"see the server's log. h2load: {p.stdout[-1200:]}"
        )
    if not done or not len(lat):
        raise RuntimeError(f"h2load completed no request: {p.stdout[-2000:]}")
    p50, p75, p90, p99, p999 = np.percentile(lat, [50, 75, 90, 99, 99.9]) / 1e3
    return {
        "concurrency": s.concurrency,
        "wrk_threads": 1,
        "duration_s": round(float(h["seconds"]), 3),
        "requests": done,
        "non2xx": (done - ok) + grpc_failed,
        "socket_errors": int(h["errored"]) + int(h["timeout"]),
        "err_detail": {
            "h2_failed": h["failed"],
            "h2_errored": h["errored"],
            "h2_timeout": h["timeout"],
            "status_4xx": h["s4xx"],
            "status_5xx": h["s5xx"],
            "grpc_failed": grpc_failed,
        },
        "rps": done / float(h["seconds"]),
        "p50_ms": float(p50),
        "p75_ms": float(p75),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "mean_ms": float(lat.mean() / 1e3),
        "max_ms": float(lat.max() / 1e3),
        **cpu.fields(done),
        "load_tool": "h2load",
        "grpc_response_bytes": size,
        "data_bytes": data,
        "latencies_logged": len(lat),
    }
