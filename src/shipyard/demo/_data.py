"""A synthetic but realistic card-transaction data set for the running fraud example.

Deterministic for a seed. Amounts are log-normal per merchant category, fraud concentrates
at night, in risky categories, far from home, on new accounts and unusual amounts, at about
1.5% of transactions. `distance_from_home_km` is missing for ~2% of card-present rows.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

__all__ = ["CATEGORIES", "FEATURES", "LABEL", "drifting_week", "transactions"]

CATEGORIES = {
    # name: (share of transactions, log-mean amount, fraud risk)
    "grocery": (0.26, 3.3, -0.6),
    "restaurants": (0.18, 3.5, -0.4),
    "fuel": (0.12, 3.7, 0.0),
    "online_retail": (0.16, 4.1, 0.9),
    "electronics": (0.06, 5.2, 1.3),
    "travel": (0.05, 5.6, 0.8),
    "gaming": (0.04, 3.2, 1.6),
    "jewelry": (0.02, 5.8, 1.8),
    "pharmacy": (0.07, 3.1, -0.5),
    "utilities": (0.04, 4.3, -1.0),
}

FEATURES = [
    "transaction_amount",
    "hour_of_day",
    "merchant_category",
    "customer_age",
    "account_age_days",
    "num_tx_last_24h",
    "avg_amount_30d",
    "distance_from_home_km",
    "is_foreign",
    "card_present",
    "device_risk_score",
]
LABEL = "is_fraud"


def transactions(
    n: int,
    *,
    seed: int = 7,
    start: datetime = datetime(2026, 10, 1),
    days: float = 28.0,
    fraud_rate: float = 0.015,
) -> pd.DataFrame:
    """`n` transactions spread over `days` from `start`, with an `is_fraud` label."""
    rng = np.random.default_rng(seed)
    names = list(CATEGORIES)
    shares = np.array([CATEGORIES[c][0] for c in names])
    category_idx = rng.choice(len(names), size=n, p=shares / shares.sum())
    log_mean = np.array([CATEGORIES[c][1] for c in names])[category_idx]
    risk = np.array([CATEGORIES[c][2] for c in names])[category_idx]

    customer_id = rng.integers(1, max(n // 20, 50), size=n)
    customer_age = np.clip(rng.normal(41, 13, n), 18, 90).round()
    account_age_days = rng.gamma(2.2, 420.0, n).astype(np.int64) + 1
    avg_amount_30d = np.exp(log_mean + rng.normal(0, 0.35, n))
    amount = np.exp(log_mean + rng.normal(0, 0.9, n))
    hour = (rng.normal(14, 4.5, n) % 24).astype(np.int64)
    num_tx_24h = rng.poisson(2.5, n).astype(np.int64)
    is_foreign = (rng.random(n) < 0.04).astype(np.int64)
    card_present = (rng.random(n) < np.where(np.isin(category_idx, [3, 6]), 0.05, 0.7)).astype(
        np.int64
    )
    distance = rng.exponential(12.0, n) + is_foreign * rng.exponential(800.0, n)
    device_risk = rng.beta(1.4, 9.0, n)

    night = (hour <= 4) | (hour >= 23)
    z = (
        risk
        + 1.1 * np.log1p(amount / avg_amount_30d)
        + 1.0 * night
        + 1.3 * is_foreign
        + 0.45 * np.log1p(distance / 50.0)
        - 0.55 * np.log1p(account_age_days / 60.0)
        + 0.25 * num_tx_24h
        + 5.0 * device_risk
        - 0.9 * card_present
        + rng.normal(0, 0.6, n)
    )
    intercept = _intercept_for_rate(z, fraud_rate)
    is_fraud = (rng.random(n) < 1.0 / (1.0 + np.exp(-(z + intercept)))).astype(np.int64)

    distance = distance.round(2)
    missing = (rng.random(n) < 0.03) & (card_present == 1)
    distance[missing] = np.nan

    offsets = np.sort(rng.random(n)) * days * 86400.0
    timestamps = pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s")
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{seed}-{i:07d}" for i in range(n)],
            "timestamp": timestamps,
            "customer_id": [f"c{c:06d}" for c in customer_id],
            "transaction_amount": amount.round(2),
            "hour_of_day": hour,
            "merchant_category": np.array(names, dtype=object)[category_idx],
            "customer_age": customer_age,
            "account_age_days": account_age_days,
            "num_tx_last_24h": num_tx_24h,
            "avg_amount_30d": avg_amount_30d.round(2),
            "distance_from_home_km": distance,
            "is_foreign": is_foreign,
            "card_present": card_present,
            "device_risk_score": device_risk.round(4),
            LABEL: is_fraud,
        }
    )


def _intercept_for_rate(z: np.ndarray, rate: float) -> float:
    """Bisect the intercept that gives the wanted expected positive rate."""
    lo, hi = -40.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (1.0 / (1.0 + np.exp(-(z + mid)))).mean() > rate:
            hi = mid
        else:
            lo = mid
    return lo


def drifting_week(
    n: int,
    week: int,
    *,
    start: datetime,
    seed: int = 100,
    amount_inflation: float = 1.0,
    card_testing_share: float = 0.0,
) -> pd.DataFrame:
    """One week of traffic after training, with two kinds of change a fraud team meets.

    `amount_inflation` scales every amount (a seasonal shift: data drift the monitor should
    name). `card_testing_share` of the rows become a fraud pattern the model never saw: small
    card-not-present purchases at online and gaming merchants from new accounts, all fraud
    (concept drift: the model misses them while most inputs look as before).
    """
    week_start = start + pd.Timedelta(days=7 * week)
    frame = transactions(n, seed=seed + week, start=week_start, days=7.0)
    frame["transaction_amount"] = (frame["transaction_amount"] * amount_inflation).round(2)
    frame["avg_amount_30d"] = (frame["avg_amount_30d"] * amount_inflation).round(2)
    rng = np.random.default_rng(seed + 1000 + week)
    testing = rng.random(n) < card_testing_share
    k = int(testing.sum())
    if k:
        frame.loc[testing, "transaction_amount"] = rng.uniform(1.0, 25.0, k).round(2)
        frame.loc[testing, "merchant_category"] = rng.choice(["online_retail", "gaming"], k)
        frame.loc[testing, "card_present"] = 0
        frame.loc[testing, "is_foreign"] = 0
        frame.loc[testing, "distance_from_home_km"] = rng.exponential(8.0, k).round(2)
        frame.loc[testing, "hour_of_day"] = rng.integers(9, 21, k)
        frame.loc[testing, "account_age_days"] = rng.integers(30, 400, k)
        frame.loc[testing, "device_risk_score"] = rng.beta(1.4, 9.0, k).round(4)
        frame.loc[testing, LABEL] = 1
    return frame
