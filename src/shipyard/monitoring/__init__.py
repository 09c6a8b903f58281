"""Is the model still working? Performance with delayed labels, data quality, data and concept
drift, root causes and alerts over the prediction logs; and `compare()` for any two data sets.

`compare` and the drift types load at once; the log-based monitor (DuckDB, the registry) loads
on first use, so comparing two data sets stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shipyard.monitoring._drift import (
    DEFAULT_THRESHOLDS,
    METHODS,
    ColumnDrift,
    DriftReport,
    compare,
)
from shipyard.monitoring._fairness import (
    FAIRNESS_METRICS,
    Attribute,
    FairnessSpec,
    binary_outcomes,
    fairness_metrics,
    fairness_of,
    flat_metrics,
    group_metrics,
    load_fairness,
)
from shipyard.monitoring._holdout import TASK_METRICS, holdout_metrics
from shipyard.monitoring._kpis import Kpi, load_kpis, parse_kpi
from shipyard.monitoring._rules import Rule, parse_rule, parse_window

if TYPE_CHECKING:
    from shipyard.monitoring._alerts import SEVERITIES, AlertManager
    from shipyard.monitoring._checks import DEFAULT_TARGETS
    from shipyard.monitoring._html import render_html
    from shipyard.monitoring._logs import LogQueries, Period
    from shipyard.monitoring._monitor import Monitor
    from shipyard.monitoring._offload import ReportProcess
    from shipyard.monitoring._report import MonitoringReport, ReportRecord, VersionSummary, Window
    from shipyard.monitoring._windows import MAX_PERIODS

__all__ = [
    "DEFAULT_TARGETS",
    "DEFAULT_THRESHOLDS",
    "FAIRNESS_METRICS",
    "MAX_PERIODS",
    "METHODS",
    "SEVERITIES",
    "TASK_METRICS",
    "AlertManager",
    "Attribute",
    "ColumnDrift",
    "DriftReport",
    "FairnessSpec",
    "Kpi",
    "LogQueries",
    "Monitor",
    "MonitoringReport",
    "Period",
    "ReportProcess",
    "ReportRecord",
    "Rule",
    "VersionSummary",
    "Window",
    "binary_outcomes",
    "compare",
    "fairness_metrics",
    "fairness_of",
    "flat_metrics",
    "group_metrics",
    "holdout_metrics",
    "load_fairness",
    "load_kpis",
    "parse_kpi",
    "parse_rule",
    "parse_window",
    "render_html",
]

_LAZY = {
    "MAX_PERIODS": "shipyard.monitoring._windows",
    "SEVERITIES": "shipyard.monitoring._alerts",
    "AlertManager": "shipyard.monitoring._alerts",
    "render_html": "shipyard.monitoring._html",
    "LogQueries": "shipyard.monitoring._logs",
    "Period": "shipyard.monitoring._logs",
    "DEFAULT_TARGETS": "shipyard.monitoring._checks",
    "Monitor": "shipyard.monitoring._monitor",
    "MonitoringReport": "shipyard.monitoring._report",
    "ReportRecord": "shipyard.monitoring._report",
    "VersionSummary": "shipyard.monitoring._report",
    "Window": "shipyard.monitoring._report",
    "ReportProcess": "shipyard.monitoring._offload",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shipyard.monitoring' has no attribute {name!r}")
