#!/usr/bin/env bash
# The serving benchmark, end to end, from the repository root or anywhere:
#
#   bash bench/serving/run.sh            # full: 10 targets x 2 models x 3 rounds (~70 min + setup)
#   bash bench/serving/run.sh --smoke    # ~4 min: shipyard-1w, -1w-bin, -1w-grpc, fastapi-1w,
#                                        #   mlflow-1w; LR; 3 s cells; report in bench/results/raw/
#   bash bench/serving/run.sh --targets all --rounds 2   # any other serve_bench.py options
#
# Steps: the shared harness's setup.sh (wrk + pinned peer venvs under bench/.peers, kept
# between runs), h2load (Debian's nghttp2-client) for the gRPC targets, its make_data_train.py
# (data, models, bodies; skipped when present, FRESH=1 redoes it), shipyard_setup.py (fresh
# shipyard homes: register, deploy, API key, binary and gRPC bodies checked on a live server),
# the two in-process floors, serve_bench.py (all targets in one run), http_ceiling.py (what
# an empty uvicorn server and a bare scoring one reach on the 100-row binary body), report.py
# (bench/RESULTS.md "Serving" section + bench/results/serving_summary.json; a smoke run writes
# both into bench/results/raw/ instead). Raw data: bench/results/raw/.
#
# Environment: SERVING_HARNESS (default ../shared/bench/serving from the repository root),
# ROOT (default bench/.peers), FRESH=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export SERVING_HARNESS=${SERVING_HARNESS:-$(cd "$REPO/.." && pwd)/shared/bench/serving}
export ROOT=${ROOT:-$REPO/bench/.peers}
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true BENTOML_DO_NOT_TRACK=true
RAW=$REPO/bench/results/raw
PY=$REPO/.venv/bin/python
STAMP=$(date +%Y%m%d-%H%M%S)

FLOOR_ARGS=(--rounds 3)
OWN_FLOOR_ARGS=(--rounds 3)
CEILING_ARGS=(--rounds 3)
BENCH_ARGS=()
REPORT_ARGS=()
if [ "${1:-}" = "--smoke" ]; then
  shift
  STAMP=smoke-$STAMP
  FLOOR_ARGS=(--rounds 1 --calls 300 --batch-reps 3)
  OWN_FLOOR_ARGS=(--rounds 1 --calls 300)
  CEILING_ARGS=(--rounds 1 --duration 3 --calls 300)
  BENCH_ARGS=(--targets shipyard-1w,shipyard-1w-bin,shipyard-1w-grpc,fastapi-1w,mlflow-1w
              --models lr --rounds 1 --duration 3 --concurrency 16,64)
  # smoke numbers are not results: keep them away from the committed RESULTS.md and summary
  REPORT_ARGS=(--summary "$RAW/serving_summary-$STAMP.json" --results-md "$RAW/RESULTS-$STAMP.md")
fi
BENCH_ARGS+=("$@")

if [ ! -f "$SERVING_HARNESS/peers.py" ]; then
  echo "the shared serving harness is not at $SERVING_HARNESS; set SERVING_HARNESS" >&2
  exit 2
fi
[ -x "$REPO/.venv/bin/shipyard" ] || make -C "$REPO" install
mkdir -p "$ROOT" "$RAW"
ROOT=$(cd "$ROOT" && pwd)

echo "== setup: wrk and the peer venvs ($ROOT)"
bash "$SERVING_HARNESS/setup.sh" > "$ROOT/setup.log" 2>&1 || { tail -30 "$ROOT/setup.log"; exit 1; }
wrk --version 2>&1 | head -1 || true
if ! command -v h2load >/dev/null; then
  echo "== h2load (nghttp2-client) for the gRPC targets"
  { apt-get install -y nghttp2-client || { apt-get update && apt-get install -y nghttp2-client; }; } \
    > "$ROOT/h2load-install.log" 2>&1 || { tail -20 "$ROOT/h2load-install.log"; exit 1; }
fi
h2load --version 2>&1 | head -1

if [ "${FRESH:-0}" = 1 ] || [ ! -f "$ROOT/reference_scores.json" ]; then
  echo "== data, models, bodies (make_data_train.py, ~1 min)"
  (cd "$ROOT" && "$ROOT/venv-mlflow/bin/python" "$SERVING_HARNESS/make_data_train.py" --out "$ROOT")
fi

echo "== shipyard: register, deploy, API key, binary and gRPC bodies"
"$PY" "$HERE/shipyard_setup.py" --root "$ROOT"

echo "== in-process floors"
(cd "$ROOT" && "$ROOT/venv-mlflow/bin/python" "$SERVING_HARNESS/floor.py" --root "$ROOT" \
  "${FLOOR_ARGS[@]}" --out "$RAW/floor-$STAMP.json" > /dev/null)
"$PY" "$HERE/shipyard_floor.py" --root "$ROOT" "${OWN_FLOOR_ARGS[@]}" \
  --out "$RAW/shipyard_floor-$STAMP.json"

echo "== servers under wrk"
status=0
"$PY" "$HERE/serve_bench.py" --root "$ROOT" --out "$RAW/serving-$STAMP.jsonl" \
  ${BENCH_ARGS[@]+"${BENCH_ARGS[@]}"} || status=$?

echo "== HTTP ceiling: an empty server and a bare scoring one, beside the floor (http_ceiling.py)"
"$PY" "$HERE/http_ceiling.py" --root "$ROOT" "${CEILING_ARGS[@]}" || status=$?

echo "== report"
[ -s "$RAW/serving-$STAMP.jsonl" ] && "$PY" "$HERE/report.py" --serving "$RAW/serving-$STAMP.jsonl" --floor "$RAW/floor-$STAMP.json" \
  --shipyard-floor "$RAW/shipyard_floor-$STAMP.json" ${REPORT_ARGS[@]+"${REPORT_ARGS[@]}"}
exit $status
