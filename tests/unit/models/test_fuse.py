"""BatchNorm folding and channels-last: the same function, fewer layers."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from isaseg_cli.models.build import build_model
from isaseg_cli.models.fuse import (
    ConcatConvReLU,
    ConvReLU,
    FusedBasicBlock,
    FusedBottleneck,
    SpaceToDepthConvReLU,
    fuse_batchnorm,
    fuse_conv_relu,
    to_channels_last,
)
from tests.helpers import (
    TINY,
    assert_close_to_reference,
    assert_masks_match_except_ties,
    tiny_model_spec,
)


def _fixture_model() -> nn.Module:
    model = build_model(tiny_model_spec())
    model.load_state_dict(torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"])
    return model.eval()


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.fixture(scope="module")
def fixture_input(expected) -> torch.Tensor:
    return torch.from_numpy(expected["input"])


def test_every_batchnorm_is_folded() -> None:
    model = _fixture_model()
    fused = copy.deepcopy(model)
    assert fuse_batchnorm(fused) == _count_bn(model) > 0
    assert _count_bn(fused) == 0
    # The original is untouched; the fused copy's keys differ (documented: never saved).
    assert _count_bn(model) > 0
    assert "backbone.stem.0.bias" in fused.state_dict()
    assert "backbone.stem.1.running_mean" not in fused.state_dict()


# float32 rounding, amplified by the fixture's head, puts any float32 evaluation of this model
# ~1e-4 of the logit range from the float64 one (measured: 0.6e-4 unfused, 0.7e-4 folded on
# AVX-512, 1.3e-4 folded on AVX2). A bound on the exact function, not on this CPU's unfused
# error, holds on any CPU; a wrong fold (scale, shift or eps) moves logits by 1e-2 or more.
FOLDED_REL = 3e-4


def test_fused_model_computes_the_same_function(fixture_input) -> None:
    model = _fixture_model()
    fused = copy.deepcopy(model)
    fuse_batchnorm(fused)
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        for ours, theirs in zip(
            exact.backbone(fixture_input.double()), fused.backbone(fixture_input), strict=True
        ):
            assert_close_to_reference(theirs.double(), ours.numpy())
        reference = model(fixture_input)["out"]
        folded = fused(fixture_input)["out"]
        truth = exact(fixture_input.double())["out"].numpy()
    assert_close_to_reference(reference.double(), truth, rel=FOLDED_REL)  # the bound is fair
    assert_close_to_reference(folded.double(), truth, rel=FOLDED_REL)
    assert_masks_match_except_ties(folded.argmax(1), truth.argmax(1), truth, rel=FOLDED_REL)


def test_fused_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fuse_batchnorm(_fixture_model().train())


def test_bn_that_does_not_follow_a_conv_is_left_alone() -> None:
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))
    model.eval()
    assert fuse_batchnorm(model) == 0
    assert _count_bn(model) == 2


def test_channels_last_keeps_outputs(fixture_input) -> None:
    model = _fixture_model()
    converted = to_channels_last(copy.deepcopy(model))
    weight = converted.backbone.stem[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    with torch.no_grad():
        ours = converted(fixture_input.contiguous(memory_format=torch.channels_last))["out"]
        reference = model(fixture_input)["out"]
    assert np.array_equal(ours.argmax(1).numpy(), reference.argmax(1).numpy())
    assert (ours - reference).abs().max().item() <= 1e-3


@pytest.mark.parametrize("depth", [18, 50])
def test_conv_relu_fusion_replaces_every_relu_and_keeps_the_function(depth: int) -> None:
    """Off CUDA a ConvReLU runs conv, residual addition and ReLU as separate operators, the
    ones the folded model runs."""
    torch.manual_seed(0)
    spec = tiny_model_spec()
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=depth))
    model = build_model(spec, with_aux=False).eval()
    folded = copy.deepcopy(model)
    fuse_batchnorm(folded)
    fused = copy.deepcopy(folded)
    convs_before_relu = fuse_conv_relu(fused)
    assert not any(isinstance(m, nn.ReLU) for m in fused.modules())
    assert convs_before_relu == sum(isinstance(m, ConvReLU) for m in fused.modules())
    block, blocks, per_block = (FusedBasicBlock, 8, 2) if depth == 18 else (FusedBottleneck, 16, 3)
    assert sum(isinstance(m, block) for m in fused.modules()) == blocks
    # Every conv of every residual block, the 3 stem convs and the head's 12 ConvModules
    # (in_conv, out_conv, and 2 key + 2 query + 1 output projection per relation).
    assert convs_before_relu == blocks * per_block + 3 + 12
    images = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        ours, theirs = fused(images)["out"], folded(images)["out"]
    # The same operators, except that the shortcut and value biases are added elsewhere (a
    # reassociated sum): equal up to float32 rounding.
    assert (ours - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_conv_relu_fusion_leaves_unfolded_convs_alone() -> None:
    model = _fixture_model()
    assert fuse_conv_relu(model) == 0  # every conv is still followed by its BatchNorm
    assert not any(isinstance(m, ConvReLU) for m in model.modules())


def test_moved_biases_leave_no_bias_on_shortcuts_and_values() -> None:
    spec = tiny_model_spec()
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=50))
    model = build_model(spec, with_aux=False).eval()
    fuse_batchnorm(model)
    fuse_conv_relu(model)
    blocks = [m for m in model.modules() if isinstance(m, FusedBottleneck)]
    assert all(b.downsample[0].bias is None for b in blocks if b.downsample is not None)
    assert model.decode_head.global_relation.value_project.bias is None


def test_concat_conv_relu_is_the_conv_of_the_concatenation() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(10, 6, 3, padding=1, bias=True)
    split = ConcatConvReLU(conv, 4)
    first, second = torch.randn(2, 4, 7, 9), torch.randn(2, 6, 7, 9)
    with torch.no_grad():
        reference = torch.relu(conv(torch.cat([first, second], dim=1)))
        assert torch.allclose(split.forward_parts((first, second)), reference, atol=1e-5)
        assert torch.allclose(split(torch.cat([first, second], dim=1)), reference, atol=1e-5)
    assert split.second.bias is None
    with pytest.raises(ValueError, match="splits"):
        ConcatConvReLU(conv, 10)


def test_the_fused_head_skips_the_concatenation() -> None:
    model = build_model(tiny_model_spec(), with_aux=False).eval()
    fuse_batchnorm(model)
    fuse_conv_relu(model)
    assert isinstance(model.decode_head.out_conv, ConcatConvReLU)


@pytest.mark.parametrize("size", [(8, 10), (9, 7), (1, 1), (2, 3), (33, 64)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_space_to_depth_stem_is_the_stride_2_conv(size, channels_last) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    stem = SpaceToDepthConvReLU(conv)
    images = torch.randn(2, 3, *size)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ours, reference = stem(images), torch.relu(conv(images))
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-6)
    # The block map is cast to the weights' dtype on the way in.
    with torch.no_grad():
        half = stem.to(torch.bfloat16)(images)
    assert half.dtype == torch.bfloat16


def test_space_to_depth_applies_to_the_resnet_stem_only() -> None:
    assert SpaceToDepthConvReLU.applies_to(nn.Conv2d(3, 32, 3, stride=2, padding=1))
    assert not SpaceToDepthConvReLU.applies_to(nn.Conv2d(32, 32, 3, stride=1, padding=1))
    assert not SpaceToDepthConvReLU.applies_to(nn.Conv2d(3, 32, 7, stride=2, padding=3))
    with pytest.raises(ValueError, match="3x3"):
        SpaceToDepthConvReLU(nn.Conv2d(3, 32, 1))
    model = build_model(tiny_model_spec(), with_aux=False).eval()
    fuse_batchnorm(model)
    fuse_conv_relu(model)
    assert isinstance(model.backbone.stem[0], SpaceToDepthConvReLU)
