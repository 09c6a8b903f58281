#!/usr/bin/env python3
"""bench/stream/results/*.json -> bench/stream/RESULTS.md and the stream section of
bench/RESULTS.md (between `<!-- stream:begin -->` and `<!-- stream:end -->`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAIN_RESULTS = HERE.parent / "RESULTS.md"
GOAL = 0.70  # events/s with scoring over a bare read-and-acknowledge loop


def _vs_hand(t: dict, label: str) -> str:
    return f"{t[f'{label}_vs_hand']:.0%}" if "hand" in t else "-"


def table(results: dict[str, dict]) -> list[str]:
    lines = [
        "| broker | bare loop ev/s | hand loop ev/s | vs bare | shipyard ev/s | vs bare "
        "| vs hand | shipyard --no-log ev/s | vs bare | vs hand | shipyard CPU s | peak RSS MB "
        "| e2e p50 ms | p95 ms | p99 ms | at rate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t, lat = r["throughput"], r["latency"]
        hand = t.get("hand")

        lines.append(
            f"| {name} | {t['bare']['events_per_second']:,.0f} | "
            + (
                f"{hand['events_per_second']:,.0f} | {t['hand_vs_bare']:.0%} | "
                if hand
                else "- | - | "
            )
            + f"{t['shipyard']['events_per_second']:,.0f} | {t['shipyard_vs_bare']:.0%} | "
            f"{_vs_hand(t, 'shipyard')} | "
            f"{t['shipyard_no_log']['events_per_second']:,.0f} | {t['shipyard_no_log_vs_bare']:.0%} | "
            f"{_vs_hand(t, 'shipyard_no_log')} | "
            f"{t['shipyard']['process_cpu_seconds']:.1f} | {t['shipyard']['peak_rss_mb']:.0f} | "
            f"{lat['p50_ms']:.1f} | {lat['p95_ms']:.1f} | {lat['p99_ms']:.1f} | "
            f"{lat['rate']:,.0f} ev/s for {lat['seconds']:.0f} s |"
        )
    return lines


def main() -> None:
    results = {p.stem: json.loads(p.read_text()) for p in sorted((HERE / "results").glob("*.json"))}
    if not results:
        raise SystemExit("no results: run bench/stream/run.py first")
    meta = next(iter(results.values()))["meta"]
    met = {name: r["throughput"]["shipyard_vs_bare"] >= GOAL for name, r in results.items()}
    body = [
        "## Streaming",
        "",
        f"Code `{meta['code']}`, run {meta['started']}; {meta['cpus']} CPUs ({meta['cpu']}); "
        f"{meta['events']:,} events of 30 float features (JSON) per throughput run; the LR model.",
        "",
        "Throughput: the same events read by a bare consumer loop (reads and acknowledges "
        "only: Redis XREADGROUP 500 + XACK, Kafka consume 500 + commit), by a hand-written "
        "scoring loop (reads 500, parses with orjson, scores with the same predictor, writes "
        "each result to a sink on the same broker, then acknowledges: what any scoring "
        "consumer must do, without validation messages, dead letters, an idempotent sink, "
        "the log or metrics) and by `shipyard stream run` (parse, validate, score, write "
        "each result to an idempotent sink, log, commit), each after its start-up. "
        "End-to-end latency: events produced at the "
        "stated rate; the time a reader of the sink (blocking XREAD / a Kafka consumer) sees "
        "an event's result minus the time it was sent, the first second left out.",
        "",
        *table(results),
        "",
        "Goal (events/s with scoring >= 70% of the bare loop): "
        + ", ".join(f"{n} {'met' if ok else 'not met'}" for n, ok in met.items())
        + ".",
    ]
    (HERE / "RESULTS.md").write_text("# Streaming benchmark\n\n" + "\n".join(body[2:]) + "\n")
    if MAIN_RESULTS.exists():
        text = MAIN_RESULTS.read_text()
        section = "<!-- stream:begin -->\n" + "\n".join(body) + "\n<!-- stream:end -->"
        if "<!-- stream:begin -->" in text:
            text = re.sub(
                r"<!-- stream:begin -->.*?<!-- stream:end -->", lambda _: section, text, flags=re.S
            )
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        MAIN_RESULTS.write_text(text)
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
