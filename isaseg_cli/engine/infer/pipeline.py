"""Test-time inference as mmsegmentation does it: whole or sliding-window, single scale or
multi-scale + flip, with logits brought back to the original image size."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from isaseg_cli.data.image import normalize_bgr, resize_keep_ratio, resize_to
from isaseg_cli.engine.infer.protocol import chunks, ms_flip_views, slide_windows
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import TestSpec


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
    for group in chunks(boxes, max(1, window_batch)):
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
