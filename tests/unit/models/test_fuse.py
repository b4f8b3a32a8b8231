"""BatchNorm folding and channels-last: the same function, fewer layers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from isaseg_cli.models.build import build_model
from isaseg_cli.models.fuse import fuse_batchnorm, to_channels_last
from tests.conftest import TINY, tiny_model_spec


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


def test_fused_model_computes_the_same_function(fixture_input) -> None:
    model = _fixture_model()
    fused = copy.deepcopy(model)
    fuse_batchnorm(fused)
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        for ours, theirs in zip(
            model.backbone(fixture_input), fused.backbone(fixture_input), strict=True
        ):
            assert (ours - theirs).abs().max().item() <= 1e-4
        reference = model(fixture_input)["out"]
        folded = fused(fixture_input)["out"]
        truth = exact(fixture_input.double())["out"]
    # The fixture's head amplifies float32 rounding (its own float32 logits are ~3e-4 from the
    # float64 ones), so any reordering moves logits by that much: the folded model must be as
    # close to the exact function as the reference is, and give identical masks.
    reference_error = (reference.double() - truth).abs().max().item()
    assert (folded.double() - truth).abs().max().item() <= 2 * reference_error + 1e-6
    assert torch.equal(folded.argmax(1), reference.argmax(1))


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
