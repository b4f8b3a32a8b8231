"""Test-time inference as mmsegmentation does it: whole or sliding-window, single scale or
multi-scale + flip, with logits brought back to the original image size."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from isaseg_cli.data.image import (
    keep_ratio_size,
    normalize_bgr,
    resize_keep_ratio,
    resize_to,
    scale_by_ratio,
)
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import TestSpec


def slide_windows(
    height: int, width: int, crop_size: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[int, int, int, int]]:
    """Window boxes (y1, y2, x1, x2) in mmseg's order; edge windows are shifted back inside.

    Every window has the same size, ``min(crop, image)`` per side, so they can run as one batch.
    """
    crop_h, crop_w = crop_size
    stride_h, stride_w = stride
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    boxes = []
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride_h + crop_h, height)
            x2 = min(col * stride_w + crop_w, width)
            boxes.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
    return boxes


def default_slide_stride(crop_size: tuple[int, int]) -> tuple[int, int]:
    """The stride of a slide crop that has none: 2/3 of it, rounded up (mmseg's 769 -> 513,
    docs/FAITHFULNESS.md#test-pipeline)."""
    return (-(-2 * crop_size[0] // 3), -(-2 * crop_size[1] // 3))


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def forward_logits(
    model: Segmentor,
    images: Tensor,
    test: TestSpec,
    *,
    window_batch: int = 1,
) -> Tensor:
    """Logits (N, K, H, W) at the size of the normalised ``images`` (N, 3, H, W).

    ``slide`` adds each window's logits into a canvas and divides by the coverage count;
    ``window_batch`` windows run through the network together.
    """
    if test.mode == "whole":
        return model(images)["out"].float()
    assert test.crop_size is not None and test.stride is not None  # TestSpec guarantees it
    n, _, height, width = images.shape
    boxes = slide_windows(height, width, test.crop_size, test.stride)
    canvas: Tensor | None = None
    count = images.new_zeros((n, 1, height, width))
    for group in _chunks(boxes, max(1, window_batch)):
        crops = torch.cat([images[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
        window_logits = model(crops)["out"].float()  # (len(group) * N, K, h, w)
        if canvas is None:
            canvas = images.new_zeros(
                (n, window_logits.shape[1], height, width), dtype=torch.float32
            )
        for index, (y1, y2, x1, x2) in enumerate(group):
            canvas[:, :, y1:y2, x1:x2] += window_logits[index * n : (index + 1) * n]
            count[:, :, y1:y2, x1:x2] += 1
    assert canvas is not None
    return canvas / count


def ms_flip_views(
    width: int, height: int, test: TestSpec, ratios: tuple[float, ...] | None = None
) -> list[tuple[tuple[int, int], bool]]:
    """The (size (w, h), flip) of each multi-scale + flip view, ratio-major, unflipped first.

    Rule "scale" (mmseg 0.x, the published protocol): each ratio scales the test scale, and the
    image is fitted into it keep-ratio. Rule "image" (mmseg 1.x), or no test scale: each ratio
    scales the image itself, then the keep-ratio rule is applied again. Either way the image is
    then resized once to exactly this size (mmcv's ``imrescale``), never fitted a second time.
    """
    views = []
    for ratio in ratios or test.ms_ratios:
        if test.ms_rule == "scale" and test.scale is not None:
            bound = (int(test.scale[0] * ratio), int(test.scale[1] * ratio))
        else:
            bound = scale_by_ratio(width, height, ratio)
        size = keep_ratio_size(width, height, bound)
        views += [(size, False), (size, True)]
    return views


@torch.no_grad()
def infer_scores(
    model: Segmentor,
    image_bgr: np.ndarray,
    test: TestSpec,
    *,
    ms_flip: bool = False,
    ratios: tuple[float, ...] | None = None,
    device: torch.device | str = "cpu",
    window_batch: int = 1,
) -> Tensor:
    """Per-class scores (1, K, H0, W0) at the original image size; the mask is their argmax.

    Single scale: logits of the test pipeline (keep-ratio resize to ``test.scale``, inference,
    bilinear resize back). With ``ms_flip``: the mean of softmax probabilities over the views of
    ``ms_flip_views``, each flipped back and resized to the original size before the softmax.
    """
    height, width = image_bgr.shape[:2]
    if not ms_flip:
        resized = resize_keep_ratio(image_bgr, test.scale) if test.scale else image_bgr
        images = normalize_bgr(resized).to(device)
        logits = forward_logits(model, images, test, window_batch=window_batch)
        return model.resize(logits, (height, width))
    total: Tensor | None = None
    views = ms_flip_views(width, height, test, ratios)
    for size, flip in views:
        view = resize_to(image_bgr, size)
        if flip:
            view = view[:, ::-1]
        logits = forward_logits(
            model, normalize_bgr(view).to(device), test, window_batch=window_batch
        )
        if flip:
            logits = logits.flip(dims=(3,))
        probs = model.resize(logits, (height, width)).softmax(dim=1)
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(views)
