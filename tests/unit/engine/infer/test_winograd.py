"""Winograd F(4x4, 3x3) in the graph ONNX Runtime keeps: the same convolution at every size, only
where it applies, and never kept when it disagrees with the file."""

from __future__ import annotations

import numpy as np
import pytest

from isaseg_cli.engine.infer import ort_session, winograd
from isaseg_cli.engine.infer.backends import open_exported
from isaseg_cli.engine.infer.ort_session import onnxruntime_session

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _conv_model(
    in_channels: int = 8, out_channels: int = 5, *, bias: bool = True, **attributes: object
) -> onnx.ModelProto:
    """One Conv (3x3, padding 1 unless ``attributes`` say otherwise) on a dynamic input."""
    rng = np.random.default_rng(0)
    kernel = attributes.pop("kernel", 3)
    group = attributes.get("group", 1)
    weight = rng.standard_normal((out_channels, in_channels // group, kernel, kernel))
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(out_channels).astype("f4"), "b"))
        inputs.append("b")
    attributes.setdefault("pads", [kernel // 2] * 4)
    node = helper.make_node("Conv", inputs, ["y"], kernel_shape=[kernel, kernel], **attributes)
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", in_channels, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("bias", [True, False])
def test_the_rewritten_conv_is_the_conv_at_sizes_with_every_tile_remainder(bias) -> None:
    model = _conv_model(bias=bias)
    rewritten = _conv_model(bias=bias)
    assert winograd.rewrite_wide_convs(rewritten, min_channels=1) == 1
    assert "Conv" in {n.op_type for n in rewritten.graph.node}  # the input transform
    assert any(n.op_type == "MatMul" for n in rewritten.graph.node)
    rng = np.random.default_rng(1)
    for shape in [(1, 8, 1, 1), (2, 8, 7, 9), (1, 8, 16, 16), (1, 8, 17, 34), (3, 8, 5, 2)]:
        x = rng.standard_normal(shape).astype(np.float32)
        expected, got = _run(model, x), _run(rewritten, x)
        assert got.shape == expected.shape
        # F(4x4, 3x3) rounding: about 1e-6 of the values here; a wrong tile is off by ~1
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), shape


@pytest.mark.parametrize("dilation", [2, 3, 4])
def test_a_dilated_conv_is_rewritten_on_its_sub_grids_at_every_remainder(dilation) -> None:
    pads = [dilation] * 4
    model = _conv_model(dilations=[dilation, dilation], pads=pads)
    rewritten = _conv_model(dilations=[dilation, dilation], pads=pads)
    assert winograd.rewrite_wide_convs(rewritten, min_channels=1) == 1
    ops = {n.op_type for n in rewritten.graph.node}
    assert {"SpaceToDepth", "MatMul", "DepthToSpace"} <= ops
    rng = np.random.default_rng(3)
    # remainders of every size modulo the dilation, and modulo a sub-grid's whole tiles
    sizes = [(1, 1), (2, 3), (dilation * 4, dilation * 8), (17, 34), (dilation * 4 + 1, 31)]
    for batch, (h, w) in zip([1, 2, 1, 3, 2], sizes, strict=True):
        x = rng.standard_normal((batch, 8, h, w)).astype(np.float32)
        expected, got = _run(model, x), _run(rewritten, x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), (h, w)


@pytest.mark.parametrize(
    "attributes",
    [
        {"strides": [2, 2]},
        {"dilations": [2, 2], "pads": [1, 1, 1, 1]},
        {"dilations": [1, 2], "pads": [1, 2, 1, 2]},
        {"kernel": 1},
        {"group": 2},
        {"pads": [0, 0, 0, 0]},
    ],
)
def test_other_convolutions_are_left_as_they_are(attributes) -> None:
    model = _conv_model(**attributes)
    assert winograd.rewrite_wide_convs(model, min_channels=1) == 0
    assert [n.op_type for n in model.graph.node] == ["Conv"]


def test_the_replaced_kernel_leaves_the_graph_unless_another_node_reads_it() -> None:
    model = _conv_model()
    assert winograd.rewrite_wide_convs(model, min_channels=1) == 1
    assert "w" not in {t.name for t in model.graph.initializer}
    shared = _conv_model()
    reader = helper.make_node("Identity", ["w"], ["w_copy"])
    shared.graph.node.append(reader)
    shared.graph.output.append(helper.make_tensor_value_info("w_copy", TensorProto.FLOAT, None))
    assert winograd.rewrite_wide_convs(shared, min_channels=1) == 1
    assert "w" in {t.name for t in shared.graph.initializer}
    x = np.random.default_rng(2).standard_normal((1, 8, 6, 6)).astype(np.float32)
    _run(shared, x)  # still a valid graph


def test_convs_of_the_same_widths_share_their_transform_kernels() -> None:
    first = _conv_model(in_channels=8, out_channels=8)
    second = _conv_model(in_channels=8, out_channels=8, dilations=[2, 2], pads=[2, 2, 2, 2])
    for tensor in second.graph.initializer:
        tensor.name += "2"
    conv = second.graph.node[0]
    conv.input[:] = ["y", "w2", "b2"]
    conv.output[:] = ["z"]
    model = onnx.ModelProto()
    model.CopyFrom(first)
    model.graph.node.append(conv)
    model.graph.initializer.extend(second.graph.initializer)
    model.graph.output[0].name = "z"
    x = np.random.default_rng(4).standard_normal((1, 8, 13, 10)).astype(np.float32)
    expected = _run(model, x)
    assert winograd.rewrite_wide_convs(model, min_channels=1) == 2
    shapes = [tuple(t.dims) for t in model.graph.initializer]
    assert shapes.count((8 * 36, 1, 6, 6)) == 1  # the input transform's, for 8 channels
    assert shapes.count((8 * 36, 1, 4, 4)) == 1  # the output transform's
    got = _run(model, x)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_narrow_convolutions_are_left_as_they_are() -> None:
    model = _conv_model(in_channels=8)
    assert winograd.rewrite_wide_convs(model, min_channels=9) == 0


def _kept_winograd_nodes(kept_dir, op_type: str | None = None) -> int:
    [kept] = kept_dir.glob("*.onnx")
    graph = onnx.load(str(kept), load_external_data=False).graph
    return sum("winograd" in node.name and op_type in (None, node.op_type) for node in graph.node)


def test_the_kept_graph_runs_the_tiny_network_in_winograd_form(
    tiny_onnx, tmp_path, monkeypatch
) -> None:
    # The tiny network has no convolution as wide as MIN_CHANNELS: rewrite its widest 3x3s
    # (64 inputs: three in layer4, one of them dilated 4, and the head's in_conv).
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 64)
    plain = open_exported(tiny_onnx["path"])
    kept_dir = tmp_path / "optimized"
    fast = open_exported(tiny_onnx["path"], optimized_dir=kept_dir)
    assert _kept_winograd_nodes(kept_dir, "MatMul") == 4
    assert _kept_winograd_nodes(kept_dir, "SpaceToDepth") == 1
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 97, 141), (2, 3, 45, 61), (1, 3, 200, 33)]:  # head paddings 3x6, 2x0, 7x3
        images = rng.standard_normal(shape).astype(np.float32)
        expected, got = plain.run(images), fast.run(images)
        # The tiny network amplifies rounding: ONNX Runtime's own optimised graph is 1e-4 of
        # the logits from the unoptimised one here, Winograd's up to 5e-4 (R-50: 1e-5).
        bound = ort_session.WINOGRAD_TOLERANCE * np.abs(expected).max()
        assert np.abs(got - expected).max() <= bound, shape
        assert (got.argmax(1) == expected.argmax(1)).mean() > 0.999


def test_a_rewrite_that_disagrees_with_the_file_is_not_kept(
    tiny_onnx, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(ort_session, "WINOGRAD_TOLERANCE", -1.0)  # nothing is close enough
    kept_dir = tmp_path / "optimized"
    onnxruntime_session(tiny_onnx["path"], optimized_dir=kept_dir)
    assert _kept_winograd_nodes(kept_dir) == 0
    # no work files left behind
    assert sorted(p.suffix for p in kept_dir.iterdir()) == [".data", ".lock", ".onnx"]


def test_the_check_runs_one_small_image_or_a_static_files_own_shape() -> None:
    assert ort_session._check_images(["batch", 3, "height", "width"]).shape == (1, 3, 64, 64)
    assert ort_session._check_images([2, 3, 40, 50]).shape == (2, 3, 40, 50)
