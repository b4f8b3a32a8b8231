"""Bilinear resizing as two matrix products, for the training loss on CUDA.

Resizing the logits to the label size is linear and separable: ``rows @ x @ cols.T`` with
each output pixel's two interpolation weights per axis in ``rows`` and ``cols``. PyTorch's
CUDA ``upsample_bilinear2d`` backward scatters every gradient with atomic additions, twice a
step (decode and auxiliary head), and costs far more than the two products and their
transposes (docs/PERFORMANCE.md has the figures).
They compute in float32 (without TF32, PyTorch's default for matmul), so the loss sees the
same values up to float rounding.
"""

from __future__ import annotations

import torch
from torch import Tensor


def interpolation_matrix(
    out_size: int, in_size: int, align_corners: bool, device: torch.device | str | None = None
) -> Tensor:
    """(out_size, in_size) float32 weights of 1-d linear interpolation, as
    ``F.interpolate(mode="bilinear")`` computes them for one axis (no ``scale_factor``)."""
    target = torch.arange(out_size, dtype=torch.float32, device=device)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        source = target * scale
    else:
        source = ((target + 0.5) * (in_size / out_size) - 0.5).clamp(min=0)
    low = source.floor().long().clamp(max=in_size - 1)
    high = (low + 1).clamp(max=in_size - 1)
    weight_high = source - low
    matrix = torch.zeros(out_size, in_size, dtype=torch.float32, device=device)
    rows = torch.arange(out_size, device=device)
    matrix.index_put_((rows, low), 1 - weight_high, accumulate=True)
    matrix.index_put_((rows, high), weight_high, accumulate=True)
    return matrix


def bilinear_resize(x: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """``F.interpolate(x.float(), size, mode="bilinear", align_corners=...)`` for (N, C, h, w)
    ``x``, as matrix products (float32 out; autograd through them is plain matmul)."""
    height, width = size
    rows = interpolation_matrix(height, x.shape[-2], align_corners, x.device)
    cols = interpolation_matrix(width, x.shape[-1], align_corners, x.device)
    with torch.autocast(x.device.type, enabled=False):
        return torch.matmul(rows, torch.matmul(x.float(), cols.T))
