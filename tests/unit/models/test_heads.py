"""The ISA head: padding at odd sizes, the interlacing permutation, and a naive reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from isaseg_cli.models.heads import ISAHead, SelfAttentionBlock


def _head(**kwargs) -> ISAHead:
    torch.manual_seed(0)
    head = ISAHead(16, 8, 4, 3, feature_index=0, **kwargs).eval()
    for module in head.modules():  # non-trivial BN statistics so no layer is an identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return head


@pytest.mark.parametrize("size", [(45, 61), (8, 8), (1, 1), (3, 50), (50, 3), (16, 24)])
def test_isa_head_at_odd_sizes_matches_the_naive_reference(size: tuple[int, int]) -> None:
    head = _head()
    feature = torch.randn(2, 16, *size)
    with torch.no_grad():
        logits = head([feature])
        assert logits.shape == (2, 3, *size)
        assert torch.allclose(logits, _naive_isa(head, feature), atol=1e-5)


class _GroupScale(nn.Module):
    """A stand-in relation that multiplies group ``g`` of a batch by ``g + 1``: which pixels
    end up in which group shows in the output (a mere identity would hide a wrong regrouping).
    ``forward`` takes groups as maps (the reference order), ``forward_tokens`` as tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.arange(1, x.shape[0] + 1, dtype=x.dtype).view(-1, 1, 1, 1)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens * torch.arange(1, tokens.shape[0] + 1, dtype=tokens.dtype).view(-1, 1, 1)


@pytest.mark.parametrize("fast_interlace", [False, True])
def test_interlace_round_trip_puts_every_pixel_in_its_two_groups(fast_interlace: bool) -> None:
    """45x61 pads to 48x64 (6x8 blocks of 8x8). Long range: pixel (Y, X) of the padded map is in
    group (Y % 8, X % 8); short range: in block (Y // 8, X // 8); the de-interlace puts it back."""
    head = _head(fast_interlace=fast_interlace)
    head.global_relation = _GroupScale()  # type: ignore[assignment]
    head.local_relation = _GroupScale()  # type: ignore[assignment]
    x = torch.randn(1, 8, 45, 61)
    with torch.no_grad():
        out = head.interlaced_attention(x)
    rows = torch.arange(45).view(-1, 1) + 1  # pad_h = 3: one zero row on top
    cols = torch.arange(61).view(1, -1) + 1  # pad_w = 3: one zero column on the left
    long_range = 1 + (rows % 8) * 8 + cols % 8
    short_range = 1 + (rows // 8) * 8 + cols // 8
    assert torch.allclose(out, x * (long_range * short_range).float(), rtol=1e-6)


def _naive_isa(head: ISAHead, feature: torch.Tensor) -> torch.Tensor:
    """Group by explicit index arithmetic: long range = same (y % 8, x % 8), short = same block."""
    x = head.in_conv(feature)
    residual = x
    n, c, h, w = x.shape
    gh, gw = head.group_size
    num_h, num_w = math.ceil(h / gh), math.ceil(w / gw)
    pad_h, pad_w = num_h * gh - h, num_w * gw - w
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    out = torch.empty_like(x)
    for ly in range(gh):
        for lx in range(gw):
            out[:, :, ly::gh, lx::gw] = head.global_relation(x[:, :, ly::gh, lx::gw])
    x, out = out, torch.empty_like(out)
    for by in range(num_h):
        for bx in range(num_w):
            rows, cols = slice(by * gh, (by + 1) * gh), slice(bx * gw, (bx + 1) * gw)
            out[:, :, rows, cols] = head.local_relation(x[:, :, rows, cols])
    out = out[:, :, pad_h // 2 : pad_h // 2 + h, pad_w // 2 : pad_w // 2 + w]
    return head.conv_seg(head.out_conv(torch.cat([out, residual], dim=1)))


@pytest.mark.parametrize("size", [(21, 19), (16, 16)])
def test_isa_head_matches_naive_per_group_attention(size: tuple[int, int]) -> None:
    head = _head()
    feature = torch.randn(2, 16, *size)
    with torch.no_grad():
        assert torch.allclose(head([feature]), _naive_isa(head, feature), atol=1e-5)


def test_attention_block_matches_explicit_softmax() -> None:
    torch.manual_seed(1)
    block = SelfAttentionBlock(6, 4).eval()
    x = torch.randn(2, 6, 3, 5)
    with torch.no_grad():
        q = block.query_project(x).flatten(2).transpose(1, 2)
        k = block.key_project(x).flatten(2)
        v = block.value_project(x).flatten(2).transpose(1, 2)
        weights = torch.softmax(q @ k / 2.0, dim=-1)  # 4 ** -0.5 = 1 / 2
        context = (weights @ v).transpose(1, 2).reshape(2, 6, 3, 5)
        assert torch.allclose(block(x), block.output_project(context), atol=1e-6)
