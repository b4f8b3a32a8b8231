"""ResNetV1c (deep stem, optional dilation) with mmsegmentation's module names.

V1c: He et al., "Bag of Tricks for Image Classification with CNNs" (arXiv 1812.01187), ResNet-C.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from isaseg_cli.models.layers import norm_layer
from isaseg_cli.models.recompute import recomputed_tail

# depth -> (block kind, blocks per stage)
_STAGE_BLOCKS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs; only the first carries the stride and the dilation (as mmseg)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        sync_bn: bool,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride, dilation)
        self.bn1 = norm_layer(planes, sync_bn)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes, sync_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride and dilation here, "pytorch" style) -> 1x1, expansion 4.

    ``recompute_tail`` trades compute for training memory: keep only conv2's output and the
    block's output for the backward pass, and recompute bn2-ReLU-conv3 there
    (``models/recompute.py``: the 1x1 conv3 is 8 % of the block's FLOPs; the tensors it spares
    are 42 % of the block's). Off by default: the reference keeps everything. Not for
    SyncBatchNorm.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int,
        dilation: int,
        downsample: nn.Module | None,
        sync_bn: bool,
        *,
        recompute_tail: bool = False,
    ) -> None:
        super().__init__()
        if recompute_tail and sync_bn:  # its recomputation would all-reduce the statistics again
            raise ValueError("the recomputed bottleneck tail does not support SyncBatchNorm")
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = norm_layer(planes, sync_bn)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = norm_layer(planes, sync_bn)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = norm_layer(planes * self.expansion, sync_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.recompute_tail = recompute_tail

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if self.recompute_tail and self.training and torch.is_grad_enabled():
            return recomputed_tail(self, out, identity)
        return self._tail(out, identity)

    def _tail(self, out: Tensor, identity: Tensor) -> Tensor:
        out = self.bn3(self.conv3(self.relu(self.bn2(out))))
        out += identity
        return self.relu(out)


class ResNetV1c(nn.Module):
    """ResNet with a three-conv deep stem; returns the outputs of all four stages.

    Args:
        depth: 18, 34, 50, 101 or 152.
        stem_channels: width of the stem output (its first two convs are half as wide).
        base_channels: planes of the first stage; stage i has ``base_channels * 2**i``.
        strides: stride of each stage's first block.
        dilations: dilation of each stage; with ``contract_dilation`` the first block of a
            dilated stage uses half of it (mmseg's ResLayer).
        sync_bn: use SyncBatchNorm (multi-GPU training).
        recompute_tail: bottlenecks recompute their tail in the backward pass
            (``Bottleneck``); basic blocks have no such tail and ignore it.
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        stem_channels: int = 64,
        base_channels: int = 64,
        strides: tuple[int, ...] = (1, 2, 1, 1),
        dilations: tuple[int, ...] = (1, 1, 2, 4),
        contract_dilation: bool = True,
        sync_bn: bool = False,
        recompute_tail: bool = False,
    ) -> None:
        super().__init__()
        if depth not in _STAGE_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(_STAGE_BLOCKS)}, not {depth}")
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError("strides and dilations need one value per stage (4)")
        kind, blocks = _STAGE_BLOCKS[depth]
        block: Callable[..., nn.Module] = BasicBlock
        expansion = BasicBlock.expansion
        if kind == "bottleneck":
            block = functools.partial(Bottleneck, recompute_tail=recompute_tail)
            expansion = Bottleneck.expansion
        half = stem_channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False),
            norm_layer(half, sync_bn),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1, bias=False),
            norm_layer(half, sync_bn),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, stem_channels, 3, padding=1, bias=False),
            norm_layer(stem_channels, sync_bn),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = stem_channels
        self.out_channels: list[int] = []
        for index, (num_blocks, stride, dilation) in enumerate(
            zip(blocks, strides, dilations, strict=True)
        ):
            planes = base_channels * 2**index
            first_dilation = dilation // 2 if contract_dilation and dilation > 1 else dilation
            layer = self._make_stage(
                block,
                expansion,
                in_channels,
                planes,
                num_blocks,
                stride,
                dilation,
                first_dilation,
                sync_bn,
            )
            self.add_module(f"layer{index + 1}", layer)
            in_channels = planes * expansion
            self.out_channels.append(in_channels)

    @staticmethod
    def _make_stage(
        block: Callable[..., nn.Module],
        expansion: int,
        in_channels: int,
        planes: int,
        num_blocks: int,
        stride: int,
        dilation: int,
        first_dilation: int,
        sync_bn: bool,
    ) -> nn.Sequential:
        out_channels = planes * expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                norm_layer(out_channels, sync_bn),
            )
        layers = [block(in_channels, planes, stride, first_dilation, downsample, sync_bn)]
        layers += [
            block(out_channels, planes, 1, dilation, None, sync_bn) for _ in range(num_blocks - 1)
        ]
        return nn.Sequential(*layers)

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.maxpool(self.stem(images))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features
