"""Is the model still working? Performance with delayed labels, data quality, data and concept
drift, root causes and alerts over the prediction logs; and `compare()` for any two data sets."""

from __future__ import annotations

from shipyard.monitoring._alerts import SEVERITIES, AlertManager
from shipyard.monitoring._drift import (
    DEFAULT_THRESHOLDS,
    METHODS,
    ColumnDrift,
    DriftReport,
    compare,
)
from shipyard.monitoring._html import render_html
from shipyard.monitoring._logs import LogQueries, Period
from shipyard.monitoring._monitor import DEFAULT_TARGETS, Monitor, MonitoringReport
from shipyard.monitoring._rules import Rule, parse_rule, parse_window

__all__ = [
    "DEFAULT_TARGETS",
    "DEFAULT_THRESHOLDS",
    "METHODS",
    "SEVERITIES",
    "AlertManager",
    "ColumnDrift",
    "DriftReport",
    "LogQueries",
    "Monitor",
    "MonitoringReport",
    "Period",
    "Rule",
    "compare",
    "parse_rule",
    "parse_window",
    "render_html",
]
