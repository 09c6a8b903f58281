"""Federated against central training on the same data: does keeping the rows at the sites cost
accuracy?

    .venv/bin/python bench/federated/run.py [--sites 5] [--rounds 10]

scikit-learn's breast-cancer data (569 rows, 30 features) split across `--sites` sites
non-IID: sorted by `mean radius` and cut into contiguous parts, so each site sees different
tumours (the smallest site has almost only benign ones). Each site keeps 20% as its holdout
(seeded). The same model, a logistic regression on standardised features with the same L2
penalty, is trained

    central    on every site's training rows pooled (what the sites cannot do)
    FedAvg     by `shipyard.federated` over Flower, server and sites as separate processes
    FedProx    the same with mu = 0.1
    + DP       FedAvg with each site's update clipped to norm 1 and noise 0.5 / 1.0 x clip
    + SecAgg+  FedAvg under Flower's secure aggregation (the server sees only sums; updates
               quantised with stochastic rounding)

and a PyTorch network (one hidden layer of 16) the same ways, central (Adam, rounds x 30
steps from the same starting weights) and FedAvg (30 local steps a round).

and every model is scored on the union of the sites' holdouts. Writes
`bench/federated/results/<git describe>.json` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]


def split(sites: int) -> list[pd.DataFrame]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame.sort_values("mean radius", kind="stable")
    data = data.reset_index(drop=True)
    return [
        data.iloc[part].reset_index(drop=True)
        for part in np.array_split(np.arange(len(data)), sites)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _site(frame: pd.DataFrame, name: str, address: str) -> None:
    import logging

    from shipyard.federated import Site, start_site

    logging.getLogger("flwr").setLevel(logging.ERROR)
    start_site(Site(frame, "target", name), address, wait_seconds=60)


def federated(parts: list[pd.DataFrame], settings: Any) -> tuple[Any, float]:
    import logging

    from shipyard.federated import serve

    logging.getLogger("flwr").setLevel(logging.ERROR)
    address = f"127.0.0.1:{free_port()}"
    context = multiprocessing.get_context("spawn")
    members = [
        context.Process(target=_site, args=(part, f"site-{i}", address))
        for i, part in enumerate(parts)
    ]
    for member in members:
        member.start()
    started = time.perf_counter()
    result = serve(address, settings)
    seconds = time.perf_counter() - started
    for member in members:
        member.join(60)
    return result, seconds


def holdouts(parts: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every site's training and holdout rows as the sites split them (the same seed)."""
    from shipyard.federated import Site

    sites = [Site(part, "target", f"site-{i}") for i, part in enumerate(parts)]
    X = np.concatenate([s.X for s in sites])
    y = np.concatenate([s.labels for s in sites])
    X_hold = np.concatenate([s.X_holdout for s in sites])
    y_hold = np.concatenate([s.labels_holdout for s in sites])
    return X, y, X_hold, y_hold


