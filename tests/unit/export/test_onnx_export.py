"""The dynamic ONNX export of the tiny model: right at every size, metadata complete, and a
verification rule that does fail when the file and the model disagree."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import torch

from isaseg_cli.engine.loading import load_model
from isaseg_cli.export.verify import head_padding, verification_sizes, verify_export
from isaseg_cli.zoo.catalog import resolve_entry

onnx = pytest.importorskip("onnx")


def test_dynamic_file_agrees_at_sizes_with_every_kind_of_head_padding(
    tiny_onnx, tiny_checkpoint
) -> None:
    loaded = load_model(None, tiny_checkpoint)
    spec = loaded.entry.model
    sizes = [
        ("fixture", (97, 141), 1),  # feature 13x18: padding 3x6
        ("batch of 3", (45, 61), 3),  # padding 2x0
        ("tall", (200, 33), 1),  # padding 7x3
        ("multiple of the groups", (64, 128), 2),  # no padding
        ("one pixel", (1, 1), 1),  # padding 7x7
    ]
    paddings = {head_padding(size, spec) for _, size, _ in sizes}
    assert len(paddings) == 5 and (0, 0) in paddings
    checks = verify_export(tiny_onnx["path"], loaded.model, spec, sizes)
    assert [check.passed for check in checks] == [True] * len(sizes), checks
    assert all(check.agreement > 0.999 for check in checks)


def test_verification_fails_for_a_model_that_differs_from_the_file(
    tiny_onnx, tiny_checkpoint
) -> None:
    loaded = load_model(None, tiny_checkpoint)
    changed = copy.deepcopy(loaded.model)
    with torch.no_grad():
        changed.decode_head.conv_seg.bias[0] += 0.5  # a few percent of the logits' range
    sizes = [("fixture", (97, 141), 1)]
    [check] = verify_export(tiny_onnx["path"], changed, loaded.entry.model, sizes)
    assert not check.passed and check.max_abs_diff == pytest.approx(0.5, rel=0.1)


def test_the_file_regroups_the_isa_tokens_by_swaps_of_two_axes(tiny_onnx) -> None:
    """mmseg's two permutes into the groups move the innermost axis, which ONNX Runtime's
    Transpose copies slowly; the file makes each as two swaps of two axes. The permute back
    to the image keeps its innermost axis, and stays one 6-d Transpose."""
    model = onnx.load(str(tiny_onnx["path"]))
    orders = [
        tuple(onnx.helper.get_attribute_value(attribute))
        for node in model.graph.node
        if node.op_type == "Transpose"
        for attribute in node.attribute
        if attribute.name == "perm"
    ]
    assert [order for order in orders if len(order) > 4] == [(0, 3, 1, 4, 2, 5)]
    for order in (order for order in orders if len(order) <= 4):  # the last two axes swapped
        assert order == (*range(len(order) - 2), len(order) - 1, len(order) - 2)


def test_metadata_is_enough_to_rebuild_the_test_pipeline(tiny_onnx, tiny_checkpoint) -> None:
    model = onnx.load(str(tiny_onnx["path"]))
    props = {prop.key: prop.value for prop in model.metadata_props}
    expected = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert props["checkpoint_sha256"] == expected
    assert json.loads(props["classes"]) == ["c0", "c1", "c2", "c3", "c4"]
    assert len(json.loads(props["palette"])) == 5
    assert json.loads(props["mean"]) == [123.675, 116.28, 103.53]
    assert json.loads(props["entry"])["name"] == "tiny-test"
    assert props["mode"] == "whole" and props["output"] == "logits"
    assert json.loads(props["dynamic"]) is True and json.loads(props["align_corners"]) is False
    assert props["isaseg_version"] and props["torch_version"] == torch.__version__


@pytest.mark.parametrize(
    "name", ["isanet_r50-d8_4xb2-80k_cityscapes-512x1024", "isanet_r50_cityscapes"]
)
def test_verification_sizes_cover_other_paddings_tall_and_wide(name) -> None:
    entry = resolve_entry(name)
    size = entry.data.crop_size
    checks = verification_sizes(size, True, entry.model)
    labels = [label for label, _, _ in checks]
    assert labels == ["export size", "other head padding", "tall", "wide"]
    export_pad = head_padding(size, entry.model)
    other = head_padding(checks[1][1], entry.model)
    assert all(p > 0 and p != e for p, e in zip(other, export_pad, strict=True))
    (tall_h, tall_w), (wide_h, wide_w) = checks[2][1], checks[3][1]
    assert tall_h > tall_w and wide_w > wide_h
    assert verification_sizes(size, False, entry.model) == checks[:1]


def test_fp16_file_computes_the_model_up_to_fp16_rounding_of_its_weights(
    tiny_checkpoint, tmp_path
) -> None:
    from isaseg_cli.export.onnx import export_onnx

    loaded = load_model(None, tiny_checkpoint)
    path = tmp_path / "tiny16.onnx"
    result = export_onnx(loaded, path, size=(64, 64), dynamic=False, precision="fp16", verify=False)
    assert result.path == path and path.is_file()
    graph = onnx.load(str(path)).graph
    kinds = {t.data_type for t in graph.initializer if len(t.dims) == 4}  # conv weights
    assert kinds == {onnx.TensorProto.FLOAT16}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # The tiny random-init network is chaotic: rounding its weights to fp16 alone, computing
    # in float32, already moves about 0.5 % of the pixels. The file must land there, not at
    # the chance level a wrong graph gives (about 1 / 5 of the pixels).
    sizes = [("export size", (64, 64), 1)]
    [check] = verify_export(path, loaded.model, loaded.entry.model, sizes, precision="fp16")
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    rounded = copy.deepcopy(loaded.model).half().float()
    with torch.no_grad():
        reference = loaded.model(images)["out"].argmax(1)
        with_fp16_weights = rounded(images)["out"].argmax(1)
    expected = (reference == with_fp16_weights).double().mean().item()
    assert expected > 0.98 and abs(check.agreement - expected) < 0.01, (check, expected)


def test_an_opset_torch_onnx_falls_back_from_is_an_error_not_a_mislabelled_file(
    tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    from isaseg_cli.errors import ExportError
    from isaseg_cli.export.onnx import export_onnx

    # an onnx that claims to know opset 99: torch.onnx then writes its own opset instead
    monkeypatch.setattr(onnx.defs, "onnx_opset_version", lambda: 99)
    loaded = load_model(None, tiny_checkpoint)
    out = tmp_path / "x.onnx"
    with pytest.raises(ExportError, match="cannot write opset 99 \\(it wrote 18\\)"):
        export_onnx(loaded, out, size=(64, 64), dynamic=False, opset=99, verify=False)
    assert list(tmp_path.iterdir()) == []
