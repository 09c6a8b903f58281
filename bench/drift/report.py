"""Summarise a drift run: timing, verdicts against the truth, the statistics cross-check of
shipyard against Evidently (and the floor), and the 1M goals.

    .venv/bin/python bench/drift/report.py --raw bench/results/raw/drift-STAMP [--smoke] \
        [--peer-raw ../shared/bench/drift/results/raw]

Writes `bench/results/drift_summary.json` and the "Drift" section of `bench/RESULTS.md`
(between `<!-- drift:begin -->` and `<!-- drift:end -->`; appended when absent, the other
sections are left as they are). `--peer-raw` (default: the harness's own raw results, when
present) fills in peer rows this run does not have (e.g. Evidently at 1M in a smoke run);
every such number is labelled as the harness's, not this run's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness import BENCH, HARNESS

TRUTH = ("cat_0", "num_00", "num_01", "num_02")
TOL = 1e-6
ENTRIES = [
    "evidently:default",
    "evidently:ks_chi2",
    "evidently:psi",
    "shipyard:parquet",
    "shipyard:frames",
    "floor:core",
    "floor:compat",
]
DEFAULT_PEERS = ["evidently:default", "evidently:ks_chi2", "evidently:psi", "floor:core"]
SHIPYARD = "shipyard:parquet"
BASELINE = "evidently:default"
GOAL_SPEEDUP = 20.0
GOAL_MEMORY = 0.2
GOAL_FIELDS = ("compute_s", "compute_cpu_s", "wall_s", "cpu_s", "maxrss_mb", "ok")
# (label, peer entry, column kind, peer field, shipyard field under "stats")
CHECKS = [
    ("KS p-value", "evidently:ks_chi2", "num", "p_value", "ks_p_value"),
    ("KS statistic D", "floor:core", "num", "stat", "ks_statistic"),
    ("chi-square GOF p-value", "evidently:ks_chi2", "cat", "p_value", "chi2_gof_p_value"),
    ("chi-square GOF statistic", "floor:core", "cat", "stat", "chi2_gof_statistic"),
    ("PSI, Sturges bins", "evidently:psi", "num", "stat", "psi_sturges"),
    ("PSI, levels", "evidently:psi", "cat", "stat", "psi"),
    ("Wasserstein / std(ref)", "evidently:default", "num", "stat", "wasserstein_norm"),
    ("Jensen-Shannon distance", "evidently:default", "cat", "stat", "jensen_shannon"),
]
HARNESS_LABEL = "harness run (2026-11-25), not this run"


def load_runs(folder: Path, source: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        run = json.loads(path.read_text())
        if "tool" not in run or "size" not in run:
            continue
        run["source"] = source
        if run["tool"] == "evidently":  # the harness's older files: p-value tests by name
            for c in run.get("columns", {}).values():
                if c.get("p_value") is None and c.get("test") in ("ks", "chisquare"):
                    c["p_value"] = c["stat"]
        groups[(run["size"], f"{run['tool']}:{run['config']}")].append(run)
    return groups


def median(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def size_key(size: str) -> float:
    mult = {"k": 1e3, "m": 1e6}
    return float(size[:-1]) * mult[size[-1]] if size[-1] in mult else float(size)


def timing_row(size: str, entry: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("rc") == 0]
    walls = [r["time_v"]["wall_s"] for r in ok]
    computes = [r["phases"]["compute"] for r in ok]
    drifted = ok[0]["drifted"] if ok else None
    return {
        "size": size,
        "entry": entry,
        "source": runs[0]["source"],
        "runs": len(runs),
        "ok": len(ok),
        "failed": [f"{r['tag']}: rc={r.get('rc')}" for r in runs if r.get("rc") != 0],
        "wall_s": median(walls),
        "wall_min_max": [min(walls), max(walls)] if ok else None,
        "compute_s": median(computes),
        "compute_min_max": [min(computes), max(computes)] if ok else None,
        "compute_cpu_s": median([r["phases"].get("compute_cpu") for r in ok]),
        "cpu_s": median([r["time_v"]["user_s"] + r["time_v"]["sys_s"] for r in ok]),
        "sys_s": median([r["time_v"]["sys_s"] for r in ok]),
        "maxrss_mb": median([r["time_v"]["maxrss_mb"] for r in ok]),
        "import_s": median([r["phases"]["import"] for r in ok]),
        "load_s": median([r["phases"]["load"] for r in ok]),
        "loadavg_1m_before": [round(r["loadavg_before"][0], 2) for r in runs],
        "drifted": drifted,
        "missed": sorted(set(TRUTH) - set(drifted)) if drifted is not None else None,
        "false_alarms": sorted(set(drifted) - set(TRUTH)) if drifted is not None else None,
        "verdicts_stable": len({tuple(r["drifted"]) for r in ok}) <= 1,
    }


def _num(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    if abs(v) >= 1e308:  # shipyard's JSON writes infinities as +-1e308
        return math.copysign(math.inf, v)
    return v


def compare_values(a: Any, b: Any) -> tuple[float, float] | None:
    """(absolute, relative) difference of shipyard's `a` and the peer's `b`; None if either is missing."""
    x, y = _num(a), _num(b)
    if x is None or y is None or math.isnan(x) or math.isnan(y):
        return None
    if math.isinf(x) or math.isinf(y):
        return (0.0, 0.0) if x == y else (math.inf, math.inf)
    d = abs(x - y)
    return d, (d / abs(y) if y else (0.0 if d == 0 else math.inf))


def within(d: tuple[float, float], reference: float) -> bool:
    """Equal to `TOL`: absolute for values up to 1, relative above (chi-square statistics)."""
    return d[0] <= TOL * max(1.0, abs(reference)) or d[0] == 0


def cross_check(
    size: str, shipyard: dict[str, Any], peer: dict[str, Any], check: tuple[str, ...], kinds: dict
) -> dict[str, Any]:
    label, entry, kind, peer_field, field = check
    worst: dict[str, Any] = {"abs": 0.0, "rel": 0.0, "abs_at": None, "rel_at": None}
    failures, skipped, tests = [], [], set()
    for col in kinds[kind]:
        s_col, p_col = shipyard["columns"].get(col), peer["columns"].get(col)
        if s_col is None or p_col is None:
            skipped.append(col)
            continue
        tests.add(str(p_col.get("test")))
        a, b = s_col["stats"].get(field), p_col.get(peer_field)
        d = compare_values(a, b)
        if d is None:
            skipped.append(col)
            continue
        if d[0] > worst["abs"]:
            worst.update({"abs": d[0], "abs_at": col})
        if d[1] > worst["rel"]:
            worst.update({"rel": d[1], "rel_at": col})
        if not within(d, _num(b) or 0.0):
            failures.append({"column": col, "shipyard": a, "peer": b, "abs": d[0], "rel": d[1]})
    return {
        "size": size,
        "quantity": label,
        "peer": entry,
        "peer_source": peer["source"],
        "peer_tests": sorted(tests),
        "shipyard_field": f"stats.{field}",
        "columns": len(kinds[kind]) - len(skipped),
        "max_abs_diff": worst["abs"],
        "max_abs_at": worst["abs_at"],
        "max_rel_diff": worst["rel"],
        "max_rel_at": worst["rel_at"],
        "skipped": skipped,
        "failures": failures,
        "passed": not failures and not skipped,
    }


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int | float):
        if x == 0:
            return "0"
        if math.isinf(x):
            return "inf"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) < 10 ** -(digits - 1) or abs(x) >= 1e6:
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.2f}"
    return str(x)


def goals(rows: dict[tuple[str, str], dict[str, Any]], size: str) -> dict[str, Any] | None:
    ship, base = rows.get((size, SHIPYARD)), rows.get((size, BASELINE))
    if not ship or not base or not ship["ok"] or not base["ok"]:
        return None
    speed = base["compute_s"] / ship["compute_s"]
    best = base["compute_min_max"][0] / ship["compute_min_max"][0]
    memory = ship["maxrss_mb"] / base["maxrss_mb"]
    return {
        "size": size,
        "baseline": BASELINE,
        "baseline_source": base["source"],
        "provisional": base["source"] != ship["source"],
        "compute_speedup": speed,
        "compute_speedup_min_of_runs": best,
        "wall_speedup": base["wall_s"] / ship["wall_s"],
        "cpu_ratio": base["cpu_s"] / ship["cpu_s"],
        "compute_cpu_ratio": (
            base["compute_cpu_s"] / ship["compute_cpu_s"]
            if base["compute_cpu_s"] and ship["compute_cpu_s"]
            else None
        ),
        "memory_ratio": memory,
        "memory_factor": 1 / memory,
        "goal_speedup": GOAL_SPEEDUP,
        "goal_memory_ratio": GOAL_MEMORY,
        "speedup_met": speed >= GOAL_SPEEDUP,
        "memory_met": memory <= GOAL_MEMORY,
        "shipyard": {k: ship[k] for k in GOAL_FIELDS},
        "evidently": {k: base[k] for k in GOAL_FIELDS},
    }


def markdown(summary: dict[str, Any], smoke: bool) -> str:
    out = ["## Drift", ""]
    if smoke:
        out += [
            "> **SMOKE RUN, CONTENDED MACHINE** (1 repeat; Evidently and the floor at 100k only, "
            "shipyard at 100k and 1M; 2 cores shared with other benchmarks): it proves the "
            "pipeline and the cross-check, the timings are not results. Rows marked "
            f"*{HARNESS_LABEL}* are the shared harness's published runs on the same generated "
            "data, not measured here. Full run: `bash bench/drift/run.sh` (see "
            "`bench/drift/README.md`).",
            "",
        ]
    info = summary["run"]
    out += [
        f"Run {info['started']} to {info['finished']}; {info['cpus']} CPUs; versions "
        f"{json.dumps(info.get('versions', {}))}; shipyard commit {info.get('shipyard_commit')}. "
        f"Data: the harness's `gen_data.py` (20 numeric + 5 categorical columns; truly drifted: "
        f"{', '.join(TRUTH)}). Each run is a fresh process under `/usr/bin/time -v`: wall, CPU "
        "(user+sys) and peak RSS are the whole process's; compute is the tool call only, "
        "compute CPU the process's CPU seconds (all threads) during it "
        "(Evidently: the harness's `run_evidently`, i.e. `Dataset.from_pandas` + `Report.run` + `snapshot.dict()`, after `pd.read_parquet`; shipyard: "
        "`compare(reference.parquet, current.parquet)`, which includes reading the Parquet "
        "files column by column). Medians over runs, min-max in brackets; 1-minute load "
        "average before each run in the last column.",
        "",
        "| size | tool:config | runs | wall s | compute s | compute CPU s | CPU s | peak RSS MB | "
        "import s | load s | drifted | missed | false alarms | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["timing"]:
        name = f"**{r['entry']}**" if r["entry"].startswith("shipyard") else r["entry"]
        if r["source"] != "this run":
            name += f" (*{HARNESS_LABEL}*)"
        mm = r["wall_min_max"]
        cm = r["compute_min_max"]
        out.append(
            f"| {r['size']} | {name} | {r['ok']}/{r['runs']} | {fmt(r['wall_s'])}"
            + (f" ({fmt(mm[0])}-{fmt(mm[1])})" if mm and r["ok"] > 1 else "")
            + f" | {fmt(r['compute_s'])}"
            + (f" ({fmt(cm[0])}-{fmt(cm[1])})" if cm and r["ok"] > 1 else "")
            + f" | {fmt(r['compute_cpu_s'])} | {fmt(r['cpu_s'])} | {fmt(r['maxrss_mb'])} | {fmt(r['import_s'])} | "
            f"{fmt(r['load_s'])} | {', '.join(r['drifted'] or []) or '-'} | "
            f"{', '.join(r['missed'] or []) or '-'} | {', '.join(r['false_alarms'] or []) or '-'}"
            f" | {', '.join(fmt(x) for x in r['loadavg_1m_before'])} |"
        )
    out += ["", "### Goals (1M rows per side, shipyard:parquet vs evidently:default)", ""]
    g = summary["goals"].get("1m")
    if g:
        tag = (
            " (**provisional**: Evidently from the " + HARNESS_LABEL + ")"
            if g["provisional"]
            else ""
        )
        out += [
            "| goal | shipyard | Evidently default | ratio | met? |",
            "|---|---|---|---|---|",
            f"| compute >= {GOAL_SPEEDUP:g}x faster | {fmt(g['shipyard']['compute_s'])} s | "
            f"{fmt(g['evidently']['compute_s'])} s | {g['compute_speedup']:.1f}x (min of runs "
            f"{g['compute_speedup_min_of_runs']:.1f}x) | "
            f"**{'met' if g['speedup_met'] else 'not met'}**{tag} |",
            f"| peak RSS <= 1/{1 / GOAL_MEMORY:g} | {fmt(g['shipyard']['maxrss_mb'])} MB | "
            f"{fmt(g['evidently']['maxrss_mb'])} MB | {g['memory_ratio']:.3f} "
            f"(1/{g['memory_factor']:.1f}) | **{'met' if g['memory_met'] else 'not met'}**{tag} |",
            f"| (context) wall, CPU | {fmt(g['shipyard']['wall_s'])} s, "
            f"{fmt(g['shipyard']['cpu_s'])} CPU-s | {fmt(g['evidently']['wall_s'])} s, "
            f"{fmt(g['evidently']['cpu_s'])} CPU-s | wall {g['wall_speedup']:.1f}x, CPU "
            f"{g['cpu_ratio']:.1f}x | |",
            f"| (context) compute CPU s | {fmt(g['shipyard']['compute_cpu_s'])} | "
            f"{fmt(g['evidently']['compute_cpu_s'])} | "
            + (f"{g['compute_cpu_ratio']:.1f}x" if g["compute_cpu_ratio"] else "n/a")
            + " | |",
            "",
        ]
    else:
        out += ["No 1M result for both shipyard:parquet and evidently:default.", ""]
    for size, g100 in summary["goals"].items():
        if size != "1m" and g100:
            out.append(
                f"At {size}: compute {g100['compute_speedup']:.1f}x, peak RSS "
                f"{g100['memory_ratio']:.3f} of Evidently default's"
                + (" (provisional)" if g100["provisional"] else "")
                + "."
            )
    out += [
        "",
        f"### Cross-check: shipyard's statistics vs the same tests elsewhere (tolerance {TOL:g})",
        "",
        "shipyard's `report.to_dict()['columns'][c]['stats'][field]` against the peer's value "
        "for the same column on the same data (first run of each). Evidently reports only the "
        "p-value for KS and chi-square, so the KS statistic D and the chi-square statistic are "
        "checked against the harness's floor (`floor.py`, the same formulas as "
        "`scipy.stats.ks_2samp` / `scipy.stats.chisquare`, which Evidently calls). Pass: "
        f"|diff| <= {TOL:g} x max(1, |peer value|).",
        "",
        "| size | quantity | shipyard field | peer | peer test | columns | max abs diff (at) | "
        "max rel diff (at) | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cross_check"]:
        peer = c["peer"] + ("" if c["peer_source"] == "this run" else f" (*{HARNESS_LABEL}*)")
        result = "pass" if c["passed"] else "**FAIL**"
        if c["skipped"]:
            result += f" (skipped {', '.join(c['skipped'])})"
        out.append(
            f"| {c['size']} | {c['quantity']} | `{c['shipyard_field']}` | {peer} | "
            f"{', '.join(c['peer_tests'])} | {c['columns']} | {fmt(c['max_abs_diff'])} "
            f"({c['max_abs_at'] or '-'}) | {fmt(c['max_rel_diff'])} ({c['max_rel_at'] or '-'}) "
            f"| {result} |"
        )
    fails = [f for c in summary["cross_check"] for f in c["failures"]]
    out += [
        "",
        f"Cross-check: **{'all passed' if summary['cross_check_passed'] else 'FAILED'}** "
        f"({len(summary['cross_check'])} comparisons, {len(fails)} column failures).",
    ]
    ident = summary.get("data_identity")
    if ident:
        out.append(
            "Same data as the harness: this run's floor:core numbers vs the harness's floor:core "
            + "; ".join(
                f"{s}: max abs diff {fmt(v['max_abs_diff'])} over {v['values']} values"
                for s, v in ident.items()
            )
            + "."
        )
    for size, cols in summary["per_column"].items():
        out += [
            "",
            f"### shipyard per column, {size} (first run; truth: {', '.join(TRUTH)})",
            "",
            "| column | status | method | p adjusted | effect | missing ref -> cur (h) | "
            "Evidently default | Evidently KS/chi2 p | Evidently PSI |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, c in cols.items():
            status = f"**{c['status']}**" if c["status"] != "ok" else "ok"
            if name in TRUTH:
                name = f"{name} (drifted)"
            m = c["missing"]
            out.append(
                f"| {name} | {status} | {c['method']} | {fmt(c['p_value_adjusted'])} | "
                f"{c['effect']} {fmt(c['effect_size'])} | {fmt(m['reference_rate'])} -> "
                f"{fmt(m['current_rate'])} (h {fmt(m['cohen_h'])}) | "
                f"{fmt(c.get('evidently_default'))} | {fmt(c.get('evidently_ks_chi2'))} | "
                f"{fmt(c.get('evidently_psi'))} |"
            )
    out += [
        "",
        "Raw data: `bench/results/raw/` (git-ignored); summary: `bench/results/drift_summary.json`. "
        "How to run: `bench/drift/README.md`.",
    ]
    return "\n".join(out)


def write_section(results_md: Path, section: str) -> None:
    begin, end = "<!-- drift:begin -->", "<!-- drift:end -->"
    block = f"{begin}\n{section}\n{end}\n"
    text = results_md.read_text() if results_md.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block
    results_md.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--raw", required=True, type=Path, help="the run's folder (matrix.py --raw)")
    ap.add_argument("--peer-raw", type=Path, default=HARNESS / "results" / "raw")
    ap.add_argument("--no-peer-raw", action="store_true", help="use this run's numbers only")
    ap.add_argument("--smoke", action="store_true", help="label the section as a smoke run")
    ap.add_argument("--summary", type=Path, default=BENCH / "results" / "drift_summary.json")
    ap.add_argument("--results-md", type=Path, default=BENCH / "RESULTS.md")
    a = ap.parse_args()

    own = load_runs(a.raw, "this run")
    if not own:
        sys.exit(f"no runs in {a.raw}")
    peer: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if not a.no_peer_raw and a.peer_raw.is_dir():
        peer = load_runs(a.peer_raw, HARNESS_LABEL)
    sizes = sorted({s for s, _ in own}, key=size_key)
    groups = dict(own)
    for (size, entry), runs in peer.items():  # harness rows only where this run has none
        wanted = size in sizes and entry in DEFAULT_PEERS
        if wanted and not any(r.get("rc") == 0 for r in groups.get((size, entry), [])):
            groups[(size, entry)] = runs
    rows = {
        key: timing_row(key[0], key[1], runs)
        for key, runs in sorted(
            groups.items(),
            key=lambda kv: (
                size_key(kv[0][0]),
                ENTRIES.index(kv[0][1]) if kv[0][1] in ENTRIES else 99,
            ),
        )
    }

    def first(size: str, entry: str) -> dict[str, Any] | None:
        ok = [r for r in groups.get((size, entry), []) if r.get("rc") == 0]
        return min(ok, key=lambda r: r["repeat"]) if ok else None

    checks, per_column, identity = [], {}, {}
    for size in sizes:
        ship = first(size, SHIPYARD)
        if ship is None:
            continue
        meta_num = [c for c, v in ship["columns"].items() if v["kind"] == "numeric"]
        meta_cat = [c for c, v in ship["columns"].items() if v["kind"] == "categorical"]
        kinds = {"num": meta_num, "cat": meta_cat}
        for check in CHECKS:
            p = first(size, check[1])
            if p is not None:
                checks.append(cross_check(size, ship, p, check, kinds))
        cols = {}
        for name, c in ship["columns"].items():
            row = {
                k: c.get(k)
                for k in (
                    "status",
                    "method",
                    "p_value_adjusted",
                    "effect",
                    "effect_size",
                    "missing",
                )
            }
            for entry in ("evidently:default", "evidently:ks_chi2", "evidently:psi"):
                p = first(size, entry)
                if p is not None and name in p["columns"]:
                    row[entry.replace(":", "_")] = p["columns"][name].get("stat")
            cols[name] = row
        per_column[size] = cols
        mine = [r for r in own.get((size, "floor:core"), []) if r.get("rc") == 0]
        theirs = [r for r in peer.get((size, "floor:core"), []) if r.get("rc") == 0]
        if mine and theirs:
            diffs = [
                abs(float(mine[0]["columns"][c][f]) - float(theirs[0]["columns"][c][f]))
                for c in mine[0]["columns"]
                for f in ("stat", "p_value")
                if mine[0]["columns"][c].get(f) is not None
                and not math.isinf(float(mine[0]["columns"][c][f]))
            ]
            identity[size] = {"max_abs_diff": max(diffs), "values": len(diffs)}

    run_info = json.loads((a.raw / "run.json").read_text()) if (a.raw / "run.json").exists() else {}
    own_runs = [r for runs in own.values() for r in runs]
    summary = {
        "smoke": a.smoke,
        "run": {
            "raw": str(a.raw),
            "started": min(r["started"] for r in own_runs),
            "finished": max(r["started"] for r in own_runs),
            "cpus": run_info.get("cpus"),
            "versions": run_info.get("versions"),
            "shipyard_commit": run_info.get("shipyard_commit"),
            "peer_raw": str(a.peer_raw) if peer else None,
        },
        "truth": list(TRUTH),
        "timing": list(rows.values()),
        "goals": {size: goals(rows, size) for size in sizes},
        "cross_check_tolerance": TOL,
        "cross_check": checks,
        "cross_check_passed": bool(checks) and all(c["passed"] for c in checks),
        "data_identity": identity,
        "per_column": per_column,
    }
    a.summary.parent.mkdir(parents=True, exist_ok=True)
    a.summary.write_text(json.dumps(summary, indent=1, default=str))
    section = markdown(summary, a.smoke)
    write_section(a.results_md, section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
