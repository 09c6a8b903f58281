#!/usr/bin/env bash
# Feature-store benchmark: shipyard beside Feast and the floors (see README.md).
#
#   bench/features/run.sh [--repeats 3] [--timeout 600] [--only STEP ...]
#
# ROOT (default /tmp/peers: outside git) holds the Feast venv, the data, Feast's repo and
# the raw results. Writes bench/features/RESULTS.md, bench/features/results/*.json and the
# features section of bench/RESULTS.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MAIN=$(cd "$HERE/../.." && pwd)
export ROOT=${ROOT:-/tmp/peers}
export SHARED_FEATURES=${SHARED_FEATURES:-$(cd "$MAIN/../shared/bench/features" && pwd)}
export PY_FEAST=${PY_FEAST:-$ROOT/venv-feast/bin/python}
export PY_SHIPYARD=${PY_SHIPYARD:-$MAIN/.venv/bin/python}
mkdir -p "$ROOT/results"

# 1. Feast in its own venv, outside git (the shared harness's setup; feast 0.67.0 as its figures)
if [ ! -x "$PY_FEAST" ]; then
  python3.11 -m venv "$ROOT/venv-feast"
  "$ROOT/venv-feast/bin/pip" install -q -U pip
  "$ROOT/venv-feast/bin/pip" install -q "feast==0.67.0" duckdb polars pyarrow redis
fi
# 2. shipyard's own venv
[ -x "$PY_SHIPYARD" ] || make -C "$MAIN" dev

# 3. the data, once (~10-45 s, ~2 GB RSS)
if [ ! -f "$ROOT/data/features/entity_df.parquet" ]; then
  timeout 900 "$PY_FEAST" "$SHARED_FEATURES/gen_data.py" --out "$ROOT/data/features"
fi

# 4. the matrix (each step bounded by --timeout, default 600 s; the whole by 1 h)
timeout "${TOTAL_TIMEOUT:-3600}" "$PY_SHIPYARD" "$HERE/run.py" "$@" 2>&1 | tee "$ROOT/results/features-shipyard.log"

# 5. medians, cross-checks, goals -> RESULTS.md files
"$PY_FEAST" "$HERE/report.py"
