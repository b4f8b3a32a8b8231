#!/usr/bin/env bash
# Every GPU figure of docs/PERFORMANCE.md in one call (< 5 minutes, compile included).
#
#   bash benchmarks/gpu_benchmark.sh            # on a CUDA machine, from anywhere in the repo
#
# Needs only what the repo needs (torch with CUDA, opencv-python-headless, pyyaml, typer, rich);
# installs nothing and downloads nothing (random weights). Results: $OUT/gpu_benchmark.json
# (one record per configuration, written as it goes), gpu_suite.log, gpu_tests.log.
# BUDGET_S caps the suite's own time (default 270 s); the compiled runs are skipped past it.
# EXTRA=1 runs instead two more compile modes beside the eager baseline (a second call; give
# it BUDGET_S=480). QUICK=1 runs only the rows the targets need (about 3 minutes with tests).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

"$PY" - <<'PY' || exit 1
import importlib, sys
missing = [m for m in ("torch", "cv2", "yaml", "typer", "rich", "numpy") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)}")
import torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv \
    | tee "$OUT/nvidia_smi.csv"
"$PY" benchmarks/gpu_suite.py --out "$OUT" --budget-s "${BUDGET_S:-270}" ${EXTRA:+--extra} \
    ${QUICK:+--quick} 2>&1 | tee "$OUT/gpu_suite.log"
status=${PIPESTATUS[0]}
# The CUDA-only tests (masks of a random-weight R-50 in fp16/bf16, fused convs, graphed
# inference, the graphed and recomputing training step); NO_TESTS=1 skips them.
[ -n "${NO_TESTS:-}" ] && exit "$status"
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider \
    tests/unit/engine/test_fast.py tests/unit/engine/test_cuda_paths.py 2>&1 \
    | tail -n 40 | tee "$OUT/gpu_tests.log"
exit "$status"
