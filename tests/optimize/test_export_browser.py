"""The browser export in a real browser: Chromium loads the export's run.mjs with
onnxruntime-web (WebAssembly), checks every file against the manifest, and answers as the
server does - for a pipeline with a text input (one-hot in the graph) and for a tree ensemble."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core import Settings
from shipyard.demo._data import FEATURES
from shipyard.optimize import export_edge
from shipyard.registry import Registry
from tests.conftest import records

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SHIPYARD_TEST_CHROMIUM") or shutil.which("chromium")
# onnxruntime-web's dist/ folder (npm install onnxruntime-web; .ci/run installs it)
ORT_WEB = os.environ.get("SHIPYARD_TEST_ORT_WEB")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip(
            "no chromium to drive (apt-get install chromium, or set SHIPYARD_TEST_CHROMIUM)"
        )
    if ORT_WEB is None or not (Path(ORT_WEB) / "ort.min.mjs").is_file():
        pytest.skip(
            "no onnxruntime-web to load (npm install onnxruntime-web, then set "
            "SHIPYARD_TEST_ORT_WEB to its dist/ folder)"
        )
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


class _Files(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A static site on loopback: /ort/ (onnxruntime-web) and the exports under /exports/."""
    root = tmp_path_factory.mktemp("site")
    assert ORT_WEB is not None
    (root / "ort").symlink_to(ORT_WEB, target_is_directory=True)
    (root / "exports").mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Files, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


PAGE = """<!doctype html><meta charset="utf-8"><title>edge</title>
<script type="module">
import * as ort from "/ort/ort.min.mjs";
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = "/ort/";
import { EdgeModel } from "/exports/NAME/run.mjs";
try {
  const model = await EdgeModel.load(ort, "/exports/NAME/");
  const rows = await (await fetch("/exports/NAME-rows.json")).json();
  window.result = { answers: await model.predict(rows), name: model.name, version: model.version };
} catch (error) {
  window.result = { error: String(error) };
}
</script>"""


def _run(
    browser: Any, site: tuple[str, Path], name: str, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    url, root = site
    (root / "exports" / f"{name}-rows.json").write_text(json.dumps(rows))
    (root / f"{name}.html").write_text(PAGE.replace("NAME", name))
    page = browser.new_page()
    try:
        page.goto(f"{url}/{name}.html")
        page.wait_for_function("window.result !== undefined", timeout=60_000)
        result: dict[str, Any] = page.evaluate("window.result")
        return result
    finally:
        page.close()


def _served(registry: Registry, name: str, frame: pd.DataFrame) -> np.ndarray:
    served = registry.load(name, 1)
    return np.asarray(served.predictor.predict(served.record.signature.validate_frame(frame)))


def test_a_pipeline_with_text_input_and_a_tree_ensemble_answer_in_chromium(
    browser: Any,
    site: tuple[str, Path],
    tmp_path: Path,
    fraud_model: Any,
    fraud_data: pd.DataFrame,
) -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    numeric = [f for f in FEATURES if f != "merchant_category"]
    with Registry.from_settings(Settings(home=tmp_path / "home")) as registry:
        registry.register(
            fraud_model, name="fraud", sample=fraud_data[FEATURES].iloc[:500], threshold=0.3
        )
        trees = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0)
        trees.fit(fraud_data[numeric].fillna(0), fraud_data["is_fraud"])
        registry.register(trees, name="trees", sample=fraud_data[numeric].fillna(0).iloc[:500])
        for name, frame in (
            ("fraud", fraud_data[FEATURES]),
            ("trees", fraud_data[numeric].fillna(0)),
        ):
            folder = site[1] / "exports" / name
            result = export_edge(registry, f"{name}:1", profile="browser", out=folder)
            assert "run.mjs" in result.files
            rows = frame.iloc[3000:3200]
            answer = _run(browser, site, name, records(rows))
            assert "error" not in answer, answer.get("error")
            assert (answer["name"], answer["version"]) == (name, 1)
            scores = [a["score"] for a in answer["answers"]]
            np.testing.assert_allclose(scores, _served(registry, name, rows)[:, 1], atol=1e-5)
            if name == "fraud":  # the registered threshold decides the label, as on the server
                assert [a["label"] for a in answer["answers"]] == [
                    1 if s >= 0.3 else 0 for s in scores
                ]


def test_a_changed_file_or_a_bad_row_is_an_error_in_the_browser_too(
    browser: Any, site: tuple[str, Path], tmp_path: Path, fraud_model: Any, fraud_data: pd.DataFrame
) -> None:
    with Registry.from_settings(Settings(home=tmp_path / "home")) as registry:
        registry.register(fraud_model, name="fraud", sample=fraud_data[FEATURES].iloc[:500])
        folder = site[1] / "exports" / "bad"
        export_edge(registry, "fraud:1", profile="browser", out=folder)
    row = records(fraud_data[FEATURES].iloc[:1])[0]
    refused = _run(browser, site, "bad", [{**row, "hour_of_day": 2.5}])
    assert "row 0: 'hour_of_day' must be an integer" in refused["error"]
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-5] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    changed = _run(browser, site, "bad", [row])
    assert "model.onnx does not match manifest.json" in changed["error"]
