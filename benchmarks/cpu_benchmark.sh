#!/usr/bin/env bash
# The CPU figures of docs/PERFORMANCE.md (a few minutes on 2 cores). Run it on an idle machine:
# every record carries the 1-minute load average it was measured under.
#
#   bash benchmarks/cpu_benchmark.sh [OUT_DIR]     # default benchmarks/results/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/cpu}"
mkdir -p "$OUT"
R50=isanet_r50-d8_4xb2-80k_cityscapes-512x1024
R101=isanet_r101-d8_4xb2-80k_cityscapes-512x1024
run() { local name=$1; shift; echo "+ isaseg benchmark $*"; isaseg benchmark "$@" --json-out "$OUT/$name.json"; }

cpu="--device cpu --warmup 1 --iters 3"
run r50_fp32_plain   $R50  --size 512x1024 --plain $cpu
run r50_fp32_fused   $R50  --size 512x1024 --fuse-bn --check-masks $cpu
run r50_fp32_fused_cl $R50 --size 512x1024 --fuse-bn --channels-last $cpu
run r50_bf16_fast    $R50  --size 512x1024 --precision bf16 --check-masks $cpu
run r50_bf16_nchw    $R50  --size 512x1024 --precision bf16 --no-channels-last $cpu
run r50_bf16_sdpa    $R50  --size 512x1024 --precision bf16 --kernel sdpa $cpu
run r101_fp32_plain  $R101 --size 512x1024 --plain $cpu
run r101_bf16_fast   $R101 --size 512x1024 --precision bf16 --check-masks $cpu
train="--train --size 256x512 --batch-size 2 --device cpu --warmup 1 --iters 2"
run train_r50_fp32_plain $R50 $train --plain
run train_r50_bf16       $R50 $train --precision bf16
run attention_fp32 --attention --feature-sizes 64x64,128x128,128x256 --device cpu --warmup 0 --iters 1
