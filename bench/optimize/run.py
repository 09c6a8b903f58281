#!/usr/bin/env python3
"""What `shipyard optimize` buys on two real models, every method in one run, and the edge
bundles it exports.

    .venv/bin/python bench/optimize/run.py [--fraud-rows 200000] [--json OUT] [--markdown OUT]

Models (seeded, trained here):
  * digits-mlp: a PyTorch MLP (64 -> 512 -> 256 -> 10, ReLU) on scikit-learn's digits (1,400
    training images, 397 holdout), registered with `shipyard.TorchModel`, served through ONNX.
  * fraud-gbm: a 500-tree LightGBM (31 leaves) on the serving bench's fraud data (the demo's
    synthetic transactions, `--fraud-rows`, three quarters for training, the numeric columns).

For each model every method (and the combinations worth having) runs on its own through
`Optimizer.run` with the default gate (1%: AUC for the fraud model, accuracy for digits); a
child that passes is registered. Parent and children are timed as serving runs them (the
`Figures` of the report: one row p50, per row in batches of 1,000, rows/s) and, for the CPU
column, one more pass of 20 batches of 1,000 rows under `time.process_time`. Then the fastest
passing child of each model is exported for each edge profile: its size against the budget, and
p50 of one row through the export's runner (`EdgeModel.predict` on a dict row).

One thread per model, as serving runs them; 2 shared CPUs, so numbers move by +-15% between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _describe() -> str:
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()


def _digits() -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.datasets import load_digits

    data = load_digits(as_frame=True)
    frame = data.frame.rename(columns={"target": "label"})
    frame.columns = [str(c).replace("pixel_", "p") for c in frame.columns]
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    features = [c for c in frame.columns if c != "label"]
    frame[features] = frame[features].astype("float32")
    return frame.iloc[:1400], frame.iloc[1400:]


def _train_mlp(train: pd.DataFrame) -> Any:
    import torch

    torch.manual_seed(0)
    x = torch.tensor(train.drop(columns="label").to_numpy(np.float32) / 16.0)
    y = torch.tensor(train["label"].to_numpy())
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )  # fmt: skip
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(40):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            idx = order[start : start + 64]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    class Scaled(torch.nn.Module):
        """Pixels 0-16 scaled to 0-1 inside the network, so the bundle takes raw pixels."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixels: Any) -> Any:
            return self.inner(pixels / 16.0)

    return Scaled(net).eval()