def score(predict: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    probability = predict(X)
    return {
        "accuracy": float(np.mean((probability >= 0.5) == (y == 1))),
        "auc": float(roc_auc_score(y, probability)),
    }


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from shipyard.federated import Privacy, Settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parts = split(args.sites)
    X, y, X_hold, y_hold = holdouts(parts)
    alpha = Settings().alpha
    # the same objective as the sites': mean log-loss + alpha/2 |w|^2, i.e. C = 1 / (alpha n)
    central = make_pipeline(
        StandardScaler(), LogisticRegression(C=1 / (alpha * len(X)), max_iter=5000)
    )
    central.fit(X, y)
    rows: dict[str, dict[str, Any]] = {
        "central": {
            **score(lambda x: central.predict_proba(x)[:, 1], X_hold, y_hold),
            "seconds": None,
        }
    }
    # the network: trained centrally from the same starting weights, as many Adam steps as the
    # federated run takes in all (rounds x local steps)
    from shipyard.federated._model import Network, family, standardiser, statistics

    network = Network((16,))
    mean, scale = standardiser([statistics(X)])
    start = network.initial(X.shape[1], np.random.default_rng(0))
    trained = network.fit(
        (X - mean) / scale, y.astype(np.float64), start, alpha=alpha, mu=0.0,
        steps=args.rounds * 30, seed=0,
    )  # fmt: skip
    rows["central, PyTorch mlp:16"] = {
        **score(
            lambda x: 1 / (1 + np.exp(-network.margin((x - mean) / scale, trained))), X_hold, y_hold
        ),
        "seconds": None,
    }
    runs = {
        "FedAvg": Settings(rounds=args.rounds, min_sites=args.sites),
        "FedProx (mu 0.1)": Settings(rounds=args.rounds, min_sites=args.sites, strategy="fedprox"),
        "FedAvg, PyTorch mlp:16": Settings(
            rounds=args.rounds, min_sites=args.sites, model="mlp:16", steps=30
        ),
        "FedAvg + DP (noise 0.5, clip 1)": Settings(
            rounds=args.rounds, min_sites=args.sites, privacy=Privacy(clip=1.0, noise=0.5)
        ),
        "FedAvg + DP (noise 1.0, clip 1)": Settings(
            rounds=args.rounds, min_sites=args.sites, privacy=Privacy(clip=1.0, noise=1.0)
        ),
        "FedAvg + SecAgg+": Settings(rounds=args.rounds, min_sites=args.sites, secure=True),
    }
    for label, settings in runs.items():
        # DP's noise and SecAgg+'s stochastic rounding come from fresh entropy at each site: those
        # rows are the mean of three runs, with the range of their accuracies
        repeats = 3 if settings.privacy is not None or settings.secure else 1
        found = []
        for _ in range(repeats):
            result, seconds = federated(parts, settings)
            kind = family(settings.model)

            def global_model(x: np.ndarray, k: Any = kind, r: Any = result) -> np.ndarray:
                return 1 / (1 + np.exp(-k.margin((x - r.mean) / r.scale, r.weights)))

            found.append({
                **score(global_model, X_hold, y_hold), "seconds": seconds,
                "epsilon": result.epsilon, "sites_weighted_accuracy": result.final.get("accuracy"),
            })  # fmt: skip
        rows[label] = {
            key: float(np.mean([f[key] for f in found])) if found[0][key] is not None else None
            for key in found[0]
        }
        if repeats > 1:
            rows[label]["runs"] = repeats
            rows[label]["accuracy_range"] = [min(f["accuracy"] for f in found),
                                             max(f["accuracy"] for f in found)]  # fmt: skip
    for label, row in rows.items():  # each against the central model of its own kind
        base = rows["central, PyTorch mlp:16" if "PyTorch" in label else "central"]["accuracy"]
        row["gap_points"] = 100 * (row["accuracy"] - base)
    out = ROOT / "bench" / "federated" / "results"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "code": described,
        "data": f"breast cancer, {args.sites} sites split by mean radius, 20% holdout per site",
        "rounds": args.rounds,
        "site_rows": [len(p) for p in parts],
        "holdout_rows": len(y_hold),
        "results": rows,
    }
    (out / f"{described}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"code {described}; {args.sites} sites ({report['site_rows']} rows), {args.rounds} rounds, {len(y_hold)} holdout rows\n"
    )
    print("| model | accuracy | AUC | gap to central | epsilon | seconds |")
    print("|---|---|---|---|---|---|")
    for label, row in rows.items():
        eps = f"{row['epsilon']:.3g}" if row.get("epsilon") else "-"
        secs = f"{row['seconds']:.1f}" if row.get("seconds") else "-"
        spread = (
            f" ({row['accuracy_range'][0]:.4f}-{row['accuracy_range'][1]:.4f}, {row['runs']} runs)"
            if "runs" in row
            else ""
        )
        print(
            f"| {label} | {row['accuracy']:.4f}{spread} | {row['auc']:.4f} | {row['gap_points']:+.2f} pts | {eps} | {secs} |"
        )


if __name__ == "__main__":
    main()
