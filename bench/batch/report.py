#!/usr/bin/env python3
"""The batch benchmark's report: bench/batch/results/n<N>.json -> bench/batch/RESULTS.md.

    python report.py [--rows N] [--update-main]

--rows picks the input size (default: the largest one measured). --update-main also rewrites
the `<!-- batch:begin -->` ... `<!-- batch:end -->` section of bench/RESULTS.md (appended at
the end when the markers are not there yet). Only the standard library is needed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.abspath(os.path.join(HERE, "..", ".."))
BEGIN, END = "<!-- batch:begin -->", "<!-- batch:end -->"
MIB = 2**20
GB_IN_MIB = 1e9 / MIB  # the goal's 1 GB, in MiB (953.7)
MODEL_TITLE = {
    "lr": "LR (StandardScaler + LogisticRegression)",
    "lgbm": "LightGBM (100 trees, 31 leaves)",
}
MODEL_SHORT = {"lr": "LR", "lgbm": "LGBM"}
EARLIER = "2M x 30, measured earlier: pyarrow loop 21 s, Spark 96 s, Ray 43 s, Dask 41 s"

# target -> (label, what its wall is)
ROWS = [
    ("shipyard:nolog", "**shipyard batch --no-log**", "CLI process, end to end"),
    ("shipyard:log", "**shipyard batch** (logging on)", "CLI process, end to end"),
    ("floor", "floor (same predictor, in memory)", "validate + predict loop only"),
    ("pyarrow", "pyarrow loop (joblib model)", "model load to output closed"),
    ("spark", "Spark local[2], mapInPandas", "session start to output written"),
    ("ray", "Ray Data local, map_batches", "ray.init to output written"),
]


def wall(rec: dict | None) -> float | None:
    """The wall each target's rows/s is computed from (see ROWS)."""
    if not rec or not rec.get("ok"):
        return None
    inner = rec.get("inner") or {}
    t = rec["target"]
    if t.startswith("shipyard"):
        return rec["process_wall_s"]
    if t == "floor":
        return inner.get("span_s")
    return inner.get("total_s")


def span(rec: dict | None) -> float | None:
    """Spark's and Ray's job without their session's or cluster's start-up; shipyard's job
    span from its own --json (`seconds`: resolving the version to the output committed)."""
    if not rec or not rec.get("ok"):
        return None
    inner = rec.get("inner") or {}
    if rec["target"].startswith("shipyard"):
        return inner.get("seconds")
    if rec["target"] in ("spark", "ray"):
        return inner.get("span_s")
    return None


def cpu(rec: dict | None) -> float | None:
    if not rec or not rec.get("ok"):
        return None
    if rec["target"] == "floor":
        return (rec.get("inner") or {}).get("span_cpu_s")
    return rec.get("cpu_s")


