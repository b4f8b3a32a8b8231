"""Does Winograd F(4x4, 3x3) make an exported isaseg network faster in ONNX Runtime on this CPU?

The float32 roofline (``cpu_peak.py``) bounds a runtime that computes every 3x3 convolution
directly. Winograd's minimal filtering (Lavin & Gray, arXiv 1509.09308) does the same
convolution with 36 instead of 144 multiplications per 4x4 output tile, so it is the one
known way past that bound in float32. ONNX Runtime's CPU provider has no Winograd kernel, so
this probe writes it with standard ONNX operators and measures what that costs:

1. ONNX Runtime's basic optimisations fold each BatchNorm into its convolution;
2. every 3x3 stride-1 Conv with at least ``--min-channels`` inputs becomes: pad to whole
   tiles, the input transform (a depthwise 6x6 stride-4 Conv), one batched MatMul per tile
   position with the transformed weights, the output transform (a grouped 4x4 stride-4
   ConvTranspose) and a crop. A dilated Conv is first split into its dilation x dilation
   interleaved sub-grids, where it is an ordinary 3x3 Conv;
3. both graphs run on the same inputs: agreement at a few sizes, then interleaved timings
   and, from ONNX Runtime's profiler, how the rewritten graph's time splits between the
   Winograd products and the layout operators around them.

Usage: python benchmarks/winograd_probe.py MODEL.onnx [--runs 3] [--json-out F]
(MODEL.onnx: ``isaseg export ... --dynamic``, fp32 logits.) Nothing here is used by isaseg.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from cpu_peak import cpu_name
from onnx import helper, numpy_helper

TILE = 4  # output tile side m
SPAN = TILE + 2  # input tile side m + r - 1

# F(4x4, 3x3): output = A^T [(G g G^T) * (B^T d B)] A
B_T = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=np.float64,
)
G = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ]
)
A_T = np.array(
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    dtype=np.float64,
)


class Subgraph:
    """Nodes and initializers of one rewritten Conv, named ``<prefix>_<n>``."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.initializers, self.count = prefix, [], [], 0

    def _name(self) -> str:
        self.count += 1
        return f"{self.prefix}_{self.count}"

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        name = self._name()
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        out = self._name()
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attributes))
        return out

    def dims(self, x: str) -> list[str]:
        """N, C, H, W of ``x`` as 1-element int64 tensors (sizes are dynamic)."""
        shape = self.op("Shape", x)
        return [self.op("Gather", shape, self.const([axis]), axis=0) for axis in range(4)]

    def ceil_div(self, size: str, k: int) -> str:
        return self.op("Div", self.op("Add", size, self.const([k - 1])), self.const([k]))

    def times(self, size: str, k: int, plus: int = 0) -> str:
        product = self.op("Mul", size, self.const([k]))
        return self.op("Add", product, self.const([plus])) if plus else product

    def crop(self, x: str, h: str, w: str) -> str:
        ends = self.op("Concat", h, w, axis=0)
        return self.op("Slice", x, self.const([0, 0]), ends, self.const([2, 3]))


def winograd_conv(sub: Subgraph, x: str, weight: np.ndarray, bias: str | None) -> str:
    """A 3x3, stride 1, padding 1 convolution of ``x`` (N, C, H, W) as F(4x4, 3x3)."""
    out_channels, in_channels = weight.shape[:2]
    positions = SPAN * SPAN
    n, _, h, w = sub.dims(x)
    tiles_h, tiles_w = sub.ceil_div(h, TILE), sub.ceil_div(w, TILE)
    # one row/column of zeros before, enough after for whole tiles (padding 1 included)
    pad_h = sub.op("Sub", sub.times(tiles_h, TILE, 1), h)
    pad_w = sub.op("Sub", sub.times(tiles_w, TILE, 1), w)
    pads = sub.op("Concat", sub.const([0, 0, 1, 1, 0, 0]), pad_h, pad_w, axis=0)
    # input transform B^T d B of every 6x6 tile, per channel: (N, C*36, tiles_h, tiles_w)
    taps = np.einsum("ik,jl->ijkl", B_T, B_T).reshape(positions, 1, SPAN, SPAN)
    taps = np.tile(taps.astype(np.float32), (in_channels, 1, 1, 1))
    v = sub.op(
        "Conv", sub.op("Pad", x, pads), sub.const(taps, np.float32),
        group=in_channels, kernel_shape=[SPAN, SPAN], strides=[TILE, TILE],
    )  # fmt: skip
    v = sub.op("Reshape", v, sub.op("Concat", n, sub.const([in_channels, positions, -1]), axis=0))
    v = sub.op("Transpose", v, perm=[0, 2, 1, 3])  # (N, 36, C, tiles)
    # one (O, C) x (C, tiles) product per tile position with the transformed weights G g G^T
    u = np.einsum("ik,ockl,jl->ijoc", G, weight.astype(np.float64), G)
    u = u.reshape(positions, out_channels, in_channels).astype(np.float32)
    y = sub.op("MatMul", sub.const(u, np.float32), v)  # (N, 36, O, tiles)
    y = sub.op("Transpose", y, perm=[0, 2, 1, 3])
    shape = sub.op("Concat", n, sub.const([out_channels * positions]), tiles_h, tiles_w, axis=0)
    # output transform A^T M A, written into each 4x4 output tile
    spread = np.einsum("pi,qj->ijpq", A_T, A_T).reshape(positions, 1, TILE, TILE)
    spread = np.tile(spread.astype(np.float32), (out_channels, 1, 1, 1))
    y = sub.op(
        "ConvTranspose", sub.op("Reshape", y, shape), sub.const(spread, np.float32),
        *([bias] if bias else []), group=out_channels, kernel_shape=[TILE, TILE],
        strides=[TILE, TILE],
    )  # fmt: skip
    return sub.crop(y, h, w)


