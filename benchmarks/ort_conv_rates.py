"""Where an ONNX file's time goes in ONNX Runtime's CPU provider, and how fast its convolutions run.

    OMP_NUM_THREADS=2 python benchmarks/ort_conv_rates.py MODEL.onnx [--size 512x1024] [--runs 3]
        [--json-out FILE]

MODEL is an isaseg export or a graph isaseg keeps (``<cache>/onnx/optimized/*.onnx``). The file
is run ``--runs`` times on one random image with ONNX Runtime's profiler on; the last run is
reported: time per operator type, and each convolution's rate in GFLOP/s (2 x output elements x
input channels per group x kernel area, from the shapes the profiler records), the convolutions
of one shape taken together. A direct convolution's rate set against the CPU's peak
(FMA units x vector width x clock) tells whether a runtime has anything left to gain on it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


def conv_shapes(args: dict[str, Any]) -> tuple[list[int], list[int]]:
    """The weight's and the output's shapes of one profiled Conv. The weight keeps (out,
    in / groups, kh, kw) even where an NCHWc kernel records its input in blocks."""
    (kernel,) = args["input_type_shape"][1].values()
    (out,) = args["output_type_shape"][0].values()
    return kernel, out


def conv_flops(kernel: list[int], out: list[int]) -> float:
    """2 x multiply-adds of a Conv with these weight and output shapes."""
    return 2.0 * math.prod(out) * kernel[1] * kernel[2] * kernel[3]


def profile(model: Path, size: tuple[int, int], runs: int, threads: int) -> list[dict[str, Any]]:
    """The profiler's node events of the last of ``runs`` calls."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = os.path.join(folder, "ort")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        image = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
        for _ in range(runs):
            session.run(None, {name: image})
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(nodes) // runs
    return nodes[-per_run:]


def summarize(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    by_op: dict[str, float] = defaultdict(float)
    convs: dict[str, dict[str, float]] = defaultdict(lambda: {"count": 0, "ms": 0.0, "gflop": 0.0})
    for node in nodes:
        args, ms = node["args"], node["dur"] / 1e3
        by_op[args["op_name"]] += ms
        if args["op_name"] == "Conv":
            kernel, out = conv_shapes(args)
            key = f"weight {'x'.join(map(str, kernel))} -> {'x'.join(map(str, out))}"
            convs[key]["count"] += 1
            convs[key]["ms"] += ms
            convs[key]["gflop"] += conv_flops(kernel, out) / 1e9
    total_ms = sum(by_op.values())
    conv_rows = [
        {"shape": key, **row, "gflop_per_s": row["gflop"] / row["ms"] * 1e3}
        for key, row in sorted(convs.items(), key=lambda item: -item[1]["ms"])
    ]
    conv_gflop = sum(row["gflop"] for row in conv_rows)
    return {
        "total_ms": total_ms,
        "by_op_ms": dict(sorted(by_op.items(), key=lambda item: -item[1])),
        "conv_gflop": conv_gflop,
        "conv_gflop_per_s": conv_gflop / by_op.get("Conv", math.inf) * 1e3,
        "convs": conv_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--size", default="512x1024", help="HxW of the random image")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--json-out", type=Path)
    options = parser.parse_args()
    height, width = (int(side) for side in options.size.split("x"))
    nodes = profile(options.model, (height, width), options.runs, options.threads)
    summary = {"model": str(options.model), "size": [height, width], **summarize(nodes)}
    print(f"{options.model.name}: {summary['total_ms']:.0f} ms in kernels")
    for op, ms in list(summary["by_op_ms"].items())[:8]:
        print(f"  {op:24s} {ms:8.1f} ms")
    print(
        f"convolutions: {summary['conv_gflop']:.0f} GFLOP at "
        f"{summary['conv_gflop_per_s']:.0f} GFLOP/s; by weight and output shape:"
    )
    for row in summary["convs"][:12]:
        print(
            f"  {row['shape']:44s} x{row['count']:<3.0f} {row['ms']:7.1f} ms "
            f"{row['gflop_per_s']:6.0f} GFLOP/s"
        )
    if options.json_out:
        options.json_out.parent.mkdir(parents=True, exist_ok=True)
        options.json_out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
