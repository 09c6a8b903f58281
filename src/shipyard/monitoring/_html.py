"""The monitoring report as one standalone HTML file: inline CSS and SVG charts, no scripts,
no fonts or libraries from the network, so it opens anywhere, offline, and can be mailed."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2933;background:#f7f9fb}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:14px;margin:16px 0 6px}
.sub{color:#52606d}.card{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:16px;margin:12px 0}
table{border-collapse:collapse;width:100%}td,th{padding:6px 8px;border-bottom:1px solid #eef0f3;text-align:left;vertical-align:top}
th{font-weight:600;color:#52606d;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.ok{color:#137333}.warning{color:#b06000}.failing{color:#c5221f}.unknown{color:#7b8794}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.badge.ok{background:#e6f4ea}.badge.warning{background:#fef7e0}.badge.failing{background:#fce8e6}.badge.unknown{background:#eef0f3}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
svg text{font:11px system-ui,sans-serif;fill:#52606d}.num{font-variant-numeric:tabular-nums}
"""
_BLUE, _ORANGE, _GREY = "#1a73e8", "#e8710a", "#9aa5b1"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _badge(status: str) -> str:
    label = {"ok": "OK", "warning": "warning", "failing": "failing"}.get(status, status)
    return f'<span class="badge {_e(status)}">{_e(label)}</span>'


