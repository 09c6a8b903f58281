"""Definitions: validated where they are declared, stored as versions (a change is a new
version, the old one stays readable), with the diff shown, audited, and bad sources refused
at apply naming the view, the column and the fix."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from shipyard.core.errors import InvalidInput, NotFound, UserCodeFailed
from shipyard.features import (
    Aggregation,
    Entity,
    FeatureStore,
    FeatureView,
    FileSource,
    load_definitions,
)
from shipyard.store import tables

CUSTOMER = Entity("customer", join_keys=["customer_id"])


def _view(**changes: object) -> FeatureView:
    fields: dict[str, object] = {
        "name": "v", "entities": [CUSTOMER], "source": FileSource("x.parquet"), "features": ["a"],
    }  # fmt: skip
    fields.update(changes)
    return FeatureView(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ttl": "two days"}, "is not a duration"),
        ({"ttl": "0d"}, "is not a duration"),
        ({"name": "my view"}, "not a valid name"),
        ({"entities": []}, "needs at least one Entity"),
        ({"features": []}, "either `features`"),
        ({"aggregations": [Aggregation("amount", "mean", "7d")]}, "not both"),
        ({"features": ["a", "a"]}, "declares a twice"),
        ({"features": ["customer_id"]}, "is a join key"),
        ({"on_missing": "ignore"}, "on_missing must be"),
        ({"source": "x.parquet"}, "source must be"),
        ({"transform": lambda frame: frame}, "module-level function"),
    ],
)
def test_a_bad_definition_is_refused_where_it_is_declared(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        _view(**changes).spec()


def test_aggregations_are_checked_and_named() -> None:
    with pytest.raises(InvalidInput, match="use one of mean, sum"):
        Aggregation("amount", "median", "7d")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not a duration"):
        Aggregation("amount", "mean", "a week")
    assert Aggregation("amount", "mean", "30d").feature == "amount_mean_30d"
    assert Aggregation("amount", "count", "7d").dtype == "int"
    merchant = Entity("merchant", join_keys=["merchant_id"])
    with pytest.raises(InvalidInput, match="groups by 'merchant'"):
        _view(features=[], aggregations=[Aggregation("amount", "sum", "1d", group_by=merchant)])
    with pytest.raises(InvalidInput, match="group by one entity"):
        _view(entities=[CUSTOMER, merchant], features=[],
              aggregations=[Aggregation("amount", "sum", "1d")])  # fmt: skip


def test_versions_diff_and_audit(store: FeatureStore, definitions_file: Path) -> None:
    definitions = load_definitions(definitions_file)
    again = store.apply(definitions)
    assert {c["action"] for c in again} == {"unchanged"}
    changed = (
        definitions_file.read_text()
        .replace('ttl="2d"', 'ttl="3d"')
        .replace('features=["daily_spend", "daily_count"]', 'features=["daily_spend"]')
    )
    definitions_file.write_text(changed)
    plan = store.plan(load_definitions(definitions_file))
    update = next(c for c in plan if c["view"] == "customer_daily")
    assert update["action"] == "update"
    assert update["version"] == 2
    assert update["diff"] == ["- features.daily_count", "ttl_seconds: 172800 -> 259200"]
    assert store.view("customer_daily")["version"] == 1  # a plan stores nothing
    applied = store.apply(load_definitions(definitions_file))
    assert [c["version"] for c in applied if c["view"] == "customer_daily"] == [2]
    assert [v["version"] for v in store.versions("customer_daily")] == [1, 2]
    assert store.view("customer_daily", 1)["spec"]["ttl_seconds"] == 172_800  # still readable
    assert store.diff("customer_daily", 1) == update["diff"]
    # training sets may pin the old version
    rows = pd.DataFrame(
        {"customer_id": [1], "event_timestamp": [pd.Timestamp("2026-05-20", tz="UTC")]}
    )
    assert "daily_count" in store.training_set(rows, ["customer_daily@1:*"]).columns
    with pytest.raises(InvalidInput, match="has no feature daily_count"):
        store.training_set(rows, ["customer_daily:daily_count"])
    with store.registry.database.transaction() as conn:
        events = conn.execute(
            select(tables.audit_events.c.action, tables.audit_events.c.details).where(
                tables.audit_events.c.action == "features.apply"
            )
        ).all()
    assert [e.details["view"] for e in events].count("customer_daily") == 2
    with pytest.raises(NotFound, match="no version 7"):
        store.view("customer_daily", 7)


def test_a_source_lacking_a_column_is_refused_at_apply(
    store: FeatureStore, tmp_path: Path, data_dir: Path
) -> None:
    module = tmp_path / "bad.py"
    module.write_text(
        "from shipyard.features import Entity, FeatureView, FileSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        f"bad = FeatureView(name='bad', entities=[c], source=FileSource('{data_dir}/snapshots.parquet'),\n"
        "    features=['daily_spend', 'weekly_spend'])\n"
    )
    with pytest.raises(
        InvalidInput, match=r"view 'bad': its source has no column weekly_spend \(feature\)"
    ):
        store.apply(load_definitions(module))
    assert "bad" not in [v["name"] for v in store.views()]  # nothing stored


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            pd.DataFrame(
                {
                    "customer_id": [1, 1],
                    "event_timestamp": [pd.Timestamp("2026-05-01", tz="UTC")] * 2,
                    "x": [1.0, 2.0],
                }
            ),
            "repeat an entity",
        ),
        (
            pd.DataFrame(
                {
                    "customer_id": [1, 2],
                    "event_timestamp": [pd.Timestamp("2026-05-01", tz="UTC"), None],
                    "x": [1.0, 2.0],
                }
            ),
            "have no 'event_timestamp'",
        ),
        (
            pd.DataFrame({"customer_id": [1], "event_timestamp": [3.5], "x": [1.0]}),
            "not a timestamp",
        ),
    ],
)
def test_a_source_with_bad_rows_is_refused_at_apply(
    store: FeatureStore, tmp_path: Path, frame: pd.DataFrame, message: str
) -> None:
    frame.to_parquet(tmp_path / "rows.parquet")
    module = tmp_path / "rows.py"
    module.write_text(
        "from shipyard.features import Entity, FeatureView, FileSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        f"rows = FeatureView(name='rows', entities=[c], source=FileSource('{tmp_path}/rows.parquet'),\n"
        "    features=['x'])\n"
    )
    with pytest.raises(InvalidInput, match=message):
        store.apply(load_definitions(module))


def test_modules_and_yaml(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_definitions(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("import nothing_here_at_all\n")
    with pytest.raises(UserCodeFailed, match="ModuleNotFoundError"):
        load_definitions(broken)
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(InvalidInput, match="declares no FeatureView"):
        load_definitions(empty)
    yaml_file = tmp_path / "shipyard.yaml"
    yaml_file.write_text(
        "features:\n"
        "  entities:\n    - {name: customer, join_keys: [customer_id]}\n"
        "  views:\n"
        "    - name: customer_activity\n"
        "      entities: [customer]\n"
        f"      source: {{path: {data_dir}/transactions.parquet}}\n"
        "      aggregations:\n"
        "        - {column: amount, function: mean, window: 30d, name: avg_30d}\n"
    )
    found = load_definitions(yaml_file)
    assert [v.name for v in found.views] == ["customer_activity"]
    assert found.views[0].all_features[0].name == "avg_30d"
    yaml_file.write_text(yaml_file.read_text().replace("entities: [customer]", "entities: [shop]"))
    with pytest.raises(InvalidInput, match="uses the entity shop"):
        load_definitions(yaml_file)


def test_a_transform_runs_offline_and_online_and_its_change_is_a_new_version(
    store: FeatureStore, tmp_path: Path, data_dir: Path
) -> None:
    module = tmp_path / "shaped.py"
    source = (
        "from shipyard.features import Entity, FeatureView, FileSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        "def shape(frame):\n"
        "    frame['big_spender'] = frame['daily_spend'] > {cut}\n"
        "    return frame\n"
        f"shaped = FeatureView(name='shaped', entities=[c], source=FileSource('{data_dir}/snapshots.parquet'),\n"
        "    features=[], transform=shape, ttl='30d')\n"
    )
    module.write_text(
        source.replace("{cut}", "100").replace("features=[]", "features=[('big_spender')]")
    )
    store.apply(load_definitions(module))
    rows = pd.DataFrame({"customer_id": list(range(1, 61))}).assign(
        event_timestamp=pd.Timestamp("2026-06-30", tz="UTC")
    )
    offline = store.training_set(rows, ["shaped:big_spender"]).to_pandas()
    store.materialize(["shaped"], end=pd.Timestamp("2026-06-30", tz="UTC").to_pydatetime())
    store.clock = lambda: pd.Timestamp("2026-06-30", tz="UTC").to_pydatetime()
    online = store.get_online(rows[["customer_id"]].to_dict("records"), ["shaped:big_spender"])
    assert [v["big_spender"] for v in online.values] == [
        None if pd.isna(x) else bool(x) for x in offline["big_spender"]
    ]
    assert offline["big_spender"].dropna().nunique() == 2
    module.write_text(
        source.replace("{cut}", "50").replace("features=[]", "features=[('big_spender')]")
    )
    with pytest.raises(InvalidInput, match="changed since it was applied"):
        store.training_set(rows, ["shaped:big_spender"])
    assert [
        c["action"] for c in store.apply(load_definitions(module)) if c["view"] == "shaped"
    ] == ["update"]


def test_a_sql_transform_runs_offline_and_online(
    store: FeatureStore, tmp_path: Path, data_dir: Path
) -> None:
    module = tmp_path / "sql.py"
    module.write_text(
        "from shipyard.features import Entity, Feature, FeatureView, FileSource\n"
        "c = Entity('customer', join_keys=['customer_id'])\n"
        f"spend = FeatureView(name='spend_cents', entities=[c], source=FileSource('{data_dir}/snapshots.parquet'),\n"
        "    features=[Feature('cents', 'int')], ttl='30d',\n"
        "    transform='SELECT *, CAST(round(daily_spend * 100) AS BIGINT) AS cents FROM source')\n"
    )
    store.apply(load_definitions(module))
    at = pd.Timestamp("2026-06-30", tz="UTC")
    rows = pd.DataFrame({"customer_id": list(range(1, 61))}).assign(event_timestamp=at)
    offline = store.training_set(rows, ["spend_cents:cents"]).to_pandas()
    daily = store.training_set(rows, ["customer_daily:daily_spend"]).to_pandas()
    known = daily["daily_spend"].notna() & offline["cents"].notna()
    assert known.sum() > 0
    assert (offline.loc[known, "cents"] == (daily.loc[known, "daily_spend"] * 100).round()).all()
    store.materialize(["spend_cents"], end=at.to_pydatetime())
    store.clock = lambda: at.to_pydatetime()
    online = store.get_online(rows[["customer_id"]].to_dict("records"), ["spend_cents:cents"])
    assert [v["cents"] for v in online.values] == [
        None if pd.isna(x) else int(x) for x in offline["cents"]
    ]
    with pytest.raises(InvalidInput, match="starting with SELECT or WITH"):
        _view(transform="DROP TABLE source")


def test_an_aggregation_view_takes_no_ttl() -> None:
    with pytest.raises(InvalidInput, match="aggregations take no ttl"):
        _view(features=[], aggregations=[Aggregation("amount", "sum", "1d")], ttl="2d")


def test_a_new_description_is_no_new_version(store: FeatureStore, definitions_file: Path) -> None:
    """Values do not change when the owner or a description does: the version (and what is
    materialized for it) stays, its spec is updated in place."""
    definitions_file.write_text(
        definitions_file.read_text().replace('owner="fraud-team"', 'owner="risk-team"')
    )
    changes = store.apply(load_definitions(definitions_file))
    described = next(c for c in changes if c["view"] == "customer_daily")
    assert (described["action"], described["version"]) == ("describe", 1)
    assert described["diff"] == ["owner: 'fraud-team' -> 'risk-team'"]
    assert store.view("customer_daily")["spec"]["owner"] == "risk-team"
    assert [v["version"] for v in store.versions("customer_daily")] == [1]
