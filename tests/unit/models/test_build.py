"""Every zoo architecture, shrunk to the tiny fixture's widths and depth, builds and runs.

Only widths and depth change (as the mmseg_tiny fixture shrinks R-50): each entry keeps its
strides and dilations, group size, head inputs, dropout, class count and ``align_corners``, so
the structure that differs between rows is exercised without ImageNet-sized weights.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.catalog import load_zoo
from isaseg_cli.zoo.spec import ModelSpec, ZooEntry
from tests.helpers import tiny_model_spec

ENTRIES = load_zoo().entries
# Odd on both sides: the backbone rounds up at every stride and the ISA head has to pad.
HEIGHT, WIDTH = 45, 61


def tiny_architecture(spec: ModelSpec) -> ModelSpec:
    """``spec`` with the tiny fixture's depth and widths, everything else kept."""
    tiny = tiny_model_spec()
    aux = spec.aux_head and dataclasses.replace(spec.aux_head, channels=tiny.aux_head.channels)
    return dataclasses.replace(
        spec,
        backbone=dataclasses.replace(
            spec.backbone,
            depth=tiny.backbone.depth,
            stem_channels=tiny.backbone.stem_channels,
            base_channels=tiny.backbone.base_channels,
        ),
        head=dataclasses.replace(
            spec.head, channels=tiny.head.channels, attn_channels=tiny.head.attn_channels
        ),
        aux_head=aux,
    )


def _feature_size(size: int, spec: ModelSpec) -> int:
    """The stem and max-pool halve (rounding up), then each stage by its stride."""
    size = math.ceil(math.ceil(size / 2) / 2)
    for stride in spec.backbone.strides:
        size = math.ceil(size / stride)
    return size


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_every_zoo_architecture_runs_at_tiny_size(entry: ZooEntry) -> None:
    spec = tiny_architecture(entry.model)
    assert spec.backbone.dilations == entry.model.backbone.dilations
    assert spec.head.group_size == entry.model.head.group_size
    torch.manual_seed(0)
    model = build_model(spec).eval()
    assert model.align_corners == entry.model.align_corners
    captured: dict[str, torch.Tensor] = {}
    model.decode_head.register_forward_hook(lambda m, args, out: captured.update(decode=out))
    images = torch.randn(1, 3, HEIGHT, WIDTH)
    k = entry.model.num_classes
    with torch.no_grad():
        outputs = model(images)
    assert set(outputs) == {"out"}  # the auxiliary head is for training only
    logits = outputs["out"]
    assert logits.shape == (1, k, HEIGHT, WIDTH)
    assert torch.isfinite(logits).all()
    # The head works at output stride 8 and the segmentor resizes with the entry's corners rule.
    low = captured["decode"]
    stride_8 = (_feature_size(HEIGHT, spec), _feature_size(WIDTH, spec))
    assert low.shape == (1, k, *stride_8) == (1, k, 6, 8)
    upsampled = F.interpolate(
        low, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=entry.model.align_corners
    )
    assert torch.equal(logits, upsampled)
    assert logits.std() > 0  # not a constant map


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_every_zoo_architecture_trains_with_its_auxiliary_head(entry: ZooEntry) -> None:
    assert entry.model.aux_head is not None  # every published row trains with one
    spec = tiny_architecture(entry.model)
    torch.manual_seed(0)
    model = build_model(spec).train()
    outputs = model(torch.randn(2, 3, HEIGHT, WIDTH))
    k = entry.model.num_classes
    assert set(outputs) == {"out", "aux"}
    for name in ("out", "aux"):
        assert outputs[name].shape == (2, k, HEIGHT, WIDTH), name
        assert torch.isfinite(outputs[name]).all(), name
    (outputs["out"].sum() + outputs["aux"].sum()).backward()
    # Both heads receive gradients, and through them the stage each reads.
    aux_weight = model.auxiliary_head.conv_seg.weight
    assert aux_weight.grad is not None and aux_weight.grad.abs().sum() > 0
    assert model.decode_head.conv_seg.weight.grad.abs().sum() > 0
