"""The running fraud example: synthetic card transactions and the `shipyard demo` story."""

from __future__ import annotations

from shipyard.demo._data import CATEGORIES, FEATURES, LABEL, transactions
from shipyard.demo._story import DemoResult, run_demo

__all__ = ["CATEGORIES", "FEATURES", "LABEL", "DemoResult", "run_demo", "transactions"]
