#!/usr/bin/env bash
# Batch-scoring benchmark: `shipyard batch` beside the in-process floor, a pyarrow loop,
# Spark local and Ray local (see README.md).
#
#   bench/batch/run.sh [--rows N] [--only TARGET ...] [--models lr lgbm] [--timeout S]
#                      [--keep-outputs] [--update-main]
#
# N defaults to 10,000,000. TARGET: pyarrow shipyard floor spark ray. --update-main (taken
# here, not passed on) also rewrites the batch section of bench/RESULTS.md. Everything else
# goes to run.py. ROOT (default /tmp/peers-batch: outside git) holds the peers' venv, the data,
# the work folder and the raw results; bench/batch/results/n<N>.json and
# bench/batch/RESULTS.md are written here.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MAIN=$(cd "$HERE/../.." && pwd)
export ROOT=${ROOT:-/tmp/peers-batch}
export PY_SHIPYARD=${PY_SHIPYARD:-$MAIN/.venv/bin/python}
export PY_PEERS=${PY_PEERS:-$ROOT/venv-peers/bin/python}
DL=${DL:-/tmp/dl}  # where pyspark's sdist and ray's wheel were downloaded (else PyPI)

ROWS=10000000
UPDATE_MAIN=()
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=$2; ARGS+=("$1" "$2"); shift 2 ;;
    --rows=*) ROWS=${1#--rows=}; ARGS+=("$1"); shift ;;
    --update-main) UPDATE_MAIN=(--update-main); shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
case " ${ARGS[*]-} " in *" --rows"*) ;; *) ARGS+=(--rows "$ROWS") ;; esac
mkdir -p "$ROOT/results"

# 1. shipyard's own venv
[ -x "$PY_SHIPYARD" ] || make -C "$MAIN" dev

# 2. the peers in their own venv, outside git. scikit-learn, lightgbm, numpy, pyarrow and
#    joblib pinned to shipyard's venv's versions (the joblib models load in both; the same
#    libraries on both sides); pandas < 3 (pyspark 4.3 warns that it does not support 3.x yet).
if [ ! -x "$PY_PEERS" ]; then
  ver() { "$PY_SHIPYARD" -c "import importlib.metadata as m; print(m.version('$1'))"; }
  SPARK="pyspark==4.3.0"
  [ -f "$DL/pyspark-4.3.0.tar.gz" ] && SPARK="$DL/pyspark-4.3.0.tar.gz"
  RAY="ray[data]==2.60.0"
  RAY_WHL=$(ls "$DL"/ray-2.60.0-*.whl 2>/dev/null | head -1 || true)
  [ -n "$RAY_WHL" ] && RAY="ray[data] @ file://$RAY_WHL"
  python3.11 -m venv "$ROOT/venv-peers"
  "$ROOT/venv-peers/bin/pip" install -q -U pip
  "$ROOT/venv-peers/bin/pip" install -q "$SPARK" "$RAY" \
    "scikit-learn==$(ver scikit-learn)" "lightgbm==$(ver lightgbm)" "numpy==$(ver numpy)" \
    "pyarrow==$(ver pyarrow)" "joblib==$(ver joblib)" "pandas==2.3.3"
fi
java -version >/dev/null 2>&1 || { echo "Spark needs Java 17 (java not found)" >&2; exit 1; }

# 3. the data and the models, once per size (10M rows: ~2.4 GB, ~1 min, < 1 GB of memory)
if [ ! -f "$ROOT/data/batch_$ROWS.parquet" ] || [ ! -f "$ROOT/data/models/meta.json" ]; then
  timeout 1800 "$PY_SHIPYARD" "$HERE/gen_data.py" --rows "$ROWS" --out "$ROOT/data"
fi

# 4. the matrix: one step at a time, each bounded by run.py's --timeout (default 1500 s), the
#    whole by TOTAL_TIMEOUT (default 5400 s: 10M rows take roughly 40-60 min on 2 cores)
set +e
timeout "${TOTAL_TIMEOUT:-5400}" "$PY_SHIPYARD" "$HERE/run.py" "${ARGS[@]}" 2>&1 |
  tee "$ROOT/results/batch-n$ROWS.log"
STATUS=${PIPESTATUS[0]}
set -e

# 5. the report (also after a failed or cut-short run: it shows what was measured)
"$PY_SHIPYARD" "$HERE/report.py" --rows "$ROWS" "${UPDATE_MAIN[@]}"
exit "$STATUS"
