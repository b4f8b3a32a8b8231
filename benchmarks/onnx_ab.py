"""Times two ONNX files of the same network in ONNX Runtime on one input, call by call in
alternation, so that a shared host's changing load falls on both alike: for before/after
comparisons such as the kept graph with and without the Winograd head (docs/PERFORMANCE.md).

Each file is loaded as ONNX Runtime's kept graphs are (no further optimisation) when
``--as-kept`` is given, else optimised as a plain file would be. Prints and optionally writes
(``--json-out``) the load times, every call's seconds, the per-pair ratios and the logits'
largest difference and argmax agreement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def _session(path: Path, threads: int, as_kept: bool) -> tuple[ort.InferenceSession, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if as_kept:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    start = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--size", default="512x1024", help="HxW of the input")
    parser.add_argument("--runs", type=int, default=6, help="timed pairs, after one warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--as-kept", action="store_true")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    height, width = (int(side) for side in args.size.split("x"))
    images = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
    sides = {}
    for name in ("before", "after"):
        session, load_s = _session(getattr(args, name), args.threads, args.as_kept)
        feed = {session.get_inputs()[0].name: images}
        sides[name] = {"session": session, "feed": feed, "load_s": load_s, "calls_s": []}
    logits = {name: side["session"].run(None, side["feed"])[0] for name, side in sides.items()}
    for _ in range(args.runs):
        for side in sides.values():
            start = time.perf_counter()
            side["session"].run(None, side["feed"])
            side["calls_s"].append(time.perf_counter() - start)
    pairs = zip(sides["before"]["calls_s"], sides["after"]["calls_s"], strict=True)
    ratios = [before / after for before, after in pairs]
    record = {
        "before": str(args.before),
        "after": str(args.after),
        "size": [height, width],
        "threads": args.threads,
        "as_kept": args.as_kept,
        **{f"{name}_load_s": side["load_s"] for name, side in sides.items()},
        **{f"{name}_calls_s": side["calls_s"] for name, side in sides.items()},
        "before_over_after_per_pair": ratios,
        "median_ratio": statistics.median(ratios),
        "max_abs_difference": float(np.abs(logits["after"] - logits["before"]).max()),
        "argmax_agreement": float((logits["after"].argmax(1) == logits["before"].argmax(1)).mean()),
    }
    for name, side in sides.items():
        calls = side["calls_s"]
        print(f"{name}: load {side['load_s']:.2f} s, calls min {min(calls):.2f} s, "
              f"median {statistics.median(calls):.2f} s")  # fmt: skip
    print(f"before / after per pair: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {record['median_ratio']:.3f}")  # fmt: skip
    print(f"max |difference| {record['max_abs_difference']:.2e}, "
          f"argmax agreement {record['argmax_agreement'] * 100:.4f} %")  # fmt: skip
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
