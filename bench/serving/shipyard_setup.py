"""Register, deploy and key the harness's two fraud models in shipyard, one home per model.

    .venv/bin/python bench/serving/shipyard_setup.py --root bench/.peers

Needs the harness's models and bodies (`make_data_train.py --out ROOT`). For each model
(`lr`, `lgbm`) it starts from an empty `ROOT/shipyard/<model>/` home, registers the joblib
model with `Registry.register` (a sample of 1,000 training rows fixes the signature),
deploys the version, creates a `predict` API key whose rate limit never triggers, and writes

    ROOT/shipyard/<model>/auth_headers.txt   "Authorization: Bearer <key>" (mode 600)
    ROOT/bodies/shipyard_single.json         {"instances": [record]}   (the harness's record)
    ROOT/bodies/shipyard_batch100.json       {"instances": [100 records]}
    ROOT/shipyard/setup.json                 names, versions, runtimes, score checks

The model's score for the single record is checked against the harness's
`reference_scores.json` (shipyard may serve the ONNX conversion: float32, so ~1e-7 apart).
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from harness import DEFAULT_ROOT, features

from shipyard import Registry, Settings
from shipyard.access import KeyStore

MODELS = ("lr", "lgbm")
SAMPLE_ROWS = 1000
SCORE_TOLERANCE = 1e-5


def model_name(model: str) -> str:
    return f"fraud-{model}"


def home_of(root: Path, model: str) -> Path:
    return root / "shipyard" / model


def write_bodies(root: Path) -> None:
    bodies = root / "bodies"
    single = json.loads((bodies / "fastapi_single.json").read_text())
    batch = json.loads((bodies / "fastapi_batch100.json").read_text())
    for name, records in (("single", [single]), ("batch100", batch)):
        text = json.dumps({"instances": records}, separators=(",", ":"))
        (bodies / f"shipyard_{name}.json").write_text(text)


def setup_model(root: Path, model: str, sample: pd.DataFrame, reference: float) -> dict[str, Any]:
    home = home_of(root, model)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    settings = Settings(home=home, actor="serving-bench")
    estimator = joblib.load(root / "models" / f"{model}.joblib")
    name = model_name(model)
    with Registry.from_settings(settings) as registry:
        version = registry.register(
            estimator,
            name=name,
            sample=sample,
            purpose="serving benchmark: the shared harness's fraud model",
            tags={"harness_model": model},
            aliases=["production"],
        )
        deployment = registry.deploy(name, version.version, reason="serving benchmark")
        _, token = KeyStore(registry.database, actor="serving-bench").create(
            "predict", rate_per_second=1e6, name="serving-bench"
        )
        bundle = registry.open(name, version.version)
        record = json.loads((root / "bodies" / "fastapi_single.json").read_text())
        columns = version.signature.validate_records([record])
        score = float(bundle.predictor.predict(columns)[0, 1])
    headers = home / "auth_headers.txt"
    headers.touch(mode=0o600)
    headers.write_text(f"Authorization: Bearer {token}\n")
    if abs(score - reference) > SCORE_TOLERANCE:
        raise SystemExit(f"{name}: score {score} differs from the harness's reference {reference}")
    return {
        "name": name,
        "version": version.version,
        "deployment": deployment.describe(),
        "runtime": bundle.predictor.runtime,
        "home": str(home),
        "headers_file": str(headers),
        "score_single": score,
        "reference_single": reference,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    root = args.root.resolve()
    # the models were fitted on DataFrames; sklearn warns when a converter feeds arrays
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    reference = json.loads((root / "reference_scores.json").read_text())
    sample = pd.read_parquet(root / "data" / "fraud.parquet", columns=features())
    sample = sample.head(SAMPLE_ROWS)
    write_bodies(root)
    done = {m: setup_model(root, m, sample, reference[m]) for m in args.models.split(",")}
    (root / "shipyard" / "setup.json").write_text(json.dumps(done, indent=1))
    for m, info in done.items():
        print(
            f"{m}: {info['name']}:{info['version']} on {info['runtime']}, "
            f"score {info['score_single']:.7f} (reference {info['reference_single']:.7f})"
        )


if __name__ == "__main__":
    main()
