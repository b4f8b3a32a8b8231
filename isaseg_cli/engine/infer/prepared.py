"""Inputs prepared outside the main thread (decode workers resize them to the test scale),
brought to the device as one normalised batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from isaseg_cli.data.image import MEAN_RGB, STD_RGB


def to_device(inputs: Sequence[np.ndarray], device: torch.device) -> Tensor:
    """Normalised images (N, 3, h, w) float32 on ``device`` from N BGR uint8 (h, w, 3) of one size.

    On CUDA the batch is stacked straight into page-locked memory (torch's caching host
    allocator keeps such a block until the copies that read it are done), so the copy does not
    block this thread, and crosses as uint8: a quarter of the bytes of float32.
    """
    tensors = [torch.from_numpy(np.ascontiguousarray(image)) for image in inputs]
    if device.type != "cuda":
        return normalize_batch(torch.stack(tensors).to(device))
    shape = (len(tensors), *tensors[0].shape)
    pinned = torch.empty(shape, dtype=tensors[0].dtype, pin_memory=True)
    return normalize_batch(torch.stack(tensors, out=pinned).to(device, non_blocking=True))


def normalize_batch(images_bgr: Tensor) -> Tensor:
    """``normalize_bgr_array`` of a batch (N, h, w, 3) uint8 on its device, bit for bit (the
    same float32 subtract and divide), as contiguous (N, 3, h, w) float32."""
    mean = torch.tensor(MEAN_RGB, dtype=torch.float32, device=images_bgr.device).view(1, 3, 1, 1)
    std = torch.tensor(STD_RGB, dtype=torch.float32, device=images_bgr.device).view(1, 3, 1, 1)
    rgb = images_bgr.permute(0, 3, 1, 2).flip(1)  # (N, 3, h, w), channels BGR -> RGB
    rgb = rgb.to(torch.float32, memory_format=torch.contiguous_format)
    return (rgb - mean) / std
