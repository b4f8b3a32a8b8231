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
def test_isa_head_runs_at_odd_sizes(size: tuple[int, int]) -> None:
    head = _head()
    feature = torch.randn(2, 16, *size)
    with torch.no_grad():
        logits = head([feature])
        reference = _naive_isa(head, feature)
    assert logits.shape == (2, 3, *size)
    assert torch.isfinite(logits).all()
    # The values, not only the shape: padding, grouping and cropping as the naive reference does.
    assert torch.allclose(logits, reference, atol=1e-5)


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_interlace_round_trip_is_exact_with_identity_attention() -> None:
    head = _head()
    head.global_relation = _Identity()  # type: ignore[assignment]
    head.local_relation = _Identity()  # type: ignore[assignment]
    captured = {}
    head.out_conv.register_forward_pre_hook(lambda module, args: captured.update(input=args[0]))
    with torch.no_grad():
        head([torch.randn(1, 16, 45, 61)])
    isa_part, residual = captured["input"].chunk(2, dim=1)
    assert torch.equal(isa_part, residual)


class _AddGroupMarker(nn.Module):
    """Records its input, a batch of groups, and adds ``step * (index + 1)`` to group ``index``,
    so the output shows which group every pixel went through."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        marker = torch.arange(1, x.shape[0] + 1, dtype=x.dtype) * self.step
        return x + marker.view(-1, 1, 1, 1)


def test_interlace_puts_each_pixel_in_its_groups_and_back_in_place() -> None:
    """Long range: group (n, ly, lx) holds the pixels at (ly::8, lx::8) of the padded map;
    short range: group (n, gy, gx) holds block (gy, gx); both in mmseg's batch order. Each
    group's output returns to exactly those pixels, and the padding (1 before, 2 after on
    both sides of 45 x 61) is cropped away."""
    head = _head()
    head.global_relation = _AddGroupMarker(1.0)  # type: ignore[assignment]
    head.local_relation = _AddGroupMarker(1.0 / 1024)  # type: ignore[assignment]
    captured = {}
    head.out_conv.register_forward_pre_hook(lambda module, args: captured.update(input=args[0]))
    n, (h, w), (gh, gw) = 2, (45, 61), head.group_size
    with torch.no_grad():
        head([torch.randn(n, 16, h, w)])
    isa_part, residual = captured["input"].chunk(2, dim=1)
    padded = F.pad(residual, (1, 2, 1, 2))  # (n, C, 48, 64): 6 x 8 blocks of 8 x 8
    num_h, num_w = 6, 8
    (long_range,) = head.global_relation.inputs
    assert long_range.shape == (n * gh * gw, residual.shape[1], num_h, num_w)
    expected = padded.clone()
    for b in range(n):
        for ly in range(gh):
            for lx in range(gw):
                group = (b * gh + ly) * gw + lx
                assert torch.equal(long_range[group], padded[b, :, ly::gh, lx::gw])
                expected[b, :, ly::gh, lx::gw] += group + 1.0
    (short_range,) = head.local_relation.inputs
    assert short_range.shape == (n * num_h * num_w, residual.shape[1], gh, gw)
    for b in range(n):
        for gy in range(num_h):
            for gx in range(num_w):
                group = (b * num_h + gy) * num_w + gx
                block = (slice(gy * gh, (gy + 1) * gh), slice(gx * gw, (gx + 1) * gw))
                assert torch.equal(short_range[group], expected[b, :, block[0], block[1]])
                expected[b, :, block[0], block[1]] += (group + 1) / 1024
    assert torch.equal(isa_part, expected[:, :, 1 : 1 + h, 1 : 1 + w])


class _GroupScale(nn.Module):
    """A stand-in relation that multiplies group ``g`` of a batch by ``g + 1``, with both
    entry points: ``forward`` takes groups as maps (the reference order), ``forward_tokens``
    as tokens (the copy-saving interlace)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.arange(1, x.shape[0] + 1, dtype=x.dtype).view(-1, 1, 1, 1)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens * torch.arange(1, tokens.shape[0] + 1, dtype=tokens.dtype).view(-1, 1, 1)


@pytest.mark.parametrize("fast_interlace", [False, True])
def test_both_interlace_paths_put_every_pixel_in_its_two_groups(fast_interlace: bool) -> None:
    """45x61 pads to 48x64 (6x8 blocks of 8x8). Long range: pixel (Y, X) of the padded map is in
    group (Y % 8, X % 8); short range: in block (Y // 8, X // 8); the de-interlace puts it back,
    on the reference path and on the token-major one alike."""
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
