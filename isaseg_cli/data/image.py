"""Image decoding, the keep-ratio resize rule and normalisation, as mmseg's test pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS, check_image_size, read_image_size
from isaseg_cli.errors import InputError

if TYPE_CHECKING:
    import torch

# OpenCV refuses to decode more pixels than this (its CV_IO_MAX_IMAGE_PIXELS default, 2^30).
OPENCV_MAX_PIXELS = 1 << 30

# ImageNet statistics in RGB order, on 0..255 pixel values
# (docs/FAITHFULNESS.md#pre-processing).
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)


def read_image_bgr(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decodes an image file as mmseg does: OpenCV, IMREAD_COLOR, uint8 HxWx3 BGR.

    The size in the header is checked first, so a decompression bomb is never decoded. TIFF and
    BigTIFF files are read by ``tifffile`` when the ``tiff`` extra is installed (no pixel limit
    but ``max_pixels``; ``data.tiff``), as the same uint8 BGR.

    Raises:
        InputError: the file is missing, larger than ``max_pixels`` or OpenCV's pixel limit, or
            not a decodable image.
    """
    from isaseg_cli.data.tiff import CodecMissingError, is_tiff, read_tiff_bgr, tifffile_available

    if is_tiff(path) and tifffile_available() and Path(path).is_file():
        try:
            return read_tiff_bgr(path, max_pixels)[0]
        except CodecMissingError:  # OpenCV's libtiff has the codecs, up to its pixel limit
            pass
    check_image_size(path, max_pixels)
    size = read_image_size(path) if max_pixels > OPENCV_MAX_PIXELS else None
    if size is not None and size[0] * size[1] > OPENCV_MAX_PIXELS:
        raise InputError(
            f"{path} is {size[0]}x{size[1]} ({size[0] * size[1]:,} pixels), beyond OpenCV's limit "
            f"of {OPENCV_MAX_PIXELS:,}: save it as a (Big)TIFF (pip install 'isaseg[tiff]') "
            f"and use --tile"
        )
    try:
        buffer = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    except cv2.error as exc:  # e.g. beyond OpenCV's own pixel limit, for formats Pillow lacks
        raise InputError(f"cannot decode {path}: {_last_line(str(exc))}") from None
    except MemoryError:
        raise InputError(f"cannot decode {path}: out of memory") from None
    if image is None:
        raise InputError(f"cannot decode {path}: not an image file OpenCV can read")
    return image


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def keep_ratio_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's ``rescale_size``: the largest (w, h) with the same aspect ratio that fits ``scale``.

    ``scale`` is an unordered (long, short) bound pair; sizes round half up by truncation. A side
    is never below 1 pixel: mmcv would ask OpenCV for a 0-pixel side of a 1 x 5000 image (and
    fail), so that side is clamped instead.
    """
    long_max, short_max = max(scale), min(scale)
    factor = min(long_max / max(height, width), short_max / min(height, width))
    return max(int(width * factor + 0.5), 1), max(int(height * factor + 0.5), 1)


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes a uint8 HxWxC image to exactly ``size`` (w, h) with OpenCV bilinear (mmcv's
    backend), in one step as mmcv's ``imrescale`` does; returns ``image`` if already that size."""
    height, width = image.shape[:2]
    if tuple(size) == (width, height):
        return image
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_LINEAR)


def resize_keep_ratio(image: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    """Resizes a uint8 HxWxC image to ``keep_ratio_size`` with OpenCV bilinear (mmcv's backend)."""
    height, width = image.shape[:2]
    return resize_to(image, keep_ratio_size(width, height, scale))


def scale_by_ratio(width: int, height: int, ratio: float) -> tuple[int, int]:
    """mmcv's ``_scale_size``: (int(w * r + 0.5), int(h * r + 0.5)), each side at least 1."""
    return max(int(width * ratio + 0.5), 1), max(int(height * ratio + 0.5), 1)


def normalize_bgr_array(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 BGR -> float32 (1, 3, H, W) RGB array, (pixel - mean) / std in float32.

    Matches mmseg 1.x's data preprocessor bit for bit: channel flip, cast, subtract, divide.
    """
    rgb = image[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)  # (3, H, W), contiguous
    mean = np.array(MEAN_RGB, dtype=np.float32).reshape(-1, 1, 1)
    std = np.array(STD_RGB, dtype=np.float32).reshape(-1, 1, 1)
    return ((rgb - mean) / std)[None]


def normalize_bgr(image: np.ndarray) -> torch.Tensor:
    """``normalize_bgr_array`` as a tensor. torch is imported here, not at the top: the exported
    networks' path (``engine.infer.exported``) reads and resizes images without it."""
    import torch

    return torch.from_numpy(normalize_bgr_array(image))
