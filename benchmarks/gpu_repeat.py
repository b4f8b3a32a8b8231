"""The bf16 inference target rows again, each in a fresh process, to see their spread.

    python benchmarks/gpu_repeat.py --processes 3 --out DIR     # on a CUDA machine

cuDNN's autotuner chooses its convolution kernels anew in every process, and its choices
moved the R-50 forward by a few percent between runs of gpu_suite.py. This repeats the rows
the images/s targets rest on (R-50-D8 and R-101-D8, 1024x2048, batch 1, bf16, default fast
path) in separate processes and writes every figure to DIR/gpu_repeat.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROWS = {
    "r50 bf16 fast": "isanet_r50-d8_4xb2-80k_cityscapes-512x1024",
    "r101 bf16 fast": "isanet_r101-d8_4xb2-80k_cityscapes-512x1024",
}

_CHILD = """
import json, sys, torch
from isaseg_cli.bench.inference import benchmark_inference
from isaseg_cli.engine.infer.fast import FastOptions
from isaseg_cli.zoo.catalog import resolve_entry
result = benchmark_inference(resolve_entry(sys.argv[1]), device=torch.device("cuda"),
                             options=FastOptions(precision="bf16"), warmup=5, iters=40)
print(json.dumps({"median_ms": result.timing.median_ms, "p90_ms": result.timing.p90_ms,
                  "images_per_s": result.images_per_s}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    records = []
    for run in range(args.processes):
        for label, model in ROWS.items():
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, model], capture_output=True, text=True, check=True
            )
            record = {"label": label, "process": run, **json.loads(done.stdout.splitlines()[-1])}
            records.append(record)
            print(json.dumps(record), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_repeat.json").write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