def _fraud(rows: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    from shipyard.demo._data import LABEL, transactions
    from shipyard.demo._train import NUMERIC

    frame = transactions(rows, seed=5)
    cut = rows * 3 // 4
    train = frame.iloc[:cut][[*NUMERIC, LABEL]].rename(columns={LABEL: "label"})
    holdout = frame.iloc[cut:][[*NUMERIC, LABEL]].rename(columns={LABEL: "label"})
    return train, holdout, list(NUMERIC)


def _cpu_per_row(predictor: Any, columns: dict[str, np.ndarray]) -> tuple[float, float]:
    """(wall ms, CPU ms) per row over 20 batches of 1,000 rows."""
    batch = {k: np.resize(np.asarray(v), 1000) for k, v in columns.items()}
    predictor.predict(batch)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(20):
        predictor.predict(batch)
    return (
        (time.perf_counter() - wall) * 1e3 / 20_000,
        (time.process_time() - cpu) * 1e3 / 20_000,
    )


def _edge(
    registry: Any, name: str, version: int, rows: list[dict[str, Any]], out: Path
) -> list[dict[str, Any]]:
    from shipyard.core.errors import ShipyardError
    from shipyard.optimize import PROFILES, EdgeModel, export_edge

    results = []
    for profile in PROFILES:
        try:
            exported = export_edge(
                registry, f"{name}:{version}", profile=profile, out=out / f"{name}-v{version}-{profile}",
                exact=True,
            )  # fmt: skip
        except ShipyardError as error:
            results.append({"profile": profile, "refused": error.message})
            continue
        model = EdgeModel(exported.folder)
        for row in rows[:20]:
            model.predict([row])
        spans = []
        for index in range(300):
            started = time.perf_counter()
            model.predict([rows[index % len(rows)]])
            spans.append((time.perf_counter() - started) * 1e3)
        shipped = exported.files.get("model.ort", exported.files["model.onnx"])["bytes"]
        results.append({
            "profile": profile, "file": model.model_file, "model_bytes": shipped,
            "budget_bytes": exported.budget_bytes, "bundle_bytes": sum(f["bytes"] for f in exported.files.values()),
            "runner_p50_ms_1_row": round(statistics.median(spans), 4),
        })  # fmt: skip
    return results


def _run_model(
    registry: Any,
    name: str,
    holdout: pd.DataFrame,
    chains: list[dict[str, Any]],
    train: pd.DataFrame | None,
) -> dict[str, Any]:
    from shipyard.optimize import Optimizer

    optimizer = Optimizer(registry)
    parent = registry.resolve(f"{name}:1")
    served = registry.load(name, 1)
    columns = parent.signature.validate_frame(holdout[parent.signature.names])
    rows_out = []
    parent_figures = None
    for options in chains:
        opts = dict(options)
        if opts.pop("fine_tune", False):
            opts["train"] = train
        started = time.perf_counter()
        report = optimizer.run(f"{name}:1", holdout=holdout, **opts)
        seconds = time.perf_counter() - started
        (outcome,) = report.outcomes
        parent_figures = parent_figures or report.parent
        row: dict[str, Any] = {
            "method": outcome.method + (" (fine-tuned)" if options.get("fine_tune") else ""),
            "passed": outcome.passed,
            "reason": outcome.reason,
            "seconds": round(seconds, 1),
            "version": outcome.version,
            "figures": outcome.figures.to_dict() if outcome.figures else None,
            "speedup_1_row": report.speedup(outcome),
            "speedup_1000": report.speedup(outcome, batch=True),
            "smaller_by": report.shrink(outcome),
            "gate": outcome.gate,
        }
        if outcome.version is not None:
            child = registry.load(name, outcome.version).predictor
            row["wall_ms_per_row"], row["cpu_ms_per_row"] = _cpu_per_row(child, columns)
        rows_out.append(row)
    wall, cpu = _cpu_per_row(served.predictor, columns)
    return {
        "model": name,
        "task": parent.task,
        "parent": {
            **parent_figures.to_dict(),
            "wall_ms_per_row": wall,
            "cpu_ms_per_row": cpu,
            "runtime": parent.runtime,
        },
        "gate_metric": report.gate_metric,
        "holdout_rows": len(holdout),
        "methods": rows_out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fraud-rows", type=int, default=200_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument(
        "--render", type=Path, default=None, help="print the tables of a results JSON, run nothing"
    )
    args = parser.parse_args()
    if args.render:
        sys.stdout.write(_markdown(json.loads(args.render.read_text())))
        return

    home = Path(tempfile.mkdtemp(prefix="bench-optimize-"))
    os.environ["SHIPYARD_HOME"] = str(home)
    import lightgbm
    import onnxruntime
    import torch

    import shipyard
    from shipyard.core import Settings
    from shipyard.registry import Registry

    registry = Registry.from_settings(Settings(home=home))
    started = time.perf_counter()
    d_train, d_holdout = _digits()
    mlp = _train_mlp(d_train)
    x = d_train.drop(columns="label")
    registry.register(
        shipyard.TorchModel(mlp, classes=list(range(10))),
        name="digits-mlp",
        sample=x,
        training_data=x,
    )
    f_train, f_holdout, features = _fraud(args.fraud_rows)
    gbm = lightgbm.LGBMClassifier(
        n_estimators=500, num_leaves=31, learning_rate=0.03, min_child_samples=50, verbose=-1, random_state=0,
    ).fit(f_train[features], f_train["label"])  # fmt: skip
    registry.register(
        gbm, name="fraud-gbm", sample=f_train[features].iloc[:2000], training_data=f_train[features]
    )
    setup_s = time.perf_counter() - started

    mlp_chains = [
        {"quantize": "int8"}, {"quantize": "int8-static"}, {"quantize": "fp16"},
        {"prune": 0.5}, {"prune": 0.5, "fine_tune": True},
        {"prune": 0.5, "fine_tune": True, "quantize": "int8"},
        {"distill": "mlp:64,32"}, {"distill": "mlp:128,64", "quantize": "int8"},
    ]  # fmt: skip
    gbm_chains = [
        {"prune": 0.5}, {"prune": 0.8},
        {"distill": "mlp:64,32"}, {"distill": "mlp:64,32", "quantize": "int8"},
        {"distill": "gbm:trees=50,depth=3"},
    ]  # fmt: skip
    results = {
        "code": _describe(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
        "versions": {
            "shipyard": shipyard.__version__,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "lightgbm": lightgbm.__version__,
        },
        "setup_seconds": round(setup_s, 1),
        "models": [
            _run_model(registry, "digits-mlp", d_holdout, mlp_chains, d_train),
            _run_model(registry, "fraud-gbm", f_holdout, gbm_chains, None),
        ],
    }
    edge = []
    for model in results["models"]:
        passed = [m for m in model["methods"] if m["version"] is not None]
        best = (
            min(passed, key=lambda m: m["figures"]["latency_ms_per_row_1000"]) if passed else None
        )
        holdout = d_holdout if model["model"] == "digits-mlp" else f_holdout
        rows = holdout.drop(columns="label").head(300).to_dict("records")
        for version, what in (
            (1, "parent"),
            *(((best["version"], best["method"]),) if best else ()),
        ):
            for entry in _edge(registry, model["model"], version, rows, home / "edge"):
                edge.append({"model": model["model"], "version": version, "what": what, **entry})
    results["edge"] = edge
    registry.close()
    text = json.dumps(results, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    markdown = _markdown(results)
    if args.markdown:
        args.markdown.write_text(markdown)
    sys.stdout.write(markdown)


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['when']} at `{results['code']}`; {results['machine']}; {json.dumps(results['versions'])}.",
        "",
    ]
    for model in results["models"]:
        parent = model["parent"]
        metric = model["gate_metric"]
        lines += [
            f"**{model['model']}** ({model['task']}, gate: {metric} may drop at most 1%, "
            f"{model['holdout_rows']:,} holdout rows; parent runs on {parent['runtime']})",
            "",
            "| method | size | 1 row p50 | per row @1000 | rows/s | CPU per row @1000 | "
            + metric
            + " | result |",
            "|---|---|---|---|---|---|---|---|",
            f"| parent | {parent['size_bytes'] / 1e3:,.0f} kB | {parent['latency_ms_1_row'] * 1e3:.0f} µs | "
            f"{parent['latency_ms_per_row_1000'] * 1e3:.2f} µs | {parent['throughput_rows_per_s']:,.0f} | "
            f"{parent['cpu_ms_per_row'] * 1e3:.2f} µs | {parent['metrics'][metric]:.4f} | |",
        ]
        for row in model["methods"]:
            f = row["figures"]
            if f is None:
                lines.append(f"| {row['method']} | | | | | | | not applicable |")
                continue
            cpu = (
                f"{row['cpu_ms_per_row'] * 1e3:.2f} µs ({parent['cpu_ms_per_row'] / row['cpu_ms_per_row']:.1f}x)"
                if row.get("cpu_ms_per_row")
                else "(not registered)"
            )
            result = (
                f"registered v{row['version']}" if row["version"] is not None else "**refused**"
            )
            # ratios against the parent row above (each report timed its own parent too)
            one = parent["latency_ms_1_row"] / f["latency_ms_1_row"]
            batch = parent["latency_ms_per_row_1000"] / f["latency_ms_per_row_1000"]
            lines.append(
                f"| {row['method']} | {f['size_bytes'] / 1e3:,.1f} kB ({row['smaller_by']:.1f}x smaller) | "
                f"{f['latency_ms_1_row'] * 1e3:.0f} µs ({one:.2f}x) | "
                f"{f['latency_ms_per_row_1000'] * 1e3:.2f} µs ({batch:.1f}x) | "
                f"{f['throughput_rows_per_s']:,.0f} | {cpu} | {f['metrics'][metric]:.4f} "
                f"({row['gate']['loss']:+.2%} loss) | {result} |"
            )
        lines.append("")
    lines += [
        "**Edge bundles** (`shipyard export --target edge`): the parent and the fastest passing child",
        "",
        "| model | version | profile | model file | size / budget | runner p50, 1 row |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results["edge"]:
        if "refused" in entry:
            lines.append(
                f"| {entry['model']} | v{entry['version']} ({entry['what']}) | {entry['profile']} | refused | "
                f"{entry['refused'][:110]} | |"
            )
            continue
        lines.append(
            f"| {entry['model']} | v{entry['version']} ({entry['what']}) | {entry['profile']} | {entry['file']} | "
            f"{entry['model_bytes'] / 1e3:,.1f} kB / {entry['budget_bytes'] / 1e6:.0f} MB | "
            f"{entry['runner_p50_ms_1_row'] * 1e3:.0f} µs |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
