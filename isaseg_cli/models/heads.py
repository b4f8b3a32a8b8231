"""The ISA decode head and the FCN auxiliary head, with mmsegmentation's module names.

ISA: Huang et al., "Interlaced Sparse Self-Attention for Semantic Segmentation" (arXiv 1907.12273).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isaseg_cli.models.execution import ATTENTION_KINDS
from isaseg_cli.models.layers import ConvModule
from isaseg_cli.models.regroup import regroup


class SelfAttentionBlock(nn.Module):
    """Dot-product self-attention inside each map of a batch (one map = one ISA group).

    Key and query: two 1x1 conv-BN-ReLU; value: a plain 1x1 conv keeping the width; the
    similarity is scaled by ``attn_channels ** -0.5`` before the softmax over keys.

    ``attention`` picks the kernel: ``"matmul"`` (default) is mmseg's explicit
    matmul-softmax-matmul, bit-faithful to the reference; ``"sdpa"`` calls
    ``F.scaled_dot_product_attention`` (see ``_fused_attention``).
    """

    def __init__(
        self,
        channels: int,
        attn_channels: int,
        *,
        sync_bn: bool = False,
        attention: str = "matmul",
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, not {attention!r}")
        self.attn_channels = attn_channels
        self.attention = attention
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
        context = self.attend(query, key.transpose(1, 2), value)  # (B, T, C)
        context = context.transpose(1, 2).contiguous().reshape(batch, -1, height, width)
        return self.output_project(context)

    def attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """Attention of query (B, T, Ck) on key (B, T, Ck) over value (B, T, C) -> (B, T, C)."""
        scale = self.attn_channels**-0.5
        if self.attention == "sdpa":
            return _fused_attention(query, key, value, scale)
        similarity = scale * torch.matmul(query, key.transpose(1, 2))  # (B, T, T)
        return torch.matmul(F.softmax(similarity, dim=-1), value)

    def forward_tokens(self, tokens: Tensor) -> Tensor:
        """The block on groups already laid out as tokens (groups, T, C), contiguous.

        The 1x1 projections run on a (groups, C, T, 1) channels-last view of the tokens, so
        neither their inputs nor the attention's operands need a regrouping copy.
        """
        x = _tokens_as_map(tokens)
        query = _map_as_tokens(self.query_project(x))
        key = _map_as_tokens(self.key_project(x))
        value = _map_as_tokens(self.value_project(x))
        context = self.attend(query, key, value)
        return _map_as_tokens(self.output_project(_tokens_as_map(context)))


def _tokens_as_map(tokens: Tensor) -> Tensor:
    """(groups, T, C) -> (groups, C, T, 1), a view (channels-last when ``tokens`` is contiguous)."""
    return tokens.unsqueeze(2).permute(0, 3, 1, 2)


def _map_as_tokens(x: Tensor) -> Tensor:
    """The inverse of ``_tokens_as_map`` (a view for a channels-last map)."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def _fused_attention(query: Tensor, key: Tensor, value: Tensor, scale: float) -> Tensor:
    """``F.scaled_dot_product_attention`` in the form its fused kernels accept.

    Those kernels take 4-d (batch, heads, tokens, width) inputs only (3-d ones go to the
    math kernel), and the flash and cuDNN kernels want the value as wide as the key: ISA's
    value (512) is twice its key (256), which only the memory-efficient kernel accepts (probed
    on a GPU: docs/PERFORMANCE.md). So each group is one head, and the value is attended in
    key-wide slices (the scores are recomputed per slice, cheap next to the 1x1 projections
    around them).
    """
    query, key = query.unsqueeze(1), key.unsqueeze(1)
    width = query.shape[-1]
    slices = value.split(width, dim=-1) if value.shape[-1] % width == 0 else (value,)
    outputs = [
        F.scaled_dot_product_attention(query, key, part.unsqueeze(1), scale=scale)
        for part in slices
    ]
    return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)).squeeze(1)


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
        attention: the kernel of both relations (``SelfAttentionBlock``).
        fast_interlace: keep the groups token-major, channels last, from one relation to the
            next and run the per-pixel projections on them as they lie (the same maths, fewer
            copies; equal to float rounding). False is the reference code path.
        split_regroups: in the reference path, make each of the two regroupings into groups
            as two swaps of two axes instead of one 6-d permute (the same copies, bit for bit;
            see ``_regroup_in_two``). State-dict keys depend on none of the choices.
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
        attention: str = "matmul",
        fast_interlace: bool = False,
        split_regroups: bool = False,
    ) -> None:
        super().__init__()
        self.feature_index = feature_index
        self.group_size = tuple(group_size)
        self.fast_interlace = fast_interlace
        self.split_regroups = split_regroups
        # Registration order fixes the state-dict order: conv_seg first, as mmseg's base class.
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.in_conv = ConvModule(in_channels, channels, 3, padding=1, sync_bn=sync_bn)
        relation = {"sync_bn": sync_bn, "attention": attention}
        self.global_relation = SelfAttentionBlock(channels, attn_channels, **relation)
        self.local_relation = SelfAttentionBlock(channels, attn_channels, **relation)
        self.out_conv = ConvModule(channels * 2, channels, sync_bn=sync_bn)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.in_conv(features[self.feature_index])
        # out_conv reads the attention output and the map concatenated along the channels.
        x = self.out_conv.forward_parts((self.interlaced_attention(x), x))
        return self.conv_seg(self.dropout(x))

    def interlaced_attention(self, x: Tensor) -> Tensor:
        """The long-range then short-range relation on a (N, C, h, w) map, same shape out."""
        h, w = x.shape[-2:]
        group_h, group_w = self.group_size
        # (-h) % group_h == ceil(h / group_h) * group_h - h, written without a float division
        # so that it stays one integer expression when h is symbolic (a dynamic export).
        pad_h, pad_w = (-h) % group_h, (-w) % group_w
        # Zero-pad so H and W divide by the group size; the padded tokens take part unmasked.
        # A symbolic size always takes the pad/crop (a no-op at zero padding): a branch on it
        # would be decided once, at the export size, and be wrong at sizes needing other pads.
        padded = _is_symbolic(pad_h) or _is_symbolic(pad_w) or pad_h > 0 or pad_w > 0
        if padded:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        if self.fast_interlace:
            x = self._relations_token_major(x)
        else:
            x = self._relations_regrouped(x)
        if padded:
            x = x[:, :, pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w]
        return x

    def _relations_regrouped(self, x: Tensor) -> Tensor:
        """mmseg's order of operations on the padded map (n, c, Hp, Wp)."""
        n, c, height, width = x.shape
        group_h, group_w = self.group_size
        num_h, num_w = height // group_h, width // group_w
        # Long range: pixels sharing an in-block offset form one (num_h, num_w) map.
        if self.split_regroups:  # the permute's copy in two: (c, num_h) moved last, then num_w
            x = _regroup_in_two(x, (n, c * num_h, -1), (n * group_h, num_w, -1))
        else:
            x = x.view(n, c, num_h, group_h, num_w, group_w)
            x = x.permute(0, 3, 5, 1, 2, 4)  # (n, group_h, group_w, c, num_h, num_w)
        x = self.global_relation(x.reshape(-1, c, num_h, num_w))
        # Short range: each contiguous block forms one (group_h, group_w) map.
        if self.split_regroups:  # (num_h, num_w) moved before c, then the offsets last
            x = _regroup_in_two(x, (n, group_h * group_w, c, -1), (n, group_h * group_w, -1))
        else:
            x = x.view(n, group_h, group_w, c, num_h, num_w)
            x = x.permute(0, 4, 5, 3, 1, 2)  # (n, num_h, num_w, c, group_h, group_w)
        x = self.local_relation(x.reshape(-1, c, group_h, group_w))
        # Back to the image layout, then crop the padding away.
        x = x.view(n, num_h, num_w, c, group_h, group_w)
        x = x.permute(0, 3, 1, 4, 2, 5)  # (n, c, num_h, group_h, num_w, group_w)
        return x.reshape(n, c, num_h * group_h, num_w * group_w)

    def _relations_token_major(self, x: Tensor) -> Tensor:
        """Both relations on the padded map (n, c, Hp, Wp) with three regrouping copies in all
        (into the long-range groups, between the relations, back to the image), the channels
        last in each: each relation's projections run on its tokens where they lie."""
        n, c, height, width = x.shape
        group_h, group_w = self.group_size
        num_h, num_w = height // group_h, width // group_w
        # Keep the caller's memory format, so a channels-last model stays channels-last.
        channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        grid = x.permute(0, 2, 3, 1).view(n, num_h, group_h, num_w, group_w, c)
        # Long range: a group per in-block offset (ly, lx), its tokens (gy, gx).
        tokens = regroup(grid, (0, 2, 4, 1, 3, 5)).view(n * group_h * group_w, num_h * num_w, c)
        tokens = self.global_relation.forward_tokens(tokens)
        # Short range: a group per block (gy, gx), its tokens (ly, lx).
        tokens = tokens.view(n, group_h, group_w, num_h, num_w, c)
        tokens = regroup(tokens, (0, 3, 4, 1, 2, 5)).view(n * num_h * num_w, group_h * group_w, c)
        tokens = self.local_relation.forward_tokens(tokens)
        tokens = tokens.view(n, num_h, num_w, group_h, group_w, c)  # (n, gy, gx, ly, lx, c)
        if channels_last:
            return regroup(tokens, (0, 1, 3, 2, 4, 5)).view(n, height, width, c).permute(0, 3, 1, 2)
        return regroup(tokens, (0, 5, 1, 3, 2, 4)).view(n, c, height, width)


def _regroup_in_two(x: Tensor, first: tuple[int, ...], second: tuple[int, ...]) -> Tensor:
    """Two copies, each swapping the last two axes of a view of the one before: ``x`` viewed
    as ``first``, then the result viewed as ``second``.

    In an exported graph each 6-d permute is one Transpose that moves the innermost axis,
    which ONNX Runtime's CPU kernel copies slowly: 27 and 42 ms for R-50's two at 512x1024,
    against 20 ms for the four swaps of two axes that replace them (docs/PERFORMANCE.md).
    PyTorch copies the 6-d permute faster itself, so only the export takes this path.
    """
    x = x.reshape(first).transpose(-1, -2)
    return x.reshape(second).transpose(-1, -2)


def _is_symbolic(size: int) -> bool:
    """True for a size that torch.export traces as a symbol (a dynamic dimension)."""
    return isinstance(size, torch.SymInt)


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
                ConvModule(
                    in_channels if i == 0 else channels, channels, 3, padding=1, sync_bn=sync_bn
                )
                for i in range(num_convs)
            ]
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.conv_seg(self.dropout(self.convs(features[self.feature_index])))
