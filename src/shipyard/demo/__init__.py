"""The running fraud example: synthetic card transactions and the `shipyard demo` story."""

from __future__ import annotations

from shipyard.demo._data import CATEGORIES, FEATURES, LABEL, drifting_week, transactions
from shipyard.demo._replay import MonthResult, replay_month
from shipyard.demo._story import DemoResult, run_demo

__all__ = [
    "CATEGORIES",
    "FEATURES",
    "LABEL",
    "DemoResult",
    "MonthResult",
    "drifting_week",
    "replay_month",
    "run_demo",
    "transactions",
]
