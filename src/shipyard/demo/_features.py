"""The demo's feature-store act: the seed's fraud features defined once as time-window
aggregations over the month's transactions and fraud reports, a point-in-time training set,
a model served by entity keys, and the check that serving sees what training saw."""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shipyard.access import KeyStore
from shipyard.core import Settings
from shipyard.features import FeatureStore, load_definitions
from shipyard.registry import Registry

__all__ = ["FEATURE_MODEL", "FeaturesResult", "feature_store_act"]

FEATURE_MODEL = "fraud-detector-fs"
STORE_FEATURES = [
    "customer_activity:customer_avg_transaction_amount_30d",
    "customer_activity:customer_tx_count_7d",
    "customer_profile:customer_account_age_days",
    "merchant_risk:merchant_fraud_rate_7d",
]
REQUEST_FIELDS = [
    "transaction_amount",
    "hour_of_day",
    "is_foreign",
    "card_present",
    "device_risk_score",
]
COLUMNS = [*REQUEST_FIELDS, *(ref.split(":")[1] for ref in STORE_FEATURES)]
REPORT_DELAY = pd.Timedelta(days=2)  # a fraud report arrives two days after the purchase

DEFINITIONS = '''
"""The fraud team's features, defined once: training sets and serving both read them."""
from shipyard.features import Aggregation, Entity, Feature, FeatureView, FileSource

customer = Entity("customer", join_keys=["customer_id"])
merchant = Entity("merchant_category", join_keys=["merchant_category"])

customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    source=FileSource("{data}/transactions.parquet"),
    timestamp_field="timestamp",
    aggregations=[
        Aggregation("transaction_amount", "mean", "30d", name="customer_avg_transaction_amount_30d"),
        Aggregation("transaction_amount", "count", "7d", name="customer_tx_count_7d"),
    ],
    owner="fraud-team",
    description="what each card holder usually spends, and how often",
)
customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    source=FileSource("{data}/transactions.parquet"),
    timestamp_field="timestamp",
    # the newest known value, renamed by a SQL transform (the same query offline and online)
    transform="SELECT *, account_age_days AS customer_account_age_days FROM source",
    features=[Feature("customer_account_age_days", "int")],
    owner="fraud-team",  # no TTL: the demo's month has a fixed date, and it ages
)
merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    # reports arrive after the purchase: a window over report times never sees the future
    source=FileSource("{data}/fraud_reports.parquet"),
    timestamp_field="reported_at",
    aggregations=[Aggregation("is_fraud", "mean", "7d", name="merchant_fraud_rate_7d")],
    owner="fraud-team",
)
'''


@dataclass
class FeaturesResult:
    """What the act measured."""

    views: list[str] = field(default_factory=list)
    training_rows: int = 0
    nulls: dict[str, int] = field(default_factory=dict)
    auc: float = 0.0
    entities_written: int = 0
    served: int = 0
    same_as_training: bool = False


