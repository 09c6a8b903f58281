"""Medians, ratios and goals from a serving run: `bench/results/serving_summary.json` and the
"Serving" section of `bench/RESULTS.md` (the rest of that file is left as it is).

    .venv/bin/python bench/serving/report.py --serving bench/results/raw/serving-<stamp>.jsonl \
        --floor bench/results/raw/floor-<stamp>.json \
        --shipyard-floor bench/results/raw/shipyard_floor-<stamp>.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import BENCH

ORDER = [
    "shipyard-1w", "shipyard-2w", "shipyard-1w-bin", "shipyard-2w-bin", "shipyard-1w-grpc",
    "shipyard-2w-grpc", "mlflow-1w", "mlflow-2w", "bento-default", "bento-batching",
    "fastapi-plain-1w", "fastapi-1w", "fastapi-2w",
]  # fmt: skip
# the 100-row scenarios whose rows/s the floor goal judges, per transport, and how to say them
FLOOR_SCENARIOS = {
    "http-json": [("batch100", "")],
    "http-binary": [("batch100", " ([100, k] tensor)"), ("columns100", " (tensor per column)")],
    "grpc": [("batch100", " ([100, k] tensor)")],
}
TRANSPORT_WORDS = {
    "http-json": "HTTP, JSON",
    "http-binary": "HTTP, binary tensors",
    "grpc": "gRPC",
}
BASELINES = ("mlflow-1w", "fastapi-1w", "fastapi-2w")
BEGIN, END = "<!-- serving:begin -->", "<!-- serving:end -->"
GOAL_VS_MLFLOW = 20.0
GOAL_VS_FASTAPI = 1.5
GOAL_FLOOR_SHARE = 0.5


def median(values: list[Any]) -> float | None:
    xs = [x for x in values if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, nd: int = 1) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def load_lines(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def scenarios(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """Medians over repeats per (target, model, scenario, concurrency)."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["target"], r["model"], r["scenario"], r["concurrency"])].append(r)
    out = {}
    for key, rs in groups.items():
        rps = [r["rps"] for r in rs]
        out[key] = {
            "n": len(rs),
            "transport": rs[0].get("transport", "http-json"),
            "request_layout": rs[0].get("request_layout", "records"),
            "rps": median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "rows_per_s": median([r["rows_per_s"] for r in rs]),
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p90_ms": median([r["p90_ms"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "server_cpu_ms_per_req": median([r.get("server_cpu_ms_per_req") for r in rs]),
            "server_cores": median([r.get("server_cores") for r in rs]),
            "other_cores": median([r["other_cores"] for r in rs]),
            "errors": sum(r["non2xx"] + r["socket_errors"] for r in rs),
            "server_rss_mb": median([r.get("server_rss_mb") for r in rs]),
            "startup_s": median([r.get("startup_s") for r in rs]),
        }
    return out


