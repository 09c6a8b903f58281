"""The running fraud example: synthetic card transactions and the `shipyard demo` story."""

from __future__ import annotations

from shipyard.demo._data import CATEGORIES, FEATURES, LABEL, drifting_week, transactions
from shipyard.demo._loop import SPEC, LoopResult, close_the_loop
from shipyard.demo._replay import MonthResult, replay_month, replay_weeks
from shipyard.demo._server import running_server, serve
from shipyard.demo._story import DemoResult, project_file, run_demo

__all__ = [
    "CATEGORIES",
    "FEATURES",
    "LABEL",
    "SPEC",
    "DemoResult",
    "LoopResult",
    "MonthResult",
    "close_the_loop",
    "drifting_week",
    "project_file",
    "replay_month",
    "replay_weeks",
    "run_demo",
    "running_server",
    "serve",
    "transactions",
]
