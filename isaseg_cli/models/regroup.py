"""Permuting copies that move whole channel rows as 8-byte words.

ISA's interlacing regroups a channels-last map between the image layout and its two token
layouts: permutes that keep the channel axis last and contiguous. PyTorch copies a permuted
view element by element, computing a multi-axis offset for every 2-byte bf16 value; viewing
the rows as int64 first does the same copy with a quarter of the elements. The words are
copied unchanged, so the result is bit-identical to ``x.permute(order).contiguous()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

_WORD = torch.int64


def _word_view(x: Tensor) -> Tensor | None:
    """``x`` viewed as 8-byte words along its (contiguous) last axis, or None if it cannot be."""
    ratio = _WORD.itemsize // x.element_size()
    if ratio <= 1 or x.stride(-1) != 1 or x.shape[-1] % ratio or x.storage_offset() % ratio:
        return None
    if any(stride % ratio for stride in x.stride()[:-1]):
        return None
    return x.view(_WORD)


def _permuted_copy(x: Tensor, order: Sequence[int]) -> Tensor:
    view = x.permute(*order)
    words = _word_view(view)
    if words is None:
        return view.contiguous()
    return words.contiguous().view(x.dtype)


class _Regroup(torch.autograd.Function):
    """Autograd for the word copy (a dtype view would cut the graph): the gradient is the
    inverse permutation of the output's gradient, copied the same way."""

    @staticmethod
    def forward(ctx, x: Tensor, order: tuple[int, ...]) -> Tensor:  # type: ignore[override]
        ctx.inverse = tuple(order.index(axis) for axis in range(len(order)))
        return _permuted_copy(x, order)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _permuted_copy(grad.contiguous(), ctx.inverse), None


def regroup(x: Tensor, order: Sequence[int]) -> Tensor:
    """``x.permute(*order).contiguous()``, bit for bit. ``order`` must keep the last axis last
    for the fast word copy; any other order falls back to the plain copy."""
    order = tuple(order)
    if torch.is_grad_enabled() and x.requires_grad:
        return _Regroup.apply(x, order)
    return _permuted_copy(x, order)
