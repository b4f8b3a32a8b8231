from __future__ import annotations

import math

import pytest
import torch

from isaseg_cli.models.backbone import ResNetV1c


def _stride8(n: int) -> int:
    return math.ceil(math.ceil(math.ceil(n / 2) / 2) / 2)


@pytest.mark.parametrize(
    ("strides", "dilations", "last_stride"),
    [
        ((1, 2, 1, 1), (1, 1, 2, 4), 8),
        ((1, 2, 2, 1), (1, 1, 1, 2), 16),
        ((1, 2, 2, 2), (1, 1, 1, 1), 32),
    ],
)
def test_feature_sizes_per_output_stride(strides, dilations, last_stride) -> None:
    model = ResNetV1c(
        18, stem_channels=8, base_channels=4, strides=strides, dilations=dilations
    ).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == [4, 8, 16, 32]
    assert features[0].shape[-2:] == (16, 24)
    assert features[3].shape[-2:] == (64 // last_stride, 96 // last_stride)


@pytest.mark.parametrize("size", [(97, 141), (33, 7), (1, 1), (769, 20)])
def test_output_stride_8_rounds_up(size: tuple[int, int]) -> None:
    model = ResNetV1c(18, stem_channels=8, base_channels=4).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, *size))
    assert features[3].shape[-2:] == (_stride8(size[0]), _stride8(size[1]))


def test_contract_dilation_halves_first_block_only() -> None:
    model = ResNetV1c(50)
    assert model.layer4[0].conv2.dilation == (2, 2)
    assert all(block.conv2.dilation == (4, 4) for block in model.layer4[1:])
    assert model.layer3[0].conv2.dilation == (1, 1) and model.layer3[1].conv2.dilation == (2, 2)
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)


def test_basic_block_second_conv_is_never_dilated() -> None:
    model = ResNetV1c(18)
    assert model.layer4[1].conv1.dilation == (4, 4)
    assert model.layer4[1].conv2.dilation == (1, 1)


def test_unknown_depth_is_rejected() -> None:
    with pytest.raises(ValueError, match="depth"):
        ResNetV1c(42)
