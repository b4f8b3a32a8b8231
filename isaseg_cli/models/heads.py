"""The ISA decode head and the FCN auxiliary head, with mmsegmentation's module names.

ISA: Huang et al., "Interlaced Sparse Self-Attention for Semantic Segmentation" (arXiv 1907.12273).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isaseg_cli.models.layers import ConvModule


class SelfAttentionBlock(nn.Module):
    """Dot-product self-attention inside each map of a batch (one map = one ISA group).

    Key and query: two 1x1 conv-BN-ReLU; value: a plain 1x1 conv keeping the width; the
    similarity is scaled by ``attn_channels ** -0.5`` before the softmax over keys.
    """

    def __init__(self, channels: int, attn_channels: int, *, sync_bn: bool = False) -> None:
        super().__init__()
        self.attn_channels = attn_channels
        self.key_project = nn.Sequential(
            ConvModule(channels, attn_channels, sync_bn=sync_bn),
            ConvModule(attn_channels, attn_channels, sync_bn=sync_bn),
        )
        self.query_project = nn.Sequential(
            ConvModule(channels, attn_channels, sync_bn=sync_bn),
            ConvModule(attn_channels, attn_channels, sync_bn=sync_bn),
        )
        self.value_project = nn.Conv2d(channels, channels, 1)
        self.output_project = ConvModule(channels, channels, sync_bn=sync_bn)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        query = self.query_project(x).flatten(2).transpose(1, 2).contiguous()  # (B, T, Ck)
        key = self.key_project(x).flatten(2)  # (B, Ck, T)
        value = self.value_project(x).flatten(2).transpose(1, 2).contiguous()  # (B, T, C)
        similarity = (self.attn_channels**-0.5) * torch.matmul(query, key)  # (B, T, T)
        context = torch.matmul(F.softmax(similarity, dim=-1), value)  # (B, T, C)
        context = context.transpose(1, 2).contiguous().reshape(batch, -1, height, width)
        return self.output_project(context)


class ISAHead(nn.Module):
    """Interlaced sparse self-attention: a long-range relation between pixels ``group_size`` apart,
    then a short-range relation inside each ``group_size`` block (paper §3.2).

    Args:
        in_channels: width of the backbone feature at ``feature_index``.
        channels: width inside the head.
        attn_channels: key/query width.
        num_classes: classifier outputs.
        group_size: (h, w) of the local blocks, i.e. the stride of the long-range lattice.
        dropout: channel dropout before the classifier.
        feature_index: which backbone stage output the head reads.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        attn_channels: int,
        num_classes: int,
        *,
        group_size: tuple[int, int] = (8, 8),
        dropout: float = 0.1,
        feature_index: int = 3,
        sync_bn: bool = False,
    ) -> None:
        super().__init__()
        self.feature_index = feature_index
        self.group_size = tuple(group_size)
        # Registration order fixes the state-dict order: conv_seg first, as mmseg's base class.
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.in_conv = ConvModule(in_channels, channels, 3, padding=1, sync_bn=sync_bn)
        self.global_relation = SelfAttentionBlock(channels, attn_channels, sync_bn=sync_bn)
        self.local_relation = SelfAttentionBlock(channels, attn_channels, sync_bn=sync_bn)
        self.out_conv = ConvModule(channels * 2, channels, sync_bn=sync_bn)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.in_conv(features[self.feature_index])
        residual = x
        n, c, h, w = x.shape
        group_h, group_w = self.group_size
        num_h, num_w = math.ceil(h / group_h), math.ceil(w / group_w)
        pad_h, pad_w = num_h * group_h - h, num_w * group_w - w
        # Zero-pad so H and W divide by the group size; the padded tokens take part unmasked.
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        # Long range: pixels sharing an in-block offset form one (num_h, num_w) map.
        x = x.view(n, c, num_h, group_h, num_w, group_w)
        x = x.permute(0, 3, 5, 1, 2, 4)  # (n, group_h, group_w, c, num_h, num_w)
        x = self.global_relation(x.reshape(-1, c, num_h, num_w))
        # Short range: each contiguous block forms one (group_h, group_w) map.
        x = x.view(n, group_h, group_w, c, num_h, num_w)
        x = x.permute(0, 4, 5, 3, 1, 2)  # (n, num_h, num_w, c, group_h, group_w)
        x = self.local_relation(x.reshape(-1, c, group_h, group_w))
        # Back to the image layout, then crop the padding away.
        x = x.view(n, num_h, num_w, c, group_h, group_w)
        x = x.permute(0, 3, 1, 4, 2, 5)  # (n, c, num_h, group_h, num_w, group_w)
        x = x.reshape(n, c, num_h * group_h, num_w * group_w)
        if pad_h > 0 or pad_w > 0:
            x = x[:, :, pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w]
        x = self.out_conv(torch.cat([x, residual], dim=1))
        return self.conv_seg(self.dropout(x))


class FCNHead(nn.Module):
    """``num_convs`` 3x3 conv-BN-ReLU, dropout, 1x1 classifier (the auxiliary head)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        *,
        num_convs: int = 1,
        dropout: float = 0.1,
        feature_index: int = 2,
        sync_bn: bool = False,
    ) -> None:
        super().__init__()
        self.feature_index = feature_index
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.convs = nn.Sequential(
            *[
                ConvModule(in_channels if i == 0 else channels, channels, 3, padding=1, sync_bn=sync_bn)
                for i in range(num_convs)
            ]
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.conv_seg(self.dropout(self.convs(features[self.feature_index])))