def feature_store_act(
    settings: Settings, data: pd.DataFrame, cut: int, url: str, console: Console
) -> FeaturesResult:
    """Define, train, materialize and serve the month's features (the server at `url` picks
    the new model up); prints each step."""
    result = FeaturesResult()
    folder = Path(settings.home) / "feature-data"
    folder.mkdir(parents=True, exist_ok=True)
    events = data.assign(timestamp=pd.to_datetime(data["timestamp"], utc=True))
    events[
        ["customer_id", "merchant_category", "timestamp", "transaction_amount", "account_age_days"]
    ].to_parquet(folder / "transactions.parquet")
    events.assign(reported_at=events["timestamp"] + REPORT_DELAY)[
        ["merchant_category", "reported_at", "is_fraud"]
    ].to_parquet(folder / "fraud_reports.parquet")
    module = folder / "features.py"
    module.write_text(textwrap.dedent(DEFINITIONS).replace("{data}", str(folder)))

    with Registry.from_settings(settings) as registry, FeatureStore(registry, settings) as store:
        changes = store.apply(load_definitions(module))
        result.views = [c["view"] for c in changes]
        rows = events[
            ["customer_id", "merchant_category", "timestamp", "is_fraud", *REQUEST_FIELDS]
        ]
        built = store.training_set(rows, STORE_FEATURES, timestamp_column="timestamp")
        frame = built.to_pandas()
        result.training_rows, result.nulls = built.rows, built.nulls
        train, test = frame.iloc[:cut], frame.iloc[cut:]
        model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(train[COLUMNS], train["is_fraud"])
        result.auc = float(
            roc_auc_score(test["is_fraud"], model.predict_proba(test[COLUMNS])[:, 1])
        )
        console.print(
            f"[green]✓[/] feature store: applied {', '.join(result.views)} (aggregations over the "
            f"month's transactions and fraud reports); a point-in-time training set of "
            f"{built.rows:,} rows in {built.seconds:.2f} s, every row kept "
            f"({', '.join(f'{v}: {n:,} without history' for v, n in built.nulls.items())}); "
            f"AUC {result.auc:.3f} on the last week"
        )
        end = events["timestamp"].max().ceil("s").to_pydatetime()
        version = registry.register(
            model, name=FEATURE_MODEL, sample=train[COLUMNS].iloc[:2000],
            description="fraud model on store features, served by entity keys",
            lineage={"feature_store": built.lineage}, aliases=["production"],
        )  # fmt: skip
        runs = store.materialize(end=end)
        result.entities_written = sum(r["entities_written"] for r in runs)
        _, token = KeyStore(registry.database, actor="demo").create(
            "predict", model=FEATURE_MODEL, name="checkout-service (features)",
            feature_views=["customer_activity", "customer_profile", "merchant_risk"],
        )  # fmt: skip
        console.print(
            f"[green]✓[/] registered {version.ref} with its features' lineage; materialized "
            f"{result.entities_written:,} entities into the online store (as of {end:%Y-%m-%d %H:%M})"
        )
        sample = test.iloc[-3:]
        requests = [
            {"customer_id": r["customer_id"], "merchant_category": r["merchant_category"],
             **{f: _plain(r[f]) for f in REQUEST_FIELDS}}
            for _, r in sample.iterrows()
        ]  # fmt: skip
        answer = _predict(url, token, requests)
        result.served = len(answer["predictions"])
        # what training would compute for these entities as of the materialization
        offline = store.training_set(
            pd.DataFrame(requests)[["customer_id", "merchant_category"]].assign(timestamp=end),
            STORE_FEATURES,
            timestamp_column="timestamp",
        ).to_pandas()
        online = store.get_online(requests, STORE_FEATURES)
        result.same_as_training = all(
            _same(online.values[i][name], offline.at[i, name])
            for i in range(len(requests))
            for name in online.values[i]
        )
    first = requests[0]
    console.print(
        f"[green]✓[/] served by keys: POST /v1/models/{FEATURE_MODEL}/predict with "
        f'{{"customer_id": "{first["customer_id"]}", "merchant_category": "{first["merchant_category"]}", '
        f"amount, hour, ...}}: the server looked up "
        f"avg 30d {online.values[0]['customer_avg_transaction_amount_30d']:.2f}, "
        f"{online.values[0]['customer_tx_count_7d']} purchases in 7d, account age "
        f"{online.values[0]['customer_account_age_days']} days, merchant fraud rate "
        f"{online.values[0]['merchant_fraud_rate_7d']:.2%}; score "
        f"{answer['predictions'][0]['score']:.3f}. Online vector = training vector: "
        f"{'yes' if result.same_as_training else 'NO'} "
        "(shipyard features list / show / training-set / materialize / get)"
    )
    return result


def _predict(url: str, token: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The server's answer, once it has picked up the new model and key (it re-reads them
    every half second): asked again until then, for at most 15 s."""
    deadline = time.monotonic() + 15.0
    with httpx.Client(base_url=url, timeout=10.0) as http:
        while True:
            answer = http.post(
                f"/v1/models/{FEATURE_MODEL}/predict",
                json={"instances": records},
                headers={"Authorization": f"Bearer {token}"},
            )
            if answer.status_code == 200:
                body: dict[str, Any] = answer.json()
                return body
            if answer.status_code not in (401, 404, 503) or time.monotonic() > deadline:
                answer.raise_for_status()
                raise RuntimeError(
                    f"{FEATURE_MODEL} answered {answer.status_code}: {answer.text[:200]}"
                )
            time.sleep(0.1)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and np.isnan(a)):
        return b is None or (isinstance(b, float) and np.isnan(b))
    return bool(a == b)
