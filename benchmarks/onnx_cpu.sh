#!/usr/bin/env bash
# Issue 16 CPU figures (docs/PERFORMANCE.md): R-50-D8 random weights, fp32, batch 1, 512x1024.
# 1. The whole `isaseg predict` process per backend (start-up included, export cached), run by
#    run in alternation (torch, onnxruntime, openvino, torch, ...): predict_times.tsv holds each
#    run's wall time and the 1-minute load average before it; summary.txt the minimums.
# 2. The network on ONNX Runtime and OpenVINO against the PyTorch plain path, alternating call
#    by call inside `isaseg benchmark --check-masks`: bench_<backend>.json.
# Usage: bash benchmarks/onnx_cpu.sh [RESULTS_DIR] [RUNS]; the 141 MB checkpoint, the cache and
# the masks go to $WORK (default /tmp/isaseg-onnx-cpu), not into the repository.
set -u
cd "$(dirname "$0")/.."
B=${1:-benchmarks/results/onnx_cpu}
RUNS=${2:-5}
WORK=${WORK:-/tmp/isaseg-onnx-cpu}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ISASEG_HOME=${ISASEG_HOME:-$WORK/home}
# Bytecode caches as on a user's machine (pip writes them at install); some sandboxes set
# PYTHONDONTWRITEBYTECODE, which recompiles isaseg's modules in every process (about 0.05 s).
unset PYTHONDONTWRITEBYTECODE
mkdir -p "$B" "$WORK"
R50=isanet_r50-d8_4xb2-80k_cityscapes-512x1024
predict() {  # predict BACKEND OUT: one whole process, its wall time in $WORK/wall_s
  /usr/bin/time -f %e -o "$WORK/wall_s" isaseg predict "$WORK/street.png" \
    --checkpoint "$WORK/r50.pth" --backend "$1" --device cpu --overwrite --out "$2" > /dev/null 2> "$WORK/stderr_$1.txt" \
    || { echo "isaseg predict --backend $1 failed: $WORK/stderr_$1.txt" >&2; exit 1; }
}
[ -f "$WORK/r50.pth" ] || python benchmarks/onnx_random_checkpoint.py "$WORK"
# Fills the export cache (export, verification, ONNX Runtime's optimised graph); not timed.
for backend in onnxruntime openvino; do predict "$backend" "$WORK/warm_$backend.png"; done
printf 'run\tbackend\twall_s\tload1\n' > "$B/predict_times.tsv"
for run in $(seq "$RUNS"); do
  for backend in torch onnxruntime openvino; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    predict "$backend" "$WORK/pred_$backend.png"
    printf '%s\t%s\t%s\t%s\n' "$run" "$backend" "$(cat "$WORK/wall_s")" "$load" \
      >> "$B/predict_times.tsv"
  done
done
python - "$B" "$WORK" > "$B/summary.txt" <<'EOF'
import csv, statistics, sys
import numpy as np
from PIL import Image
results, work = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(f"{results}/predict_times.tsv"), delimiter="\t"))
walls = {}
for row in rows:
    walls.setdefault(row["backend"], []).append(float(row["wall_s"]))
loads = [float(row["load1"]) for row in rows]
print(f"load average (1 min) before the runs: {min(loads):.2f} to {max(loads):.2f}")
torch_mask = np.asarray(Image.open(f"{work}/pred_torch.png"))
for backend, times in walls.items():
    mask = np.asarray(Image.open(f"{work}/pred_{backend}.png"))
    print(
        f"{backend}: min {min(times):.2f} s, median {statistics.median(times):.2f} s, "
        f"min/min vs torch {min(times) / min(walls['torch']):.2f}, "
        f"median/median {statistics.median(times) / statistics.median(walls['torch']):.2f}, "
        f"mask = torch {(mask == torch_mask).mean() * 100:.4f} %"
    )
EOF
cat "$B/summary.txt"
for backend in onnxruntime openvino; do
  isaseg benchmark "$R50" --backend "$backend" --size 512x1024 --device cpu --warmup 1 \
    --iters "$RUNS" --check-masks --json-out "$B/bench_$backend.json" > /dev/null
  python -c "import json, sys; r = json.load(open(sys.argv[1])); s = r['settings']; \
print(sys.argv[2], 'min ms', min(r['latency_all_ms']), {k: s[k] for k in ('torch_min_ms', \
'speedup', 'speedup_of_minimums', 'mask_agreement')})" "$B/bench_$backend.json" "$backend"
done
uptime
