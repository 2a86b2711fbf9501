#!/usr/bin/env bash
# The GPU checks behind the README's "Measured on a lent GPU" table, on any CUDA machine:
#   bash tools/gpu_check.sh DATA_DIR [OUT_DIR]
# bench train (every setting, model alone vs full pipeline), a 50-epoch run with its evaluation,
# the full ablation preset for seed 0, and bench loader. Each step has its own time limit.
set -u
DATA=${1:?usage: tools/gpu_check.sh DATA_DIR [OUT_DIR]}
OUT=${2:-runs/gpu_check}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
step() { local t=$1; shift; echo "=== $* (limit ${t}s)"; timeout "$t" "$@"; echo "=== rc $?"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step 600 "$PY" -m maskdet bench train --data "$DATA" --device cuda --rounds 3
step 900 "$PY" -m maskdet train --data "$DATA" --out "$OUT/run" --device cuda --epochs 50 \
  --batch-size 64 --lr 0.01
step 300 "$PY" -m maskdet evaluate --run "$OUT/run"
step 1800 "$PY" -m maskdet ablate --data "$DATA" --out "$OUT/ablations" --preset full --seeds 0 \
  --device cuda
step 300 "$PY" -m maskdet bench loader --data "$DATA" --device cuda --rounds 3
