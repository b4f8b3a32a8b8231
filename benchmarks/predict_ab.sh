#!/usr/bin/env bash
# Whole `isaseg predict --backend $BACKEND` processes (default onnxruntime; or openvino) of two
# checkouts of isaseg, run by run in alternation, on the cache, checkpoint and image of
# benchmarks/onnx_cpu.sh (run that first): a before/after figure for a change of a backend's
# path (docs/PERFORMANCE.md).
# Usage: bash benchmarks/predict_ab.sh BEFORE_CHECKOUT AFTER_CHECKOUT OUT.tsv [RUNS]
# (make BEFORE with `git worktree add /tmp/before <commit>`); each checkout runs its own code
# through `python -m isaseg_cli` from its root. Each builds what it keeps in an untimed run.
set -eu
BEFORE=$(realpath "$1"); AFTER=$(realpath "$2"); OUT=$3; RUNS=${4:-6}
WORK=${WORK:-/tmp/isaseg-onnx-cpu} BACKEND=${BACKEND:-onnxruntime}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ISASEG_HOME=${ISASEG_HOME:-$WORK/home}
# Bytecode caches as on a user's machine (pip writes them at install); some sandboxes set
# PYTHONDONTWRITEBYTECODE, which recompiles isaseg's modules in every process (about 0.05 s).
unset PYTHONDONTWRITEBYTECODE
predict() {  # predict CHECKOUT MASK [TIME_FILE]
  local timer=()
  [ $# -gt 2 ] && timer=(/usr/bin/time -f %e -o "$3")
  (cd "$1" && "${timer[@]}" python -m isaseg_cli predict "$WORK/street.png" \
    --checkpoint "$WORK/r50.pth" --backend "$BACKEND" --device cpu --overwrite --out "$2" \
    > /dev/null 2>&1)
}
for checkout in "$BEFORE" "$AFTER"; do predict "$checkout" "$WORK/ab_warm.png"; done
printf 'run\tcode\twall_s\tload1\n' > "$OUT"
for run in $(seq "$RUNS"); do
  for side in before after; do
    checkout=$([ $side = before ] && echo "$BEFORE" || echo "$AFTER")
    load=$(cut -d' ' -f1 /proc/loadavg)
    predict "$checkout" "$WORK/ab_$side.png" "$WORK/ab_wall"
    printf '%s\t%s\t%s\t%s\n' "$run" "$side" "$(cat "$WORK/ab_wall")" "$load" >> "$OUT"
  done
done
python - "$OUT" "$WORK" <<'PY'
import csv, statistics, sys
import numpy as np
from PIL import Image
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
walls = {}
for row in rows:
    walls.setdefault(row["code"], []).append(float(row["wall_s"]))
for side, times in walls.items():
    print(f"{side}: min {min(times):.2f} s, median {statistics.median(times):.2f} s")
ratios = [b / a for b, a in zip(walls["before"], walls["after"], strict=True)]
print("before / after per pair:", ", ".join(f"{r:.3f}" for r in ratios),
      f"; median {statistics.median(ratios):.3f}")
masks = [np.asarray(Image.open(f"{sys.argv[2]}/ab_{side}.png")) for side in ("before", "after")]
print(f"masks equal: {(masks[0] == masks[1]).mean() * 100:.4f} %")
PY
