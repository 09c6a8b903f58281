"""`shipyard server` as a real process on loopback: several workers, metrics summed across them."""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd
import pytest
from tests.conftest import records
from tests.serving.servers import ServerProcess

from shipyard.core import Settings

pytestmark = pytest.mark.slow


def test_two_worker_server_answers_v1_and_v2_over_tcp(
    served_settings: Settings, admin_token: str, fraud_model: Any, fraud_sample: pd.DataFrame
) -> None:
    rows = fraud_sample.iloc[:20]
    headers = {"Authorization": f"Bearer {admin_token}"}
    with (
        ServerProcess(served_settings, workers=2) as server,
        httpx.Client(base_url=server.url, timeout=10, headers=headers) as client,
    ):
        answers = [
            client.post("/v1/models/fraud-detector/predict", json={"instances": [record]})
            for record in records(rows)
        ]
        assert all(a.status_code == 200 for a in answers)
        scores = [a.json()["predictions"][0]["score"] for a in answers]
        assert scores == pytest.approx(fraud_model.predict_proba(rows)[:, 1].tolist(), abs=1e-5)
        assert client.get("/v2/models/fraud-detector/ready").json()["ready"] is True
        bad = client.post(
            "/v1/models/fraud-detector/predict",
            content=b"{",
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
        assert "not valid JSON" in bad.json()["error"]["message"]
        # each worker counted its own requests; /metrics adds them up, whichever worker answers
        metrics = client.get("/metrics").text
        line = next(
            line
            for line in metrics.splitlines()
            if line.startswith("shipyard_predictions_total{") and 'status="200"' in line
        )
        assert float(line.rsplit(" ", 1)[1]) == 20
