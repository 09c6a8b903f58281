#!/usr/bin/env bash
# The drift benchmark, end to end, from the repository root or anywhere:
#
#   bash bench/drift/run.sh              # full: 5 entries x {100k, 1m} x 3 repeats (~30-40 min quiet, ~60 loaded)
#   bash bench/drift/run.sh --smoke      # ~3 min: every entry at 100k once + shipyard at 1m once
#   bash bench/drift/run.sh --sizes 1m --repeats 1 --only evidently:default shipyard:parquet
#                                        # any other matrix.py options (then no --smoke)
#
# Steps: the Evidently venv as the harness README says (bench/.peers/venv-drift: evidently
# numpy pandas scipy pyarrow duckdb polars, then "pandas<3"; created once, kept), the
# harness's gen_data.py at 100k and 1M rows per side (skipped when present, FRESH=1 redoes
# it), matrix.py (every run a fresh process under /usr/bin/time -v), report.py (the "Drift"
# section of bench/RESULTS.md + bench/results/drift_summary.json). Raw per-run JSON:
# bench/results/raw/drift-<stamp>/ (git-ignored).
#
# Environment: DRIFT_HARNESS (default ../shared/bench/drift from the repository root),
# ROOT (default bench/.peers), RAW (resume into an existing raw folder: runs with rc 0 are
# kept), FRESH=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export DRIFT_HARNESS=${DRIFT_HARNESS:-$(cd "$REPO/.." && pwd)/shared/bench/drift}
export ROOT=${ROOT:-$REPO/bench/.peers}
# Evidently's telemetry is in its UI service only, not in Report.run; off anyway
export DO_NOT_TRACK=1 ITERATIVE_DO_NOT_TRACK=1
PY=$REPO/.venv/bin/python
STAMP=$(date +%Y%m%d-%H%M%S)
SIZES=(100k 1m)

if [ ! -f "$DRIFT_HARNESS/gen_data.py" ]; then
  echo "the shared drift harness is not at $DRIFT_HARNESS; set DRIFT_HARNESS" >&2
  exit 2
fi
[ -x "$REPO/.venv/bin/python" ] || make -C "$REPO" install
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
DRIFT_PY=$ROOT/venv-drift/bin/python

if ! "$DRIFT_PY" -c "import evidently" 2> /dev/null; then
  echo "== venv-drift: the harness README's install steps (~3 min)"
  (
    cd "$ROOT"
    python3.11 -m venv venv-drift
    venv-drift/bin/pip install -U pip
    venv-drift/bin/pip install evidently numpy pandas scipy pyarrow duckdb polars
    venv-drift/bin/pip install "pandas<3" # evidently 0.7.23 does not import under pandas 3
  ) > "$ROOT/drift-setup.log" 2>&1 || { tail -30 "$ROOT/drift-setup.log"; exit 1; }
fi
"$DRIFT_PY" -c "import evidently, pandas; print('evidently', evidently.__version__, 'pandas', pandas.__version__)"

for size in "${SIZES[@]}"; do
  rows=$([ "$size" = 1m ] && echo 1000000 || echo 100000)
  if [ "${FRESH:-0}" = 1 ] || [ ! -f "$ROOT/data/drift/$size/columns.json" ]; then
    echo "== data: gen_data.py --rows $rows"
    "$DRIFT_PY" "$DRIFT_HARNESS/gen_data.py" --rows "$rows" --out "$ROOT/data/drift/$size"
  fi
done

MATRIX=(bench/drift/matrix.py --data "$ROOT/data/drift")
REPORT_ARGS=()
if [ "${1:-}" = "--smoke" ]; then
  shift
  STAMP=smoke-$STAMP
  REPORT_ARGS=(--smoke)
fi
RAW=${RAW:-$REPO/bench/results/raw/drift-$STAMP}
mkdir -p "$RAW"
cd "$REPO"
echo "== runs -> $RAW"
status=0
if [ ${#REPORT_ARGS[@]} -gt 0 ]; then
  "$PY" "${MATRIX[@]}" --raw "$RAW" --skip-existing --sizes 100k --repeats 1 "$@" || status=$?
  "$PY" "${MATRIX[@]}" --raw "$RAW" --skip-existing --sizes 1m --repeats 1 \
    --only shipyard:parquet || status=$?
elif [ $# -gt 0 ]; then
  "$PY" "${MATRIX[@]}" --raw "$RAW" --skip-existing "$@" || status=$?
else
  "$PY" "${MATRIX[@]}" --raw "$RAW" --skip-existing --sizes 100k 1m --repeats 3 \
    --timeout 900 || status=$?
fi

echo "== report"
"$PY" bench/drift/report.py --raw "$RAW" ${REPORT_ARGS[@]+"${REPORT_ARGS[@]}"} > "$RAW/report.md"
echo "section written to bench/RESULTS.md (copy: $RAW/report.md); summary: bench/results/drift_summary.json"
exit $status
