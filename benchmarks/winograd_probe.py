"""Does Winograd F(4x4, 3x3) make an exported isaseg network faster in ONNX Runtime on this CPU?

The float32 roofline (``cpu_peak.py``) bounds a runtime that computes every 3x3 convolution
directly. Winograd's minimal filtering (Lavin & Gray, arXiv 1509.09308) does the same
convolution with 36 instead of 144 multiplications per 4x4 output tile, so it is the one
known way past that bound in float32. ONNX Runtime's CPU provider has no Winograd kernel, so
this probe writes it with standard ONNX operators and measures what that costs:

1. ONNX Runtime's basic optimisations fold each BatchNorm into its convolution;
2. every 3x3 stride-1 Conv with at least ``--min-channels`` inputs becomes: the input
   transform (a depthwise 6x6 stride-4 Conv, padded to whole tiles), one batched MatMul per
   tile position with the transformed weights, the output transform (a grouped 4x4 stride-4
   ConvTranspose) and a crop. A dilated Conv is first split into its dilation x dilation
   interleaved sub-grids (SpaceToDepth), where it is an ordinary 3x3 Conv, and the results
   interleaved again (DepthToSpace);
3. both graphs run on the same inputs: agreement at a few sizes, then interleaved timings
   and, from ONNX Runtime's profiler, how the rewritten graph's time splits between the
   Winograd products and the layout operators around them.

Usage: python benchmarks/winograd_probe.py MODEL.onnx [--runs 3] [--json-out F]
(MODEL.onnx: ``isaseg export ... --dynamic``, fp32 logits.) The rewrite is isaseg's own
(``isaseg_cli.engine.infer.winograd``, which its ONNX Runtime backend applies with at least
``MIN_CHANNELS`` inputs); ``--min-channels`` tries other thresholds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from cpu_peak import cpu_name

from isaseg_cli.engine.infer.winograd import rewrite_wide_convs


def session(path: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def profiled_split(
    path: Path, image: np.ndarray, threads: int, runs: int = 2
) -> tuple[dict[str, float], dict[str, float]]:
    """Milliseconds per run of the rewritten graph's Winograd products, the operators around
    them, and the rest of the network, from ONNX Runtime's profiler (``runs`` runs after a
    first one, whose events are left out); then the same time by operator type, with the
    Winograd subgraphs' operators named apart ("winograd Conv") and the rest's convolutions
    by kernel size ("Conv 1x1")."""
    probe = session(path, threads, profile=True)
    feed = {probe.get_inputs()[0].name: image}
    for _ in range(1 + runs):
        probe.run(None, feed)
    trace = Path(probe.end_profiling())
    events = [
        e for e in json.loads(trace.read_text())
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
    ]  # fmt: skip
    trace.unlink()
    split: dict[str, float] = collections.defaultdict(float)
    by_op: dict[str, float] = collections.defaultdict(float)
    seen: set[str] = set()
    for event in events:  # in time order: a node's first event is from the first run
        if event["name"] not in seen:
            seen.add(event["name"])
            continue
        op = event["args"]["op_name"]
        if not event["name"].startswith("winograd"):
            part = "rest of the network"
            if op == "Conv":  # the kernel's shape is the second input's: (O, C/group, kh, kw)
                height, width = next(iter(event["args"]["input_type_shape"][1].values()))[2:]
                op += f" {height}x{width}"
        elif op == "MatMul":
            part = "winograd products (MatMul)"
        else:
            part = "winograd transforms and layout"
        ms = event["dur"] / (1e3 * runs)  # us -> ms per run
        split[part] += ms
        by_op[("winograd " if part != "rest of the network" else "") + op] += ms
    ordered = sorted(by_op.items(), key=lambda item: -item[1])
    return (
        {part: round(ms, 1) for part, ms in sorted(split.items())},
        {op: round(ms, 1) for op, ms in ordered if ms >= 0.5},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a dynamic fp32 isaseg export (logits)")
    parser.add_argument("--size", default="512x1024", help="HxW of the timed input")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--min-channels", type=int, default=64)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folded, rewritten = Path(tmp, "folded.onnx"), Path(tmp, "winograd.onnx")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folded))
        convs = rewrite_wide_convs(model, args.min_channels)
        onnx.save(model, str(rewritten))
        direct, winograd = session(args.model, args.threads), session(rewritten, args.threads)
        name = direct.get_inputs()[0].name
        rng = np.random.default_rng(0)
        agreement = []
        for size in ((height, width), (97 * 8 + 5, 65 * 8 + 3), (64, 48)):
            image = rng.standard_normal((1, 3, *size)).astype(np.float32)
            a, b = direct.run(None, {name: image})[0], winograd.run(None, {name: image})[0]
            agreement.append({
                "size": list(size),
                "max_abs_diff": float(np.abs(a - b).max()),
                "max_abs_logit": float(np.abs(a).max()),
                "argmax_equal": float((a.argmax(1) == b.argmax(1)).mean()),
            })  # fmt: skip
            print(f"{size[0]}x{size[1]}: {agreement[-1]}")
        image = rng.standard_normal((1, 3, height, width)).astype(np.float32)
        seconds: dict[str, list[float]] = {"direct": [], "winograd": []}
        for _ in range(args.runs):
            for label, runner in (("direct", direct), ("winograd", winograd)):
                start = time.perf_counter()
                runner.run(None, {name: image})
                seconds[label].append(time.perf_counter() - start)
        split, by_op = profiled_split(rewritten, image, args.threads)
    best = {label: min(times) for label, times in seconds.items()}
    record = {
        "cpu": cpu_name(),
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "size": [height, width],
        "convs_rewritten": convs,
        "agreement": agreement,
        "seconds": seconds,
        "speedup": round(best["direct"] / best["winograd"], 3),
        "winograd_profile_ms": split,
        "profile_by_op_ms": by_op,
        "load1": os.getloadavg()[0],
    }
    print(f"{convs} convs rewritten; network {best['direct']:.2f} s direct, "
          f"{best['winograd']:.2f} s Winograd (x{record['speedup']}); {split}")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