def _line_chart(
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    target: float | None = None,
) -> str:
    """A small SVG line chart; None values leave gaps."""
    width, height, pad = 420, 180, 34
    values = [v for s in series.values() for v in s if v is not None] + (
        [target] if target is not None else []
    )
    if not values or not labels:
        return f"<div class='card'><h3>{_e(title)}</h3><p class='sub'>no data</p></div>"
    low, high = min(values), max(values)
    if high == low:
        high, low = high + 0.5 * (abs(high) or 1), low - 0.5 * (abs(low) or 1)
    n = len(labels)

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * (i / max(1, n - 1))

    def y(v: float) -> float:
        return height - pad + (height - 2 * pad) * -(v - low) / (high - low)

    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{_e(title)}">'
    ]
    for frac in (0, 0.5, 1):
        v = low + frac * (high - low)
        parts.append(
            f'<line x1="{pad}" x2="{width - pad}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eef0f3"/>'
        )
        parts.append(f'<text x="2" y="{y(v) + 4:.1f}">{_e(_fmt(v))}</text>')
    if target is not None:
        parts.append(
            f'<line x1="{pad}" x2="{width - pad}" y1="{y(target):.1f}" y2="{y(target):.1f}" stroke="#c5221f" stroke-dasharray="4 3"/>'
        )
        parts.append(
            f'<text x="{width - pad - 40}" y="{y(target) - 4:.1f}" style="fill:#c5221f">target</text>'
        )
    for colour, (name, data) in zip((_BLUE, _ORANGE, _GREY), series.items(), strict=False):
        segment: list[str] = []
        for i, point in enumerate(data):
            if point is None:
                if len(segment) > 1:
                    parts.append(
                        f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(segment)}"/>'
                    )
                segment = []
                continue
            v = float(point)
            segment.append(f"{x(i):.1f},{y(v):.1f}")
            parts.append(
                f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"><title>{_e(name)} {_e(labels[i])}: {_e(_fmt(v))}</title></circle>'
            )
        if len(segment) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(segment)}"/>'
            )
    for i in sorted({0, n // 2, n - 1}):
        parts.append(f'<text x="{x(i) - 20:.1f}" y="{height - 8}">{_e(labels[i])}</text>')
    legend = " ".join(
        f'<span style="color:{c}">&#9632; {_e(name)}</span>'
        for c, name in zip((_BLUE, _ORANGE, _GREY), series, strict=False)
    )
    parts.append("</svg>")
    return f"<div class='card'><h3>{_e(title)}</h3>{''.join(parts)}<div class='sub'>{legend}</div></div>"


def _bars(
    title: str, labels: Sequence[str], reference: Sequence[float], current: Sequence[float]
) -> str:
    """Side-by-side bars: the reference's share and the current share per bin or category."""
    width, height, pad = 420, 170, 28
    n = len(labels)
    if not n:
        return ""
    top = max([*reference, *current, 1e-9])
    slot = (width - 2 * pad) / n
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{_e(title)}">'
    ]
    for i in range(n):
        for j, (share, colour) in enumerate(((reference[i], _GREY), (current[i], _BLUE))):
            h = (height - 2 * pad) * share / top
            parts.append(
                f'<rect x="{pad + i * slot + j * slot / 2:.1f}" y="{height - pad - h:.1f}" width="{max(slot / 2 - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{_e(labels[i])}: {"reference" if j == 0 else "current"} {share:.1%}</title></rect>'
            )
    for i in sorted({0, n // 2, n - 1}):
        parts.append(f'<text x="{pad + i * slot:.1f}" y="{height - 8}">{_e(labels[i][:14])}</text>')
    parts.append("</svg>")
    legend = f'<span style="color:{_GREY}">&#9632; reference</span> <span style="color:{_BLUE}">&#9632; current</span>'
    return f"<div class='card'><h3>{_e(title)}</h3>{''.join(parts)}<div class='sub'>{legend}</div></div>"


def _drift_chart(columns: dict[str, Any]) -> str:
    """Each feature's effect size against its threshold (1.0 = the threshold)."""
    rows = sorted(columns.values(), key=lambda c: -(c["effect_size"] or 0) / (c["threshold"] or 1))
    if not rows:
        return ""
    width, bar = 420, 18
    height = 20 + bar * len(rows)
    top = max(1.5, *[(c["effect_size"] or 0) / (c["threshold"] or 1) for c in rows])
    scale = (width - 190) / top
    colours = {"ok": "#34a853", "warning": "#f9ab00", "drift": "#d93025"}
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="feature drift">'
    ]
    threshold_x = 170 + scale
    for i, c in enumerate(rows):
        rel = (c["effect_size"] or 0) / (c["threshold"] or 1)
        parts.append(f'<text x="0" y="{14 + i * bar}">{_e(c["column"][:24])}</text>')
        parts.append(
            f'<rect x="170" y="{4 + i * bar}" width="{max(rel * scale, 1):.1f}" height="{bar - 6}" fill="{colours[c["status"]]}">'
            f"<title>{_e(c['reason'])}</title></rect>"
        )
    parts.append(
        f'<line x1="{threshold_x:.1f}" x2="{threshold_x:.1f}" y1="0" y2="{height}" stroke="#52606d" stroke-dasharray="3 3"/>'
    )
    parts.append("</svg>")
    return (
        "<div class='card'><h3>Feature drift (effect size / threshold; dashed line = threshold)</h3>"
        f"{''.join(parts)}</div>"
    )


def _version_section(version: str, summary: dict[str, Any]) -> str:
    out = [
        f"<h2>Version {_e(version)} <span class='sub'>({', '.join(map(_e, summary.get('variants', [])))})</span></h2>"
    ]
    out.append(
        "<div class='card'><table><tr><th>check</th><th>value</th><th>target</th><th>status</th><th>note</th></tr>"
    )
    for check in summary.get("checks", []):
        out.append(
            f"<tr><td>{_e(check['name'])}</td><td class='num'>{_e(_fmt(check['value']))}</td>"
            f"<td class='num'>{_e(_fmt(check['target']))}</td><td>{_badge(check['status'])}</td><td class='sub'>{_e(check.get('note', ''))}</td></tr>"
        )
    out.append("</table></div>")
    windows = summary.get("windows", [])
    labels = [str(w["window_start"])[:16].replace("T", " ") for w in windows]
    accuracy_target = next(
        (c["target"] for c in summary.get("checks", []) if c["name"] == "accuracy"), None
    )
    charts = [
        _line_chart(
            "Accuracy: realised (labelled rows) and estimated (before labels)",
            labels,
            {
                "realised": [w.get("accuracy") for w in windows],
                "estimated": [w.get("estimated", {}).get("accuracy") for w in windows],
            },
            accuracy_target,
        ),
        _line_chart(
            "Recall and false-positive rate",
            labels,
            {
                "recall": [w.get("recall") for w in windows],
                "false-positive rate": [w.get("false_positive_rate") for w in windows],
            },
        ),
        _line_chart(
            "Volume (predictions per window)",
            labels,
            {"volume": [w.get("volume") for w in windows]},
        ),
        _line_chart(
            "Latency (ms)",
            labels,
            {
                "p50": [w.get("latency_p50") for w in windows],
                "p95": [w.get("latency_p95") for w in windows],
                "p99": [w.get("latency_p99") for w in windows],
            },
        ),
    ]
    columns = summary.get("drift", {}).get("columns", {})
    charts.append(_drift_chart(columns))
    for column in sorted(
        columns.values(), key=lambda c: -(c["effect_size"] or 0) / (c["threshold"] or 1)
    )[:4]:
        stats = column["stats"]
        if column["kind"] == "numeric" and stats.get("histogram"):
            hist = stats["histogram"]
            edges = hist["edges"]
            names = [f"{_fmt(edges[i])}" for i in range(len(edges) - 1)]
            charts.append(
                _bars(
                    f"{column['column']}: reference vs current ({column['status']})",
                    names,
                    hist["reference"],
                    hist["current"],
                )
            )
        elif column["kind"] == "categorical" and stats.get("shares"):
            shares = stats["shares"]
            charts.append(
                _bars(
                    f"{column['column']}: reference vs current ({column['status']})",
                    shares["categories"],
                    shares["reference"],
                    shares["current"],
                )
            )
    out.append(f"<div class='grid'>{''.join(charts)}</div>")
    root = summary.get("root_cause", {})
    if root.get("features") or root.get("segments"):
        out.append(
            "<div class='card'><h3>Root cause</h3><table><tr><th>what moved</th><th>detail</th></tr>"
        )
        for f in root.get("features", []):
            out.append(f"<tr><td>feature {_e(f['feature'])}</td><td>{_e(f['reason'])}</td></tr>")
        for s in root.get("segments", []):
            out.append(
                f"<tr><td>{_e(s['feature'])} = {_e(s['segment'])}</td><td>accuracy {_fmt(s['accuracy_before'])} &rarr; "
                f"{_fmt(s['accuracy_now'])} over {s['labelled']} labelled rows</td></tr>"
            )
        out.append("</table></div>")
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    """The whole report (as `MonitoringReport.to_dict()` gives it) as a standalone page."""
    title = f"shipyard monitoring: {report['model']}"
    period = report["period"]
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1><div class='sub'>windows of {_e(report['window'])} from {_e(period['start'])} to "
        f"{_e(period['end'])}; computed {_e(report['computed_at'])}</div>",
    ]
    if not report["versions"]:
        parts.append("<div class='card'>No predictions were logged in this period.</div>")
    for version, summary in sorted(report["versions"].items(), key=lambda kv: -int(kv[0])):
        parts.append(_version_section(version, summary))
    if report.get("alerts"):
        parts.append(
            "<h2>Alerts from this run</h2><div class='card'><table><tr><th>alert</th><th>status</th><th>rule</th><th>value</th></tr>"
        )
        for alert in report["alerts"]:
            parts.append(
                f"<tr><td>{_e(alert['id'])}</td><td>{_e(alert['status'])}</td><td>{_e(alert['evidence'].get('rule', ''))}</td>"
                f"<td class='num'>{_e(_fmt(alert['value']))}</td></tr>"
            )
        parts.append("</table></div>")
    parts.append("</body></html>")
    return "".join(parts)