def f(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def rx(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def load(rows: int | None) -> tuple[dict, list[dict]]:
    found = []
    for path in glob.glob(os.path.join(HERE, "results", "n*.json")):
        m = re.fullmatch(r"n(\d+)\.json", os.path.basename(path))
        if m:
            with open(path) as fh:
                found.append(json.load(fh))
    if not found:
        raise SystemExit("no results: run run.py (or run.sh) first")
    found.sort(key=lambda r: r.get("rows", 0))
    if rows is None:
        return found[-1], found
    for r in found:
        if r.get("rows") == rows:
            return r, found
    raise SystemExit(f"no results for {rows:,} rows; there are {[r.get('rows') for r in found]}")


def goals(res: dict) -> list[dict]:
    steps = res["steps"]
    out = []
    for model in ("lr", "lgbm"):

        def get(t: str, model: str = model) -> dict | None:
            return steps.get(f"{t}/{model}")

        floor = wall(get("floor"))
        for variant, label in (("shipyard:nolog", "--no-log"), ("shipyard:log", "logging on")):
            rec = get(variant)
            w = wall(rec)
            r = ratio(w, floor)
            out.append({
                "model": model,
                "goal": f"rows/s within 1.3x of the in-process floor ({label})",
                "measured": "-" if r is None else
                f"{res['rows'] / w:,.0f} rows/s vs {res['rows'] / floor:,.0f}: {r:.2f}x the floor's time",
                "needed": "<= 1.30x",
                "met": None if r is None else r <= 1.3,
            })  # fmt: skip
            rss = (rec or {}).get("time_v", {}).get("maxrss_mb") if rec and rec.get("ok") else None
            out.append({
                "model": model,
                "goal": f"peak memory < 1 GB ({label})",
                "measured": "-" if rss is None else f"{rss:,.0f} MiB",
                "needed": f"< {GB_IN_MIB:,.0f} MiB",
                "met": None if rss is None else rss < GB_IN_MIB,
            })  # fmt: skip
        ship = wall(get("shipyard:nolog"))
        for peer, name in (("spark", "Spark local"), ("ray", "Ray local")):
            pw, ps = wall(get(peer)), span(get(peer))
            r, r_span = ratio(pw, ship), ratio(ps, ship)
            out.append({
                "model": model,
                "goal": f">= 2x faster than {name} (shipyard --no-log, end to end)",
                "measured": "-" if r is None else
                f"{name.split()[0]} {pw:,.1f} s / shipyard {ship:,.1f} s = {r:.2f}x"
                f" ({r_span:.2f}x without {name.split()[0]}'s start-up)",
                "needed": ">= 2.00x",
                "met": None if r is None else r >= 2.0,
            })  # fmt: skip
    return out


def met(x: bool | None) -> str:
    return "not measured" if x is None else ("**met**" if x else "**not met**")


def model_table(res: dict, model: str) -> list[str]:
    steps, n = res["steps"], res["rows"]
    lines = [
        "| target | rows/s | wall s | what the wall is | process wall s | CPU s | "
        "peak RSS MiB, all processes | peak PSS MiB | largest process max RSS MiB | procs | load before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label, what in ROWS:
        rec = steps.get(f"{key}/{model}")
        if rec is None:
            continue
        if not rec.get("ok"):
            why = "timed out" if rec.get("timed_out") else f"failed (rc {rec.get('rc')})"
            lines.append(f"| {label} | {why} | | | {f(rec.get('process_wall_s'), 1)} | | | | | | |")
            continue
        w = wall(rec)
        extra = ""
        s = span(rec)
        if key in ("spark", "ray") and s is not None:
            extra = f"; without start-up {s:,.2f} s ({n / s:,.0f} rows/s)"
        elif key.startswith("shipyard") and s is not None:
            extra = f"; the job's own span {s:,.2f} s"
        elif key == "floor":
            extra = (
                f" on {rec['inner'].get('threads', 1)} thread(s), {rec['inner'].get('batch_rows', 0):,}-row "
                f"batches; reading the input into memory first: {rec['inner'].get('read_s', 0):,.2f} s"
            )
        c = cpu(rec)
        cpu_text = f(c) + (" (the loop)" if key == "floor" else "")
        pss = rec.get("tree_peak_pss_mb")
        lines.append(
            f"| {label} | {n / w:,.0f} | {f(w)} | {what}{extra} | {f(rec.get('process_wall_s'))} | "
            f"{cpu_text} | {f(rec.get('tree_peak_rss_mb'), 0)} | {f(pss, 0)} | "
            f"{f(rec.get('time_v', {}).get('maxrss_mb'), 0)} | {rec.get('tree_max_procs', '-')} | "
            f"{rec.get('loadavg_before', ['-'])[0]} |"
        )
    return lines


def ratio_table(res: dict) -> list[str]:
    steps = res["steps"]

    def get(t: str, m: str) -> dict | None:
        return steps.get(f"{t}/{m}")

    rows = []
    for v, label in (("shipyard:nolog", "--no-log"), ("shipyard:log", "logging on")):
        rows.append(
            (
                f"shipyard ({label}) wall / floor wall (goal <= 1.3x)",
                lambda m, v=v: ratio(wall(get(v, m)), wall(get("floor", m))),
            )
        )
        rows.append(
            (
                f"shipyard ({label}) job span / floor wall",
                lambda m, v=v: ratio(span(get(v, m)), wall(get("floor", m))),
            )
        )
        rows.append(
            (
                f"shipyard ({label}) CPU / floor CPU",
                lambda m, v=v: ratio(cpu(get(v, m)), cpu(get("floor", m))),
            )
        )
    rows.append(
        (
            "logging on / --no-log, wall",
            lambda m: ratio(wall(get("shipyard:log", m)), wall(get("shipyard:nolog", m))),
        )
    )
    for peer in ("spark", "ray", "pyarrow"):
        name = {"spark": "Spark", "ray": "Ray", "pyarrow": "pyarrow loop"}[peer]
        goal = " (goal >= 2x)" if peer != "pyarrow" else ""
        rows.append(
            (
                f"{name} wall / shipyard --no-log wall{goal}",
                lambda m, p=peer: ratio(wall(get(p, m)), wall(get("shipyard:nolog", m))),
            )
        )
        if peer != "pyarrow":
            rows.append(
                (
                    f"{name} without start-up / shipyard --no-log wall",
                    lambda m, p=peer: ratio(span(get(p, m)), wall(get("shipyard:nolog", m))),
                )
            )
            rows.append(
                (
                    f"{name} wall / shipyard (logging on) wall",
                    lambda m, p=peer: ratio(wall(get(p, m)), wall(get("shipyard:log", m))),
                )
            )
        rows.append(
            (
                f"{name} CPU / shipyard --no-log CPU",
                lambda m, p=peer: ratio(cpu(get(p, m)), cpu(get("shipyard:nolog", m))),
            )
        )
    lines = ["| ratio | LR | LGBM |", "|---|---|---|"]
    for label, fn in rows:
        lines.append(f"| {label} | {rx(fn('lr'))} | {rx(fn('lgbm'))} |")
    return lines


def check_table(res: dict) -> list[str]:
    checks = res.get("checks") or {}
    if not checks:
        return ["(no cross-check)"]
    lines = [
        "| model | target | rows | ids 0..N-1 once | max abs diff | rows with diff > 1e-4 | labels differing |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in ("lr", "lgbm"):
        c = checks.get(model) or {}
        ref = c.get("_reference", "pyarrow")
        for target, e in c.items():
            if target.startswith("_"):
                continue
            if "error" in e:
                lines.append(f"| {MODEL_SHORT[model]} | {target} | error: {e['error']} | | | | |")
                continue
            label = f"{target} (reference)" if target == ref else target
            lines.append(
                f"| {MODEL_SHORT[model]} | {label} | {e['rows']:,} | {'yes' if e['ids_ok'] else '**no**'} | "
                f"{'-' if 'max_abs_diff' not in e else format(e['max_abs_diff'], '.2e')} | "
                f"{e.get('rows_diff_gt_1e-4', '-')} | {e.get('label_mismatches', '-')} |"
            )
    return lines


def memory_by_size(found: list[dict]) -> list[str]:
    lines = [
        "| rows | LR --no-log | LR logging on | LGBM --no-log | LGBM logging on |",
        "|---|---|---|---|---|",
    ]
    for res in found:
        cells = []
        for model in ("lr", "lgbm"):
            for v in ("shipyard:nolog", "shipyard:log"):
                rec = res["steps"].get(f"{v}/{model}")
                ok = rec and rec.get("ok")
                cells.append(f"{rec['time_v'].get('maxrss_mb', 0):,.0f} MiB" if ok else "-")
        lines.append(f"| {res['rows']:,} | " + " | ".join(cells) + " |")
    return lines


def header(res: dict) -> list[str]:
    env, code, run, inp = (
        res.get("env", {}),
        res.get("code", {}),
        res.get("last_run", {}),
        res.get("input", {}),
    )
    peers, ship = env.get("peers", {}), env.get("shipyard", {})
    describes = sorted(
        {s.get("git_describe") for s in res["steps"].values() if s.get("git_describe")}
    )
    return [
        f"Input: **{res['rows']:,} rows** x 30 float64 features (`f00`..`f29`) + `id` int64, one "
        f"Parquet file of {inp.get('bytes', 0) / MIB:,.0f} MiB in {inp.get('row_groups', '?')} row "
        f"group(s) (snappy), made by `gen_data.py`. Models trained on a separate 200,000-row sample: "
        + ", ".join(
            f"{k} test AUC {v.get('test_auc')}" for k, v in res.get("models_meta", {}).get("models", {}).items()
        )
        + ".",
        "",
        f"Last run: {run.get('started', '?')} to {run.get('finished') or 'unfinished'} (targets "
        f"{', '.join(run.get('targets', []))}; models {', '.join(run.get('models', []))}); code "
        f"`{code.get('git_describe', '?')}` (`git describe --dirty` of /work/main at run time; every "
        f"step's: {', '.join(f'`{d}`' for d in describes)}), shipyard run from a snapshot of `src/`.",
        "",
        f"Machine: {env.get('cpus', '?')} CPUs ({env.get('cpu_model', '?')}), {env.get('mem_gib', '?')} GiB, "
        f"kernel {env.get('kernel', '?')}, {env.get('java', '?')}; load average at the start "
        f"{env.get('loadavg_at_start', '?')} (the machine is shared: the 1-minute load before each step is in the tables).",
        "",
        "Versions: peers' venv (`" + env.get("peers_venv", "?") + "`): "
        + ", ".join(f"{k} {peers.get(k, '?')}" for k in ("pyspark", "ray", "lightgbm", "scikit-learn", "pyarrow", "pandas", "numpy", "python"))
        + "; shipyard's: "
        + ", ".join(f"{k} {ship.get(k, '?')}" for k in ("shipyard", "onnxruntime", "lightgbm", "scikit-learn", "pyarrow", "numpy", "python"))
        + ". shipyard scores both models with "
        + ", ".join(f"{k}: {v.get('runtime')}" for k, v in res.get("registration", {}).items())
        + "; the peers with the joblib model's own `predict_proba`."
        + _other_versions(res, peers, ship),
    ]  # fmt: skip


def _other_versions(res: dict, peers: dict, ship: dict) -> str:
    """Steps kept from an earlier run whose recorded libraries differ from the line above."""
    odd = []
    for name, step in sorted(res.get("steps", {}).items()):
        shown = ship if name.startswith(("shipyard", "floor")) else peers
        differ = {k: v for k, v in (step.get("versions") or {}).items() if shown.get(k) != v}
        if differ:
            odd.append(f"{name} ({', '.join(f'{k} {v}' for k, v in sorted(differ.items()))})")
    return f" Steps measured with other versions: {'; '.join(odd)}." if odd else ""


def goal_table(res: dict) -> list[str]:
    lines = ["| model | goal | measured | needed | met? |", "|---|---|---|---|---|"]
    for g in goals(res):
        lines.append(
            f"| {MODEL_SHORT[g['model']]} | {g['goal']} | {g['measured']} | {g['needed']} | {met(g['met'])} |"
        )
    return lines


def verdict(res: dict) -> str:
    gs = goals(res)
    good = [g for g in gs if g["met"]]
    bad = [g for g in gs if g["met"] is False]
    missing = [g for g in gs if g["met"] is None]
    parts = [f"{len(good)} of {len(gs)} goal checks met"]
    if bad:
        parts.append("not met: " + "; ".join(f"{MODEL_SHORT[g['model']]} {g['goal']}" for g in bad))
    if missing:
        parts.append(f"{len(missing)} not measured")
    small = res["rows"] < 10_000_000
    note = (
        f" This run has {res['rows']:,} rows, not the goal's 10,000,000: start-up costs (Python "
        "imports, the JVM, Ray's processes) weigh far more here, so these verdicts are not the "
        "goal's."
        if small
        else ""
    )
    return "**Verdict:** " + "; ".join(parts) + "." + note


def results_md(res: dict, found: list[dict]) -> str:
    first = next(iter(res["steps"].values()), {})
    out = [
        "# Batch scoring: shipyard beside Spark, Ray and the floors",
        "",
        "Generated by `bench/batch/report.py` from `results/n{}.json`; method and caveats in "
        "`README.md`. Issue's goal: on 10M rows x 30 features, for LR and the 100-tree LightGBM, "
        "`shipyard batch` rows/s within 1.3x of the in-process floor, peak memory < 1 GB "
        "whatever the input size, and >= 2x faster than Spark local and Ray local ({}).".format(res["rows"], EARLIER),
        "",
        *header(res),
        "",
        "## Goals",
        "",
        *goal_table(res),
        "",
        verdict(res),
        "",
        "Rows/s = rows / wall, with each target's wall as in the tables below. The shipyard rows "
        "are the whole CLI process (Python start-up and imports, opening the registry, loading the "
        "bundle, reading, scoring, writing, committing); peak memory is its maximum RSS (`/usr/bin/time -v`). "
        "Spark's and Ray's wall starts before their session or cluster starts (their Python imports "
        "excluded) and ends when the output is written; their stop is not counted.",
        "",
    ]  # fmt: skip
    for model in ("lr", "lgbm"):
        out += [f"## {MODEL_TITLE[model]}", "", *model_table(res, model), ""]
    out += [
        "CPU s: user + sys of every process of the step (the floor: only its timed loop, all threads). "
        "Peak RSS, all processes: the largest sum of RSS over the step's process tree, sampled every "
        f"{first.get('sample_interval_s', 0.25)} s (Spark: the Python driver, the JVM and its Python "
        "workers; Ray: driver, GCS, raylet, workers), or the largest process's max RSS when that is "
        f"higher (a peak between two samples). Peak PSS: the same sum of PSS, every {first.get('pss_interval_s', 1.0)} s; "
        "PSS divides shared pages (Ray's object store in /dev/shm, forked workers) between the "
        "processes that map them instead of counting them in each. Largest process max RSS: "
        "`/usr/bin/time -v` (the kernel's high-water mark, exact, but of one process).",
        "",
        "## Ratios",
        "",
        *ratio_table(res),
        "",
        "## Cross-check of the outputs",
        "",
        "Every output read back (`check.py`), ordered by id and compared with the pyarrow loop's "
        "(the joblib model's `predict_proba`). shipyard scores with its ONNX graph; Spark and Ray "
        "with the same joblib model as the reference.",
        "",
        *check_table(res),
        "",
        "## shipyard's peak memory by input size",
        "",
        "Maximum RSS of the `shipyard batch` process in every size measured (`results/n*.json`): "
        "memory should not grow with the input.",
        "",
        *memory_by_size(found),
        "",
    ]  # fmt: skip
    return "\n".join(out)


def section(res: dict) -> str:
    n = res["rows"]
    lines = [
        BEGIN,
        "## Batch",
        "",
        f"`shipyard batch` on {n:,} rows x 30 features beside the in-process floor, a pyarrow loop, "
        f"Spark local[2] and Ray Data local; {res.get('env', {}).get('cpus', '?')} CPUs, code "
        f"`{res.get('code', {}).get('git_describe', '?')}`, run {res.get('last_run', {}).get('started', '?')}. "
        "Harness, method and every number: `bench/batch/README.md`, `bench/batch/RESULTS.md`.",
        "",
        *goal_table(res),
        "",
        verdict(res),
        "",
        "| model | target | rows/s | wall s | CPU s | peak RSS MiB (all processes) |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for model in ("lr", "lgbm"):
        for key, label, _ in ROWS:
            rec = res["steps"].get(f"{key}/{model}")
            w = wall(rec)
            if w is None:
                continue
            lines.append(
                f"| {MODEL_SHORT[model]} | {label} | {n / w:,.0f} | {w:,.2f} | {f(cpu(rec))} | "
                f"{f(rec.get('tree_peak_rss_mb'), 0)} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def update_main(path: str, text: str) -> None:
    old = "# Benchmarks\n"
    if os.path.exists(path):
        with open(path) as fh:
            old = fh.read()
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(path, "w") as fh:
        fh.write(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, help="the input size to report (default: the largest)")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument(
        "--update-main", action="store_true", help="also rewrite bench/RESULTS.md's batch section"
    )
    ap.add_argument("--main-results", default=os.path.join(MAIN, "bench", "RESULTS.md"))
    args = ap.parse_args()
    res, found = load(args.rows)
    with open(args.out, "w") as fh:
        fh.write(results_md(res, found))
    print(f"wrote {args.out}")
    if args.update_main:
        update_main(args.main_results, section(res))
        print(f"updated the batch section of {args.main_results}")
    for g in goals(res):
        print(f"  {MODEL_SHORT[g['model']]:4} {met(g['met']):14} {g['goal']}: {g['measured']}")


if __name__ == "__main__":
    main()
