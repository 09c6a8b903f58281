"""Register, deploy and key the harness's two fraud models in shipyard, one home per model.

    .venv/bin/python bench/serving/shipyard_setup.py --root bench/.peers

Needs the harness's models and bodies (`make_data_train.py --out ROOT`). For each model
(`lr`, `lgbm`) it starts from an empty `ROOT/shipyard/<model>/` home, registers the joblib
model with `Registry.register` (a sample of 1,000 training rows fixes the signature),
deploys the version, creates a `predict` API key whose rate limit never triggers, and writes

    ROOT/shipyard/<model>/auth_headers.txt   "Authorization: Bearer <key>" (mode 600)
    ROOT/bodies/shipyard_single.json         {"instances": [record]}   (the harness's record)
    ROOT/bodies/shipyard_batch100.json       {"instances": [100 records]}
    ROOT/shipyard/setup.json                 names, versions, runtimes, score checks, the
                                             request files below and the JSON path's scores

The model's score for the single record is checked against the harness's
`reference_scores.json` (shipyard may serve the ONNX conversion: float32, so ~1e-7 apart).

Then, per model, it starts `shipyard server --grpc-port` once, reads the model's inputs from
`GET /v2/models/fraud-<model>`, scores the JSON bodies on `/v1/.../predict` (the reference
scores of every other body; their sum is checked against the harness's), and writes the same
record and 100 records as Open Inference Protocol bodies (`oip_bodies.py`) into
`ROOT/shipyard/<model>/requests/`:

    bin_single.bin, bin_batch100.bin     binary extension, one [1, k] / [100, k] matrix tensor
    bin_columns100.bin                   binary extension, one [100] tensor per input
    bin_*.headers                        Content-Type and Inference-Header-Content-Length
    grpc_single.bin, grpc_batch100.bin   one framed gRPC ModelInferRequest, [1, k] / [100, k]

Each is sent once (binary bodies to `/v2/models/fraud-<model>/infer`, gRPC ones with grpcio)
and its scores must equal the JSON path's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from grpc_load import check_grpc
from harness import DEFAULT_ROOT, features
from oip_bodies import Tensor, binary_body, column_tensors, grpc_body, grpc_request, matrix_tensors
from serve_bench import GRPC_SERVICE, for_model, grpc_port, peers, shipyard_target
from wrk_load import Scenario, check_scenario, read_headers

from shipyard import Registry, Settings
from shipyard.access import KeyStore

MODELS = ("lr", "lgbm")
SAMPLE_ROWS = 1000
SCORE_TOLERANCE = 1e-5
SETUP_PORT = 18409  # the setup's own server, for the request checks


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


def _http_json(url: str, headers: dict[str, str], body: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=body, headers=headers)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _write(folder: Path, name: str, body: bytes, headers: dict[str, str] | None) -> dict[str, Any]:
    (folder / f"{name}.bin").write_bytes(body)
    files = {"body": str(folder / f"{name}.bin"), "bytes": len(body), "headers": None}
    if headers is not None:
        (folder / f"{name}.headers").write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
        files["headers"] = str(folder / f"{name}.headers")
    return files


def write_requests(
    root: Path, model: str, info: dict[str, Any], batch_sum: float
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The binary and gRPC bodies of `model`, each checked on a live server against the
    JSON path's scores; returns their files and those scores."""
    bodies = root / "bodies"
    single = json.loads((bodies / "fastapi_single.json").read_text())
    batch = json.loads((bodies / "fastapi_batch100.json").read_text())
    folder = Path(info["home"]) / "requests"
    folder.mkdir(exist_ok=True)
    spec = for_model(shipyard_target(root, 1, "grpc"), model)
    name, auth = info["name"], info["headers_file"]
    p, log = peers.start("shipyard-setup", spec, model, SETUP_PORT, str(root), {})
    try:
        peers.wait_healthy(p, SETUP_PORT, spec["health"])
        base = f"http://127.0.0.1:{SETUP_PORT}"
        inputs = _http_json(f"{base}/v2/models/{name}", read_headers(auth))["inputs"]
        scores = {}
        for label, text in (
            ("single", (bodies / "shipyard_single.json").read_bytes()),
            ("batch100", (bodies / "shipyard_batch100.json").read_bytes()),
        ):
            answer = _http_json(f"{base}/v1/models/{name}/predict", read_headers(auth), text)
            scores[label] = [float(x["score"]) for x in answer["predictions"]]
        if abs(sum(scores["batch100"]) - batch_sum) > 100 * SCORE_TOLERANCE:
            raise SystemExit(
                f"{name}: the 100 records' scores add up to {sum(scores['batch100'])}, the "
                f"harness's reference is {batch_sum}"
            )
        tensors: dict[str, tuple[str, list[Tensor]]] = {
            "single": ("matrix", matrix_tensors([single], inputs)),
            "batch100": ("matrix", matrix_tensors(batch, inputs)),
            "columns100": ("columns", column_tensors(batch, inputs)),
        }
        requests: dict[str, dict[str, Any]] = {"http-binary": {}, "grpc": {}}
        for label, (layout, ts) in tensors.items():
            rows = 1 if label == "single" else 100
            expected = tuple(scores["single" if rows == 1 else "batch100"])
            body, headers = binary_body(ts)
            files = _write(folder, f"bin_{label}", body, headers)
            url = f"{base}/v2/models/{name}/infer"
            check = check_scenario(
                Scenario(
                    label, rows, url, files["body"], 1, (auth, files["headers"]), scores=expected
                )
            )
            requests["http-binary"][label] = {
                **files,
                "rows": rows,
                "layout": layout,
                "check": check,
            }
            if layout != "matrix":
                continue
            files = _write(folder, f"grpc_{label}", grpc_body(grpc_request(name, ts)), None)
            url = f"http://127.0.0.1:{grpc_port(SETUP_PORT)}{GRPC_SERVICE}"
            check = check_grpc(
                Scenario(label, rows, url, files["body"], 1, (auth,), scores=expected)
            )
            requests["grpc"][label] = {**files, "rows": rows, "layout": layout, "check": check}
    finally:
        peers.stop(p, str(root), "shipyard-setup", model)
        log.close()
    return {"inputs": inputs, **requests}, scores


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
    for m, info in done.items():
        requests, scores = write_requests(root, m, info, reference["batch100_sum"][m])
        info.update({"requests": requests, "json_scores": scores})
    (root / "shipyard" / "setup.json").write_text(json.dumps(done, indent=1))
    for m, info in done.items():
        checks = [
            f"{t} {label} {c['check'].get('max_score_diff', float('nan')):.1e}"
            for t in ("http-binary", "grpc")
            for label, c in info["requests"][t].items()
        ]
        print(
            f"{m}: {info['name']}:{info['version']} on {info['runtime']}, "
            f"score {info['score_single']:.7f} (reference {info['reference_single']:.7f}); "
            f"largest score difference from the JSON path: {', '.join(checks)}"
        )


if __name__ == "__main__":
    main()
