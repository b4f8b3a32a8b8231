"""The conv-BN-ReLU unit of the heads, named as mmcv's ConvModule so checkpoint keys match."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def norm_layer(num_features: int, sync: bool = False) -> nn.Module:
    """BatchNorm2d, or SyncBatchNorm for multi-GPU training (eps 1e-5, momentum 0.1)."""
    return nn.SyncBatchNorm(num_features) if sync else nn.BatchNorm2d(num_features)


class ConvModule(nn.Module):
    """``conv`` (no bias, a BN follows) -> ``bn`` -> ReLU; keys ``conv.*`` and ``bn.*``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        padding: int = 0,
        dilation: int = 1,
        sync_bn: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        )
        self.bn = norm_layer(out_channels, sync_bn)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))

    def forward_parts(self, parts: Sequence[Tensor]) -> Tensor:
        """The module on ``parts`` concatenated along the channels (ISA's ``out_conv``); its
        fused replacement, ``models.fuse.ConcatConvReLU``, spares the concatenation copy."""
        return self(torch.cat(tuple(parts), dim=1))