def headline(scen: dict[tuple[str, str, str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, str], dict[Any, dict[str, Any]]] = defaultdict(dict)
    for (t, m, sc, c), s in scen.items():
        cells[(t, m)][(sc, c)] = s

    def get(d: dict[Any, dict[str, Any]], sc: str, c: int, field: str) -> float | None:
        s = d.get((sc, c))
        return s[field] if s else None

    rows = []
    for (t, m), d in cells.items():
        batch = next((s for (sc, _), s in d.items() if sc.startswith("batch")), None)
        columns = next((s for (sc, _), s in d.items() if sc == "columns100"), None)
        rows.append(
            {
                "target": t,
                "model": m,
                "transport": next(iter(d.values()))["transport"],
                "c1_p50_ms": get(d, "single", 1, "p50_ms"),
                "c1_rps": get(d, "single", 1, "rps"),
                "c16_rps": get(d, "single", 16, "rps"),
                "c16_p99_ms": get(d, "single", 16, "p99_ms"),
                "c64_rps": get(d, "single", 64, "rps"),
                "c64_rps_min": get(d, "single", 64, "rps_min"),
                "c64_rps_max": get(d, "single", 64, "rps_max"),
                "c64_p99_ms": get(d, "single", 64, "p99_ms"),
                "batch100_rows_per_s": batch["rows_per_s"] if batch else None,
                "batch100_p99_ms": batch["p99_ms"] if batch else None,
                "batch100_cpu_ms_per_req": batch["server_cpu_ms_per_req"] if batch else None,
                "columns100_rows_per_s": columns["rows_per_s"] if columns else None,
                "columns100_cpu_ms_per_req": columns["server_cpu_ms_per_req"] if columns else None,
                "cpu_ms_per_req_c16": get(d, "single", 16, "server_cpu_ms_per_req"),
                "cpu_ms_per_req_c64": get(d, "single", 64, "server_cpu_ms_per_req"),
                "server_cores_c64": get(d, "single", 64, "server_cores"),
                "errors": sum(s["errors"] for s in d.values()),
                "repeats": max(s["n"] for s in d.values()),
                "rss_mb": get(d, "single", 16, "server_rss_mb"),
                "startup_s": next(iter(d.values()))["startup_s"],
            }
        )
    by = {(r["target"], r["model"]): r for r in rows}
    for r in rows:
        for base in BASELINES:
            other = by.get((base, r["model"]))
            r[f"c64_vs_{base}"] = ratio(r["c64_rps"], other["c64_rps"] if other else None)
    rank = {t: i for i, t in enumerate(ORDER)}
    rows.sort(key=lambda r: (r["model"] != "lr", r["model"], rank.get(r["target"], 99)))
    return rows


def floors(harness_floor: dict[str, Any] | None, own: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if own:
        out["shipyard"] = own["median_over_rounds"]
        out["shipyard_runtimes"] = own.get("runtimes", {})
    if harness_floor:
        out["harness"] = harness_floor["median_over_rounds"]
        out["harness_versions"] = harness_floor.get("versions", {})
    return out


def goals(rows: list[dict[str, Any]], floor: dict[str, Any]) -> list[dict[str, Any]]:
    """Each product goal for each shipyard target and model: met, not met, or not measured."""
    by = {(r["target"], r["model"]): r for r in rows}
    out = []

    def add(
        target: str, model: str, goal: str, value: float | None, need: float | None, lower: bool
    ) -> None:
        met = None
        if value is not None and need is not None:
            met = value < need if lower else value >= need
        better = "lower" if lower else "higher"
        out.append({"target": target, "model": model, "goal": goal, "value": value, "need": need,
                    "better": better, "met": met})  # fmt: skip

    for (target, model), r in sorted(by.items()):
        if not target.startswith("shipyard"):
            continue
        workers = target.split("-")[1]
        own = floor.get("shipyard", {}).get(f"{model}/shipyard-predictor/100rows")
        need = own["rows_per_s"] * GOAL_FLOOR_SHARE if own else None
        if r["transport"] != "http-json":
            # the peer goals compare JSON APIs; the new transports are judged on the floor only
            for scenario, words in FLOOR_SCENARIOS.get(r["transport"], []):
                add(target, model, f"100-row rows/s{words} >= {GOAL_FLOOR_SHARE:.0%} of the floor",
                    r[f"{scenario}_rows_per_s"], need, lower=False)  # fmt: skip
            continue
        mlflow = by.get(("mlflow-1w", model), {}).get("c64_rps")
        add(target, model, f"c=64 req/s >= {GOAL_VS_MLFLOW:g}x mlflow-1w", r["c64_rps"],
            mlflow * GOAL_VS_MLFLOW if mlflow else None, lower=False)  # fmt: skip
        fast = by.get((f"fastapi-{workers}", model), {}).get("c64_rps")
        add(target, model, f"c=64 req/s >= {GOAL_VS_FASTAPI:g}x fastapi-{workers}", r["c64_rps"],
            fast * GOAL_VS_FASTAPI if fast else None, lower=False)  # fmt: skip
        peer_p99 = [
            p["c64_p99_ms"] for (t, m), p in by.items()
            if m == model and not t.startswith("shipyard") and p["c64_p99_ms"] is not None
        ]  # fmt: skip
        add(target, model, "c=64 p99 below every peer's", r["c64_p99_ms"],
            min(peer_p99) if peer_p99 else None, lower=True)  # fmt: skip
        add(target, model, f"100-row rows/s >= {GOAL_FLOOR_SHARE:.0%} of the floor",
            r["batch100_rows_per_s"], need, lower=False)  # fmt: skip
    return out


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model}


def headline_table(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "| target | model | c=1 p50 ms | c=1 req/s | c=16 req/s | c=64 req/s (min-max) | "
        "c=64 p99 ms | 100-row rows/s (c=16) | server CPU ms/req (c=16) | c=64 vs mlflow-1w | "
        "vs fastapi-1w | vs fastapi-2w | errors |",
        "|" + "---|" * 13,
    ]
    for r in rows:
        spread = ""
        if r["repeats"] > 1 and r["c64_rps"] is not None:
            spread = f" ({fmt(r['c64_rps_min'], 0)}-{fmt(r['c64_rps_max'], 0)})"
        cells = [
            f"**{r['target']}**" if r["target"].startswith("shipyard") else r["target"],
            r["model"].upper(),
            fmt(r["c1_p50_ms"], 2),
            fmt(r["c1_rps"], 0),
            fmt(r["c16_rps"], 0),
            fmt(r["c64_rps"], 0) + spread,
            fmt(r["c64_p99_ms"], 1),
            fmt(r["batch100_rows_per_s"], 0),
            fmt(r["cpu_ms_per_req_c16"], 2),
        ]
        cells += [
            fmt(r[f"c64_vs_{b}"], 2) + "x" if r[f"c64_vs_{b}"] is not None else "n/a"
            for b in BASELINES
        ]
        cells.append(str(r["errors"]))
        out.append("| " + " | ".join(cells) + " |")
    return out


def transport_table(rows: list[dict[str, Any]]) -> list[str]:
    """shipyard over each transport, beside its JSON row with the same workers."""
    by = {(r["target"], r["model"]): r for r in rows}
    out = [
        "| target | model | transport | c=1 p50 ms | c=16 req/s | c=64 req/s | c=64 p99 ms | "
        "server CPU ms/req (c=16) | 100-row rows/s, [100, k] tensor (JSON: records) | "
        "100-row rows/s, tensor per column | server CPU ms/100-row req | c=64 req/s vs JSON | "
        "100-row rows/s vs JSON | errors |",
        "|" + "---|" * 14,
    ]
    for model in ("lr", "lgbm"):
        for workers in ("1w", "2w"):
            base = by.get((f"shipyard-{workers}", model))
            for suffix in ("", "-bin", "-grpc"):
                r = by.get((f"shipyard-{workers}{suffix}", model))
                if r is None:
                    continue
                vs_c64 = ratio(r["c64_rps"], base["c64_rps"]) if base and suffix else None
                vs_100 = (
                    ratio(r["batch100_rows_per_s"], base["batch100_rows_per_s"])
                    if base and suffix
                    else None
                )
                cells = [
                    f"**{r['target']}**",
                    model.upper(),
                    TRANSPORT_WORDS.get(r["transport"], r["transport"]),
                    fmt(r["c1_p50_ms"], 2),
                    fmt(r["c16_rps"], 0),
                    fmt(r["c64_rps"], 0),
                    fmt(r["c64_p99_ms"], 1),
                    fmt(r["cpu_ms_per_req_c16"], 2),
                    fmt(r["batch100_rows_per_s"], 0),
                    fmt(r["columns100_rows_per_s"], 0) if r["columns100_rows_per_s"] else "-",
                    fmt(r["batch100_cpu_ms_per_req"], 2),
                    f"{fmt(vs_c64, 2)}x" if vs_c64 is not None else "-",
                    f"{fmt(vs_100, 2)}x" if vs_100 is not None else "-",
                    str(r["errors"]),
                ]
                out.append("| " + " | ".join(cells) + " |")
    return out


TRANSPORT_TEXT = [
    "What each row is (same `shipyard server` and defaults as the JSON rows: auth on, "
    "prediction logging on, micro-batching on; the same record and 100 records):",
    "",
    "* `shipyard-1w`, `shipyard-2w`: the JSON rows of the table above, repeated for comparison "
    '(`POST /v1/models/fraud-<model>/predict`, `{"instances": [...]}`).',
    "* `shipyard-1w-bin`, `shipyard-2w-bin` (HTTP, binary tensors): "
    "`POST /v2/models/fraud-<model>/infer` with the Open Inference Protocol's binary tensor "
    "extension: the body is a JSON inference header followed by the raw little-endian FP64 "
    "values, sent with `Content-Type: application/octet-stream` and "
    "`Inference-Header-Content-Length`; every output is asked for in binary "
    "(`binary_data_output`, as `tritonclient.http` does). The single record is one [1, k] tensor "
    "whose k columns are the model's inputs in signature order; the 100-row column is one "
    "[100, k] tensor; the per-column column sends the same 100 records as k tensors of shape "
    "[100], one per input. Loaded with wrk like the JSON rows.",
    "* `shipyard-1w-grpc`, `shipyard-2w-grpc` (gRPC): the server started with `--grpc-port`, "
    "`inference.GRPCInferenceService/ModelInfer` with the record(s) as one [n, k] FP64 tensor in "
    "`raw_input_contents`, loaded with h2load (`-cN -m1 -t1`: N HTTP/2 connections, one call in "
    "flight on each; with 2 workers the connections spread over both by SO_REUSEPORT). Latency "
    "from h2load's per-request log. gRPC errors arrive as HTTP 200 with trailers only, so each "
    "cell first makes one real call (grpcio) and checks its scores against the JSON path's, and "
    "after each run h2load's received DATA bytes must equal the calls x the answer's size "
    "(a shortfall counts as errors; over 1 % fails the cell).",
    "",
    "Every binary and gRPC body is checked once per cell: its scores equal the JSON path's. "
    "Ratios are over the JSON row with the same number of workers.",
]


def floor_table(floor: dict[str, Any]) -> list[str]:
    own = floor.get("shipyard", {})
    peer = floor.get("harness", {})
    runtimes = floor.get("shipyard_runtimes", {})
    out = [
        "| model | path | 1 row p50 µs | 1 row CPU µs/call | 100 rows p50 µs | "
        "100 rows: rows/s | 10k rows: rows/s |",
        "|" + "---|" * 7,
    ]
    for model in ("lr", "lgbm"):
        for path in ("predictor", "validate+predict", "json+validate+predict"):
            one = own.get(f"{model}/shipyard-{path}/1row")
            hundred = own.get(f"{model}/shipyard-{path}/100rows")
            if not one:
                continue
            label = f"shipyard {path}" + (
                f" ({runtimes.get(model, '?')})" if path == "predictor" else ""
            )
            out.append(
                f"| {model.upper()} | {label} | {fmt(one['p50_us'])} | "
                f"{fmt(one['cpu_us_per_call'])} | {fmt(hundred['p50_us'])} | "
                f"{fmt(hundred['rows_per_s'], 0)} | n/a |"
            )
        for path, label in (
            ("sklearn-numpy", "sklearn `predict_proba`, numpy (harness)"),
            ("sklearn-pandas", "sklearn `predict_proba`, DataFrame (harness)"),
            ("mlflow-pyfunc", "MLflow pyfunc `predict` (harness)"),
            ("onnxruntime", "onnxruntime, float32 (harness)"),
        ):
            one = peer.get(f"{model}/{path}/1row")
            big = peer.get(f"{model}/{path}/10k")
            if not one:
                continue
            big_rows = fmt(big["rows_per_s"], 0) if big else "n/a"
            out.append(
                f"| {model.upper()} | {label} | {fmt(one['p50_us'])} | "
                f"{fmt(one['cpu_us_per_call'])} | n/a | n/a | {big_rows} |"
            )
    return out


def goal_lines(items: list[dict[str, Any]]) -> list[str]:
    out = ["| target | model | goal | measured | needed | met? |", "|" + "---|" * 6]
    for g in items:
        lower = g["better"] == "lower"
        unit = " ms" if lower else ""
        verdict = {True: "**met**", False: "**not met**", None: "not measured"}[g["met"]]
        need = g["need"]
        need_text = ("< " if lower else "≥ ") + fmt(need, 1) + unit if need is not None else "n/a"
        value = fmt(g["value"], 1) + (unit if g["value"] is not None else "")
        out.append(
            f"| {g['target']} | {g['model'].upper()} | {g['goal']} | {value} | {need_text} | "
            f"{verdict} |"
        )
    return out


def transport_section(rows: list[dict[str, Any]]) -> list[str]:
    if not any(r["transport"] != "http-json" for r in rows if r["target"].startswith("shipyard")):
        return []
    return [
        "### shipyard over binary tensors and gRPC",
        "",
        *TRANSPORT_TEXT,
        "",
        *transport_table(rows),
        "",
    ]


def section(summary: dict[str, Any]) -> str:
    run = summary["run"]
    args = run.get("args", {})
    smoke = summary["smoke"]
    lines = [BEGIN, "## Serving", ""]
    if smoke:
        lines += [
            f"> **SMOKE RUN** ({args.get('duration', '?')} s per cell, {args.get('rounds', '?')} "
            "round(s), a subset of targets): it proves the pipeline works, the numbers are not "
            "results. Run `bash bench/serving/run.sh` for the real benchmark.",
            "",
        ]
    lines += [
        f"Run {run.get('started', '?')} to {run.get('finished', '?')}; "
        f"{summary['machine']['cpus']} CPUs ({summary['machine']['cpu_model']}); "
        f"versions {json.dumps(run.get('versions', {}))}. "
        f"Busy cores of *other* programs during the wrk runs: median "
        f"{fmt(summary['other_cores']['median'], 2)}, max {fmt(summary['other_cores']['max'], 2)}.",
        "",
        "Method: the shared harness's (`../shared/bench/serving/README.md`): every server on "
        f"127.0.0.1, started afresh per round (round order rotated), {args.get('warmup', '3')} s "
        f"warm-up, `wrk -t1 -cN -d{args.get('duration', '10')}s`; single-record requests at "
        f"c={args.get('concurrency', '1,16,64')} and 100-record requests at "
        f"c={args.get('batch_concurrency', '16')}; the same record and 100 records in each "
        "server's format; "
        f"medians over {args.get('rounds', '?')} round(s). shipyard: `shipyard server "
        "[--workers 2]`, models registered with `Registry.register` and deployed, auth on "
        "(`Authorization: Bearer`, a predict key with a 1e6/s limit), prediction logging on, "
        '`POST /v1/models/fraud-<model>/predict` with `{"instances": [...]}`. Ratios are c=64 '
        "req/s over the baseline's. Server CPU ms/req: CPU of the server's process tree per "
        "request at c=16 (the least noise-sensitive column). Rows `shipyard-*-bin` and "
        "`shipyard-*-grpc` are the same shipyard servers over the binary tensor extension and "
        "gRPC (see below); the peers answer JSON.",
        "",
        *headline_table(summary["headline"]),
        "",
        *transport_section(summary["headline"]),
        "### Goals",
        "",
        *goal_lines(summary["goals"]),
        "",
        "The floor goal compares 100-record requests over HTTP (or gRPC) with shipyard's loaded "
        "predictor scoring the same 100 rows in-process (`shipyard-predictor/100rows` below), "
        "for every request form: JSON records, the [100, k] tensor and k per-column tensors "
        "(binary), the [100, k] tensor over gRPC. The peer goals are judged on the JSON rows only.",
        "",
        "### In-process floor (no HTTP)",
        "",
        *floor_table(summary["floor"]),
        "",
        "Raw data: `bench/results/raw/` (git-ignored); this summary: "
        "`bench/results/serving_summary.json`. How to run: `bench/serving/README.md`.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text("# Benchmarks\n\n" + text)
        return
    current = path.read_text()
    if BEGIN in current and END in current:
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        path.write_text(head + text.rstrip("\n") + tail)
    else:
        path.write_text(current.rstrip("\n") + "\n\n" + text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serving", type=Path, required=True, help="JSON lines of serve_bench.py")
    ap.add_argument("--floor", type=Path, default=None, help="the harness floor.py's JSON")
    ap.add_argument("--shipyard-floor", type=Path, default=None)
    ap.add_argument("--summary", type=Path, default=BENCH / "results" / "serving_summary.json")
    ap.add_argument("--results-md", type=Path, default=BENCH / "RESULTS.md")
    args = ap.parse_args()
    rows = load_lines(args.serving)
    info_file = args.serving.with_suffix(".run.json")
    run = json.loads(info_file.read_text()) if info_file.exists() else {}
    run.pop("cells", None)
    scen = scenarios(rows)
    head = headline(scen)
    floor = floors(
        json.loads(args.floor.read_text()) if args.floor and args.floor.exists() else None,
        json.loads(args.shipyard_floor.read_text())
        if args.shipyard_floor and args.shipyard_floor.exists()
        else None,
    )
    other = [r["other_cores"] for r in rows]
    run_args = run.get("args", {})
    # a smoke run is one with short cells or a cut-down target list; fewer rounds are just fewer repeats
    smoke = int(run_args.get("duration", 10)) < 10 or bool(run_args.get("smoke", False))
    summary = {
        "smoke": smoke,
        "run": run,
        "machine": machine(),
        "other_cores": {"median": median(other), "max": max(other) if other else None},
        "headline": head,
        "goals": goals(head, floor),
        "floor": floor,
        "scenarios": [
            {"target": t, "model": m, "scenario": sc, "concurrency": c, **s}
            for (t, m, sc, c), s in sorted(scen.items())
        ],
        "raw": {"serving": args.serving.name},
    }
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    write_section(args.results_md, section(summary))
    print("\n".join(headline_table(head)))
    print()
    print("\n".join(goal_lines(summary["goals"])))
    print(f"\nwrote {args.summary} and the Serving section of {args.results_md}")


if __name__ == "__main__":
    main()
