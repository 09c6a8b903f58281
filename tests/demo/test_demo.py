"""`shipyard demo` runs the fraud story end to end on embedded defaults."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from shipyard.demo import run_demo
from shipyard.demo._data import FEATURES, LABEL, transactions

pytestmark = pytest.mark.slow


def test_synthetic_transactions_are_deterministic_and_realistic() -> None:
    a, b = transactions(20_000, seed=3), transactions(20_000, seed=3)
    assert a.equals(b)
    assert 0.01 <= a[LABEL].mean() <= 0.02
    assert set(FEATURES) <= set(a.columns)
    assert a["distance_from_home_km"].isna().mean() > 0
    assert a["timestamp"].is_monotonic_increasing
    assert a.groupby("merchant_category")["transaction_amount"].median()["jewelry"] > 100


def test_demo_trains_registers_serves_and_refuses_bad_input(tmp_path: Path) -> None:
    out = io.StringIO()
    result = run_demo(
        tmp_path / "demo", rows=8_000, requests=40, console=Console(file=out, width=120)
    )
    text = out.getvalue()
    assert result.version == 1
    assert result.runtime == "onnxruntime"
    assert result.metrics["auc"] > 0.75
    assert result.scored == 40
    assert len(result.single_latencies_ms) == 40
    assert result.v2_status == 200
    assert result.bad_request_status == 422
    assert result.batch_rows_per_s > 0
    assert "fraud-detector:1 in production" in text
    assert "refused with 422" in text
