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
