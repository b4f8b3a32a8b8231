#!/usr/bin/env bash
# Issue 16 CPU figures (docs/PERFORMANCE.md): R-50-D8 random weights, fp32, batch 1, 2 threads;
# the exported file on ONNX Runtime and OpenVINO against the PyTorch plain path, and the whole
# `isaseg predict` process per backend. Usage: bash benchmarks/onnx_cpu.sh [OUT_DIR]
set -u
cd "$(dirname "$0")/.."
B=${1:-benchmarks/results/onnx_cpu}
export OMP_NUM_THREADS=2 ISASEG_HOME=${ISASEG_HOME:-$B/home}
mkdir -p "$B"
R50=isanet_r50-d8_4xb2-80k_cityscapes-512x1024
python benchmarks/onnx_random_checkpoint.py "$B"
# Fills the export cache (export + verification); not one of the timed runs.
isaseg predict "$B/street.png" --checkpoint "$B/r50.pth" --backend onnxruntime --out "$B/warm.png"
for i in 1 2 3; do
  for backend in torch onnxruntime; do
    /usr/bin/time -f "$backend run $i wall %e s" -a -o "$B/predict_times.txt" \
      isaseg predict "$B/street.png" --checkpoint "$B/r50.pth" --backend "$backend" \
      --device cpu --out "$B/pred_$backend.png" > /dev/null 2>&1
  done
done
for backend in onnxruntime openvino; do
  isaseg benchmark "$R50" --backend "$backend" --size 512x1024 --device cpu --warmup 1 \
    --iters 3 --check-masks --json-out "$B/bench_$backend.json"
done
uptime
