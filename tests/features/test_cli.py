"""`shipyard features ...` as a user runs it: real processes, JSON for scripts, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from tests.cli.test_cli import shipyard
from tests.features.conftest import entity_rows, transactions


def test_the_features_commands(tmp_path: Path, definitions_file: Path) -> None:
    home = tmp_path / "home"
    dry = shipyard(home, "features", "apply", str(definitions_file), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would create customer_daily (version 1)" in dry.stdout
    applied = json.loads(
        shipyard(home, "features", "apply", str(definitions_file), "--json").stdout
    )
    assert {c["action"] for c in applied} == {"create"}
    listed = json.loads(shipyard(home, "features", "list", "--json").stdout)
    assert [v["name"] for v in listed] == ["customer_activity", "customer_daily", "merchant_risk"]
    definitions_file.write_text(definitions_file.read_text().replace('ttl="2d"', 'ttl="1d"'))
    update = shipyard(home, "features", "apply", str(definitions_file))
    assert "update customer_daily (version 2)" in update.stdout
    assert "ttl_seconds: 172800 -> 86400" in update.stdout
    assert (
        shipyard(home, "features", "diff", "customer_daily", "1", "--json").stdout.count(
            "ttl_seconds"
        )
        == 1
    )

    entities = tmp_path / "entities.parquet"
    entity_rows(transactions(), n=100).to_parquet(entities)
    out = tmp_path / "train.parquet"
    built = shipyard(home, "features", "training-set", str(entities), "-f",
                     "customer_daily:*,merchant_risk:merchant_fraud_rate_7d", "-o", str(out), "--json")  # fmt: skip
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    assert summary["rows"] == pq.read_metadata(out).num_rows == len(pd.read_parquet(entities))
    assert set(summary["nulls"]) == {"customer_daily", "merchant_risk"}

    runs = json.loads(
        shipyard(
            home, "features", "materialize", "customer_daily", "--end", "2026-06-20", "--json"
        ).stdout
    )
    assert runs[0]["mode"] == "full"
    assert runs[0]["entities_written"] > 0
    got = json.loads(
        shipyard(
            home, "features", "get", "-f", "customer_daily:*", "-e", "customer_id=5", "--json"
        ).stdout
    )
    assert set(got["values"]) == {"daily_spend", "daily_count"}
    assert got["status"]["customer_daily"] in ("ok", "stale")  # as of today, far past June

    limited = shipyard(
        home, "keys", "create", "--scope", "read", "--features", "merchant_risk", "--json"
    )
    assert json.loads(limited.stdout)["key"]["feature_views"] == ["merchant_risk"]


def test_bad_input_exits_2_with_a_message(tmp_path: Path, definitions_file: Path) -> None:
    home = tmp_path / "home"
    missing = shipyard(home, "features", "apply", str(tmp_path / "nope.py"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    shipyard(home, "features", "apply", str(definitions_file))
    not_parquet = shipyard(home, "features", "training-set", str(definitions_file), "-f",
                           "customer_daily:*", "-o", str(tmp_path / "o.parquet"))  # fmt: skip
    assert not_parquet.returncode == 2
    assert "is not a readable Parquet file" in not_parquet.stderr
    bad_ref = shipyard(
        home, "features", "training-set", str(definitions_file), "-f", "x", "-o", "o.parquet"
    )
    assert bad_ref.returncode == 2
    assert "'x' is not view:feature" in bad_ref.stderr
    unknown = shipyard(home, "features", "show", "nope")
    assert unknown.returncode == 3
    assert "no feature view named 'nope'" in unknown.stderr
    entity = shipyard(home, "features", "get", "-f", "customer_daily:*", "-e", "customer_id")
    assert entity.returncode == 2
    assert "is not key=value" in entity.stderr
    no_version = shipyard(home, "features", "materialize", "customer_daily@9")
    assert no_version.returncode == 3
    assert "feature view 'customer_daily' has no version 9" in no_version.stderr
    not_a_view = shipyard(home, "features", "materialize", "customer_daily@x")
    assert not_a_view.returncode == 2
    assert "'customer_daily@x' is not a view name (or view@VERSION)" in not_a_view.stderr
    assert "Traceback" not in no_version.stderr + not_a_view.stderr
