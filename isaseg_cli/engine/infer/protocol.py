"""The test protocol in plain Python: test settings with the user's overrides, input images as
BGR arrays, slide windows and ms+flip views. Shared by the PyTorch ``segmenter`` and
``pipeline`` and by ``exported``, which runs exported networks without importing torch."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from isaseg_cli.data.image import (
    keep_ratio_size,
    read_image_bgr,
    resize_keep_ratio,
    scale_by_ratio,
)
from isaseg_cli.errors import InputError
from isaseg_cli.zoo.spec import TestSpec, ZooEntry

ImageInput = np.ndarray | str | Path


def default_slide_stride(crop_size: tuple[int, int]) -> tuple[int, int]:
    """The stride of a slide crop that has none: 2/3 of it, rounded up (mmseg's 769 -> 513,
    docs/FAITHFULNESS.md#test-pipeline)."""
    return (-(-2 * crop_size[0] // 3), -(-2 * crop_size[1] // 3))


def _check_size(value: tuple[int, int] | None, what: str) -> None:
    if value is not None and (len(value) != 2 or min(value) < 1):
        raise InputError(f"{what} must be two positive integers (height, width), got {value}")


def resolve_test_spec(
    entry: ZooEntry,
    *,
    mode: str | None = None,
    crop: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
) -> TestSpec:
    """The entry's test settings with the user's overrides applied.

    A crop or stride without a mode means ``slide``. In ``slide`` the crop defaults to the entry's
    test crop, else its training crop; the stride to the entry's, else 2/3 of the crop.

    Raises:
        InputError: unknown mode, crop/stride given for ``whole``, or a stride larger than the crop
            (which would leave pixels that no window covers).
    """
    _check_size(crop, "crop")
    _check_size(stride, "stride")
    test = entry.test
    mode = mode or ("slide" if crop or stride else test.mode)
    if mode not in ("whole", "slide"):
        raise InputError(f"mode must be 'whole' or 'slide', not {mode!r}")
    if mode == "whole":
        if crop or stride:
            raise InputError("crop and stride apply to slide mode only")
        return dataclasses.replace(test, mode="whole", crop_size=None, stride=None)
    crop = tuple(crop or test.crop_size or entry.data.crop_size)  # type: ignore[assignment]
    if stride is None:
        stride = test.stride if test.stride and crop == test.crop_size else None
        stride = stride or default_slide_stride(crop)
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise InputError(f"stride {stride} must not exceed crop {crop}: windows would leave gaps")
    return dataclasses.replace(test, mode="slide", crop_size=crop, stride=tuple(stride))


def as_bgr(image: ImageInput, *, rgb: bool = False) -> np.ndarray:
    """A file path or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (H, W, 3) BGR.

    Arrays are taken as BGR(A), OpenCV's order, unless ``rgb``. Files are decoded as mmseg does.

    Raises:
        InputError: the file cannot be decoded, or the array is not uint8 with 1, 3 or 4 channels.
    """
    if isinstance(image, str | Path):
        return read_image_bgr(image)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"expected a uint8 image array or a path, got {kind}")
    channels = 1 if image.ndim == 2 else image.shape[-1] if image.ndim == 3 else 0
    if channels == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return np.ascontiguousarray(image[..., ::-1]) if rgb else image
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if rgb else cv2.COLOR_BGRA2BGR)
    raise InputError(f"expected an (H, W) or (H, W, 1|3|4) image, got shape {image.shape}")


def prepare_image(image_bgr: np.ndarray, test: TestSpec) -> np.ndarray:
    """One BGR uint8 image at the scale of single-scale inference (whole or slide): the keep-ratio
    resize to ``test.scale`` of the test pipeline, or the image itself without one or when it
    already has that size. Still uint8 (h, w, 3): the segmenter normalises on its device, and a
    quarter of float32's bytes crosses from decode workers and to the GPU. Torch-free, so
    predict's decode workers can run it."""
    return resize_keep_ratio(image_bgr, test.scale) if test.scale else image_bgr


def ms_flip_ratios(scales: Sequence[float] | None, ms_flip: bool) -> tuple[float, ...] | None:
    """The multi-scale ratios a user gave (None: the entry's), checked.

    Raises:
        InputError: ratios without ms+flip, or ratios that are not all positive.
    """
    if scales is None:
        return None
    if not ms_flip:
        raise InputError("scales are the multi-scale ratios of ms+flip: add ms_flip / --ms-flip")
    if not scales or min(scales) <= 0:
        raise InputError(f"scales must be positive ratios, got {list(scales)}")
    return tuple(float(s) for s in scales)


def chunks(items: list, size: int) -> Iterator[list]:
    """``items`` in consecutive groups of ``size`` (windows per forward pass)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


def linear_taps(
    in_size: int, out_size: int, align_corners: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output position along one axis of a bilinear resize: the two source indices and
    the weight of the second, computed as PyTorch's ``upsample_bilinear2d`` does (float32
    source coordinates, clamped at 0; ``area_pixel_compute_source_index``)."""
    dst = np.arange(out_size, dtype=np.float32)
    if align_corners:
        scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0)
        src = dst * scale
    else:
        scale = np.float32(in_size) / np.float32(out_size)
        src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    index0 = src.astype(np.int64)  # truncation, as the C++ cast: src >= 0
    index1 = np.minimum(index0 + 1, in_size - 1)
    weight1 = np.clip(src - index0.astype(np.float32), 0, 1).astype(np.float32)
    return index0, index1, weight1
