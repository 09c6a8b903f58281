"""The report's page: charts whose axes fit their values and whose labels stay inside the
picture, and text from a report that can never become markup."""

from __future__ import annotations

from shipyard.monitoring import render_html
from shipyard.monitoring._html import line_chart


def _axis(chart: object) -> list[float]:
    return [float(g.text) for g in chart.grid]  # type: ignore[attr-defined]


def test_a_flat_series_gets_an_axis_around_its_value_not_half_its_size() -> None:
    chart = line_chart("accuracy", ["mon", "tue", "wed"], {"accuracy": [0.9, 0.9, 0.9]})
    assert min(_axis(chart)) >= 0.8
    assert max(_axis(chart)) <= 1.0


def test_rates_never_get_a_negative_axis() -> None:
    chart = line_chart("error rate", ["mon", "tue"], {"rate": [0.0, 0.02]})
    assert min(_axis(chart)) == 0.0


def test_a_chart_with_only_a_target_and_no_values_says_no_data() -> None:
    chart = line_chart("accuracy", ["mon", "tue"], {"accuracy": [None, None]}, target=0.9)
    assert chart.empty
    assert chart.target is None


def test_axis_values_stand_left_of_every_point_and_the_last_label_ends_inside() -> None:
    labels = ["2026-11-01 00:00", "2026-11-02 00:00", "2026-11-03 00:00"]
    chart = line_chart("latency", labels, {"p95": [10.0, 12.0, None]})
    first_point = min(p.x for s in chart.series for p in s.points)
    assert all(g.anchor == "end" and g.x < first_point for g in chart.grid)
    last = chart.x_labels[-1]
    assert (last.text, last.anchor) == (labels[-1], "end")
    assert last.x <= chart.width
    assert chart.series[0].lines == [chart.series[0].points]  # a None ends the line


def _report(hostile: str) -> dict[str, object]:
    drift = {
        "column": hostile, "kind": "categorical", "status": "drift", "effect_size": 0.5,
        "threshold": 0.1, "reason": hostile,
        "stats": {"shares": {"categories": [hostile, "b"], "reference": [0.5, 0.5], "current": [0.9, 0.1]}},
    }  # fmt: skip
    summary = {
        "task": "binary", "variants": [hostile],
        "checks": [{"name": "accuracy", "value": 0.8, "target": 0.9, "status": "failing", "note": hostile}],
        "windows": [{"window_start": "2026-11-01T00:00:00+00:00", "accuracy": 0.8, "volume": 10}],
        "drift": {"columns": {hostile: drift}},
        "root_cause": {"features": [{"feature": hostile, "reason": hostile}], "segments": []},
    }  # fmt: skip
    return {
        "model": "m", "window": "1d", "computed_at": "2026-11-02T00:00:00+00:00",
        "period": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-02T00:00:00+00:00"},
        "versions": {"1": summary},
        "alerts": [{"id": 1, "status": "firing", "value": 0.8, "evidence": {"rule": hostile}}],
    }  # fmt: skip


def test_text_from_a_report_is_escaped_everywhere_it_appears() -> None:
    hostile = '<script>alert("x")</script>'
    page = render_html(_report(hostile))
    assert "<script>" not in page
    assert page.count("&lt;script&gt;") >= 6  # variant, note, drift row, bars, cause, alert
    assert page.startswith("<!doctype html>")
    assert '<span class="badge failing">failing</span>' in page
