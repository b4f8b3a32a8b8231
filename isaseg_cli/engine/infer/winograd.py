"""Wide 3x3 convolutions of an ONNX graph rewritten as Winograd F(4x4, 3x3), for ONNX Runtime's
CPU provider, which computes every convolution directly.

Winograd's minimal filtering (Lavin & Gray, arXiv 1509.09308) computes a 4x4 output tile with
36 instead of 144 multiplications, as one (out, in) x (in, tiles) product per position of the
6x6 input tile. Written with standard operators, the transforms around those products cost
copies, so only wide convolutions gain: on a 2-core Zen 4 EPYC, rewriting R-50-D8's 3x3s with
at least 256 inputs (the dilated ones of layer3 and layer4, and the head's 2048-to-512
``in_conv``) makes the network about 1.11x faster than rewriting the head's alone, while the
narrower ones of layer1 and layer2 gain nothing (``benchmarks/winograd_probe.py``,
docs/PERFORMANCE.md). A dilated convolution is an undilated one on each of its dilation x
dilation interleaved sub-grids, which SpaceToDepth and DepthToSpace gather and scatter at the
cost of one copy each. The results differ from direct convolution by float rounding of about
2e-5 of the outputs.

Only ``ort_session.onnxruntime_session`` applies this, to the graph it keeps per CPU; exported
files stay plain, for runtimes with their own convolution kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

TILE = 4  # output tile side
SPAN = TILE + 2  # input tile side
# Below this many input channels the transforms cost as much as the products save.
MIN_CHANNELS = 256

# F(4x4, 3x3): output = A^T [(G g G^T) * (B^T d B)] A, over each 6x6 input tile d
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
    """Nodes and initializers replacing one Conv, named ``<prefix>_<n>``. Subgraphs given the
    same ``shared`` dict store each of their transform kernels, which depend only on a channel
    count, once (R-50: 18 MB less)."""

    def __init__(self, onnx: Any, prefix: str, shared: dict[str, str] | None = None) -> None:
        self.onnx, self.prefix = onnx, prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.shared = {} if shared is None else shared

    def name(self) -> str:
        return f"{self.prefix}_{len(self.nodes) + len(self.initializers)}"

    def const(self, value: Any, dtype: Any = np.int64) -> str:
        name = self.name()
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def shared_const(self, key: str, make: Callable[[], np.ndarray]) -> str:
        """The float32 initializer ``make()`` under ``key``, made by the first subgraph asking."""
        if key not in self.shared:
            self.shared[key] = self.const(make(), np.float32)
        return self.shared[key]

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        out = self.name()
        node = self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attributes)
        self.nodes.append(node)
        return out

    def size(self, x: str, axis: int) -> str:
        """Dimension ``axis`` of ``x`` as a 1-element int64 tensor (sizes are dynamic)."""
        return self.op("Gather", self.op("Shape", x), self.const([axis]), axis=0)


def winograd_conv(
    sub: Subgraph,
    x: str,
    weight: np.ndarray,
    bias: str | None,
    out: str | None = None,
    *,
    crop: bool = True,
) -> str:
    """The 3x3, stride 1, padding 1 convolution of ``x`` (N, C, H, W), written into ``out``
    (default: a new name); returns its name. Without ``crop`` (for a caller that crops later;
    ``out`` is then not used) the result keeps whole tiles, (N, O, 4 * ceil(H / 4),
    4 * ceil(W / 4)), its rows and columns past H and W not part of the convolution."""
    out_channels, in_channels = weight.shape[:2]
    positions = SPAN * SPAN
    n, h, w = sub.size(x, 0), sub.size(x, 2), sub.size(x, 3)
    tiles_h, tiles_w = _ceil_div(sub, h, TILE), _ceil_div(sub, w, TILE)
    # input transform B^T d B of each tile, channel by channel: (N, C * 36, tiles_h, tiles_w).
    # Zeros: one row and column before (the 3x3 conv's padding), TILE after, which gives
    # floor((h + 1 + TILE - SPAN) / TILE) + 1 = ceil(h / TILE) tiles at every h; the excess
    # is cropped at the end. Padding inside the Conv spares the copy a Pad before it makes.
    tile_taps = np.einsum("ik,jl->ijkl", B_T, B_T).reshape(positions, 1, SPAN, SPAN)
    taps = sub.shared_const(
        f"taps{in_channels}", lambda: np.tile(tile_taps, (in_channels, 1, 1, 1))
    )
    v = sub.op(
        "Conv", x, taps, group=in_channels,
        kernel_shape=[SPAN, SPAN], strides=[TILE, TILE], pads=[1, 1, TILE, TILE],
    )  # fmt: skip
    v = sub.op("Reshape", v, sub.op("Concat", n, sub.const([in_channels, positions, -1]), axis=0))
    v = sub.op("Transpose", v, perm=[0, 2, 1, 3])  # (N, 36, C, tiles)
    # per tile position, the transformed weights G g G^T (O, C) times the tiles (C, tiles)
    u = np.einsum("ik,ockl,jl->ijoc", G, weight.astype(np.float64), G)
    u = u.reshape(positions, out_channels, in_channels).astype(np.float32)
    y = sub.op("MatMul", sub.const(u, np.float32), v)  # (N, 36, O, tiles)
    y = sub.op("Transpose", y, perm=[0, 2, 1, 3])
    grid = sub.op("Concat", n, sub.const([out_channels * positions]), tiles_h, tiles_w, axis=0)
    # output transform A^T M A, each result written into its 4x4 output tile
    tile_spread = np.einsum("pi,qj->ijpq", A_T, A_T).reshape(positions, 1, TILE, TILE)
    spread = sub.shared_const(
        f"spread{out_channels}", lambda: np.tile(tile_spread, (out_channels, 1, 1, 1))
    )
    y = sub.op(
        "ConvTranspose", sub.op("Reshape", y, grid), spread,
        *([bias] if bias else []), group=out_channels, kernel_shape=[TILE, TILE],
        strides=[TILE, TILE],
    )  # fmt: skip
    return _cropped(sub, y, h, w, out) if crop else y


def dilated_winograd_conv(
    sub: Subgraph, x: str, weight: np.ndarray, bias: str | None, dilation: int, out: str
) -> str:
    """The 3x3, stride 1 convolution of ``x`` (N, C, H, W) dilated and padded ``dilation``,
    written into ``out``: on each of the dilation^2 interleaved sub-grids of the map, zero-padded
    to a multiple of ``dilation``, it is the undilated one."""
    d = dilation
    n, c, h, w = (sub.size(x, axis) for axis in range(4))
    grid_h, grid_w = _ceil_div(sub, h, d), _ceil_div(sub, w, d)
    zeros = sub.const([0] * 6)
    pads = sub.op("Concat", zeros, _excess(sub, grid_h, h, d), _excess(sub, grid_w, w, d), axis=0)
    # (N, d * d * C, H / d, W / d), the channels ordered (row offset, column offset, channel)
    grids = sub.op("SpaceToDepth", sub.op("Pad", x, pads), blocksize=d)
    grids = sub.op("Reshape", grids, sub.op("Concat", sub.const([-1]), c, grid_h, grid_w, axis=0))
    # Uncropped: the excess tiles of a sub-grid land past H and W once interleaved, cropped there.
    y = winograd_conv(sub, grids, weight, bias, crop=False)
    y = sub.op("Reshape", y, sub.op("Concat", n, sub.const([-1, 0, 0]), axis=0))
    return _cropped(sub, sub.op("DepthToSpace", y, blocksize=d, mode="DCR"), h, w, out)


def _ceil_div(sub: Subgraph, size: str, k: int) -> str:
    return sub.op("Div", sub.op("Add", size, sub.const([k - 1])), sub.const([k]))


def _excess(sub: Subgraph, grid: str, size: str, k: int) -> str:
    """How far ``grid`` cells of ``k`` reach past ``size``."""
    return sub.op("Sub", sub.op("Mul", grid, sub.const([k])), size)


def _cropped(sub: Subgraph, y: str, h: str, w: str, out: str | None) -> str:
    ends = sub.op("Concat", h, w, axis=0)
    out = out or sub.name()
    crop = [y, sub.const([0, 0]), ends, sub.const([2, 3])]
    sub.nodes.append(sub.onnx.helper.make_node("Slice", crop, [out], name=f"{sub.prefix}_crop"))
    return out


def _dilation(onnx: Any, node: Any, weights: dict[str, np.ndarray], min_channels: int) -> int:
    """The dilation of a Conv this rewrites (padded as much as it is dilated), else 0."""
    if node.op_type != "Conv" or node.input[1] not in weights:
        return 0
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    weight = weights[node.input[1]]
    dilations = list(attrs.get("dilations", [1, 1]))
    eligible = (
        weight.dtype == np.float32
        and weight.shape[2:] == (3, 3)
        and weight.shape[1] >= min_channels
        and attrs.get("group", 1) == 1
        and list(attrs.get("strides", [1, 1])) == [1, 1]
        and dilations[0] == dilations[1] >= 1
        and list(attrs.get("pads", [0] * 4)) == [dilations[0]] * 4
        and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
    )
    return dilations[0] if eligible else 0


def rewrite_wide_convs(model: Any, min_channels: int = MIN_CHANNELS) -> int:
    """Replaces, in place, each 3x3 stride-1 Conv of ``model`` (an ``onnx.ModelProto``), padded
    as much as it is dilated, with constant float32 weights and at least ``min_channels``
    inputs by its Winograd form. Returns how many were replaced."""
    import onnx

    graph = model.graph
    weights = {
        t.name: onnx.numpy_helper.to_array(t)
        for t in graph.initializer
        if len(t.dims) == 4 and t.data_type == onnx.TensorProto.FLOAT
    }
    nodes, replaced, count = [], set(), 0
    shared: dict[str, str] = {}
    for node in graph.node:
        dilation = _dilation(onnx, node, weights, min_channels)
        if not dilation:
            nodes.append(node)
            continue
        sub = Subgraph(onnx, f"winograd{count}", shared)
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        x, weight, out = node.input[0], weights[node.input[1]], node.output[0]
        if dilation == 1:
            winograd_conv(sub, x, weight, bias, out)
        else:
            dilated_winograd_conv(sub, x, weight, bias, dilation, out)
        nodes += sub.nodes
        graph.initializer.extend(sub.initializers)
        replaced.add(node.input[1])
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    unused = replaced - _inputs(onnx, graph)  # the replaced kernels would only take room
    kept = [t for t in graph.initializer if t.name not in unused]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return count


def _inputs(onnx: Any, graph: Any) -> set[str]:
    """Every name ``graph``'s nodes read, those of nested graphs (If, Loop, Scan) included."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            value = onnx.helper.get_attribute_value(attribute)
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, onnx.GraphProto):
                    names |= _inputs(onnx, sub)
    return names
