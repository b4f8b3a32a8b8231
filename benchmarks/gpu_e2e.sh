#!/usr/bin/env bash
# The GPU fast paths as a user meets them, through the `isaseg` command (about 1 minute):
#
#   bash benchmarks/gpu_e2e.sh        # on a CUDA machine, from anywhere in the repo
#
# 1. `isaseg train` R-101-D8 Cityscapes, bf16, batch 2 (the recipe per GPU), 20 iterations on
#    a synthetic full-size Cityscapes tree (random weights, no download): CUDA graphs and
#    recomputed tails on their defaults, a validation pass and checkpoints at the end.
# 2. `isaseg predict --precision bf16` with that checkpoint on one of its images.
# 3. `isaseg benchmark --precision bf16 --device cuda` (R-50-D8 at 1024x2048, the default).
# PRECISION=fp16 runs all three in fp16 instead (training with a gradient scaler).
# Writes under $OUT (default bench-out/): e2e.log, train.json, predict.json, benchmark.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
R101=isanet_r101-d8_4xb2-80k_cityscapes-512x1024
PRECISION="${PRECISION:-bf16}"
{
    "$PY" -c "
from pathlib import Path
from isaseg_cli.data.synthetic import write_synthetic_dataset
write_synthetic_dataset('cityscapes', Path('$WORK/city'), num_images=4, size=(1024, 2048))
"
    "$PY" -m isaseg_cli train "$R101" --data-root "$WORK/city" --work-dir "$WORK/run" \
        --max-iters 20 --batch-size 2 --pretrained none --precision "$PRECISION" --device cuda \
        --val-interval 20 --checkpoint-interval 20 --workers 4 --json-out "$OUT/train.json"
    image="$(find "$WORK/city/leftImg8bit/val" -name '*.png' | head -n 1)"
    "$PY" -m isaseg_cli predict "$image" --model "$R101" --checkpoint "$WORK/run/latest.pth" \
        --precision "$PRECISION" --device cuda --out "$WORK/mask.png" --json-out "$OUT/predict.json"
    "$PY" -c "import cv2; m = cv2.imread('$WORK/mask.png', -1); print('mask', m.shape, m.dtype)"
    "$PY" -m isaseg_cli benchmark --precision "$PRECISION" --device cuda \
        --json-out "$OUT/benchmark.json"
} 2>&1 | tee "$OUT/e2e.log"