def dilated_winograd_conv(
    sub: Subgraph, x: str, weight: np.ndarray, bias: str | None, dilation: int
) -> str:
    """A 3x3 convolution dilated ``dilation`` (padding alike): on each of the dilation^2
    interleaved sub-grids of the zero-padded map it is an undilated one."""
    d, out_channels = dilation, weight.shape[0]
    n, c, h, w = sub.dims(x)
    grid_h, grid_w = sub.ceil_div(h, d), sub.ceil_div(w, d)
    pad_h, pad_w = sub.op("Sub", sub.times(grid_h, d), h), sub.op("Sub", sub.times(grid_w, d), w)
    pads = sub.op("Concat", sub.const([0, 0, 0, 0, 0, 0]), pad_h, pad_w, axis=0)
    split = sub.op("Concat", n, c, grid_h, sub.const([d]), grid_w, sub.const([d]), axis=0)
    grids = sub.op("Reshape", sub.op("Pad", x, pads), split)
    grids = sub.op("Transpose", grids, perm=[0, 3, 5, 1, 2, 4])
    grids = sub.op("Reshape", grids, sub.op("Concat", sub.const([-1]), c, grid_h, grid_w, axis=0))
    y = winograd_conv(sub, grids, weight, bias)
    shape = sub.op("Concat", n, sub.const([d, d, out_channels]), grid_h, grid_w, axis=0)
    y = sub.op("Transpose", sub.op("Reshape", y, shape), perm=[0, 3, 4, 1, 5, 2])
    whole = [n, sub.const([out_channels]), sub.times(grid_h, d), sub.times(grid_w, d)]
    y = sub.op("Reshape", y, sub.op("Concat", *whole, axis=0))
    return sub.crop(y, h, w)


def _rewritable(node: onnx.NodeProto, weights: dict[str, np.ndarray], min_channels: int) -> int:
    """The dilation of a Conv this probe rewrites, else 0."""
    if node.op_type != "Conv" or node.input[1] not in weights:
        return 0
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    dilation = list(attrs.get("dilations", [1, 1]))
    weight = weights[node.input[1]]
    if (
        weight.dtype != np.float32
        or weight.shape[2:] != (3, 3)
        or weight.shape[1] < min_channels
        or attrs.get("group", 1) != 1
        or list(attrs.get("strides", [1, 1])) != [1, 1]
        or attrs.get("auto_pad", b"NOTSET") != b"NOTSET"
        or dilation[0] != dilation[1]
        or list(attrs.get("pads", [0] * 4)) != [dilation[0]] * 4
    ):
        return 0
    return dilation[0]


def rewrite(model: onnx.ModelProto, min_channels: int) -> int:
    """Replaces the eligible Convs of ``model`` in place; returns how many."""
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        dilation = _rewritable(node, weights, min_channels)
        if not dilation:
            nodes.append(node)
            continue
        sub = Subgraph(f"winograd{count}")
        weight, x = weights[node.input[1]], node.input[0]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if dilation == 1:
            out = winograd_conv(sub, x, weight, bias)
        else:
            out = dilated_winograd_conv(sub, x, weight, bias, dilation)
        sub.nodes.append(helper.make_node("Identity", [out], [node.output[0]]))
        nodes += sub.nodes
        graph.initializer.extend(sub.initializers)
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def session(path: Path, threads: int, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def profiled_split(path: Path, image: np.ndarray, threads: int, runs: int = 2) -> dict[str, float]:
    """Milliseconds per run of the rewritten graph's Winograd products, the operators around
    them, and the rest of the network, from ONNX Runtime's profiler (``runs`` runs after a
    first one, whose events are left out)."""
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
    seen: set[str] = set()
    for event in events:  # in time order: a node's first event is from the first run
        if event["name"] not in seen:
            seen.add(event["name"])
            continue
        if not event["name"].startswith("winograd"):
            part = "rest of the network"
        elif event["args"]["op_name"] == "MatMul":
            part = "winograd products (MatMul)"
        else:
            part = "winograd transforms and layout"
        split[part] += event["dur"] / (1e3 * runs)  # us -> ms per run
    return {part: round(ms, 1) for part, ms in sorted(split.items())}


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
        convs = rewrite(model, args.min_channels)
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
        split = profiled_split(rewritten, image, args.threads)
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
        "load1": os.getloadavg()[0],
    }
    print(f"{convs} convs rewritten; network {best['direct']:.2f} s direct, "
          f"{best['winograd']:.2f} s Winograd (x{record['speedup']}); {split}")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
