from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shipyard.core import Signature, fingerprint, profile


def test_profile_holds_quantiles_histogram_categories_and_missing_rate() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(10, 2, 10_000)
    values[:500] = np.nan
    frame = pd.DataFrame({"x": values, "c": rng.choice(["a", "b"], 10_000, p=[0.75, 0.25])})
    result = profile(frame, Signature.infer(frame))
    x = result["columns"]["x"]
    assert result["rows"] == 10_000
    assert x["missing_rate"] == pytest.approx(0.05)
    present = values[~np.isnan(values)]
    assert x["quantiles"]["0.5"] == pytest.approx(np.median(present))
    assert x["mean"] == pytest.approx(present.mean())
    assert sum(x["histogram"]["counts"]) == present.size
    assert len(x["histogram"]["edges"]) == len(x["histogram"]["counts"]) + 1
    c = result["columns"]["c"]
    assert c["frequencies"]["a"] == pytest.approx((frame.c == "a").mean())
    assert c["distinct"] == 2


def test_constant_column_profiles_without_error() -> None:
    frame = pd.DataFrame({"x": [3.0] * 10})
    x = profile(frame, Signature.infer(frame))["columns"]["x"]
    assert x["histogram"]["counts"] == [10]
    assert x["std"] == 0.0


def test_fingerprint_is_stable_and_sensitive_to_values(tmp_path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    assert fingerprint(frame)["sha256"] == fingerprint(frame.copy())["sha256"]
    assert fingerprint(frame)["sha256"] != fingerprint(frame.assign(x=[1.0, 2.5]))["sha256"]
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    first = fingerprint(path)
    assert first["files"] == 1
    path.write_text(path.read_text() + "3.0,c\n")
    assert fingerprint(path)["sha256"] != first["sha256"]
