"""The training pipeline of mmseg 0.x on paired numpy arrays, in its exact order
(docs/FAITHFULNESS.md#training-pipeline).

Images are uint8 HxWx3 BGR, labels uint8 HxW. Every random draw comes from the ``rng`` passed in,
so a sample's augmentation is reproducible from its seed alone.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from isaseg_cli.data.image import keep_ratio_size, normalize_bgr
from isaseg_cli.zoo.spec import DataSpec

Box = tuple[int, int, int, int]  # (y1, y2, x1, x2)

CROP_CHECKS = 10
FLIP_PROB = 0.5
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18


def random_resize(
    image: np.ndarray,
    label: np.ndarray,
    scale: tuple[int, int],
    ratio_range: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Scales ``scale`` (w, h) by r ~ U[low, high), then resizes with the keep-ratio rule
    (docs/FAITHFULNESS.md#keep-ratio-rounding).

    The image uses bilinear and the label nearest interpolation, both OpenCV, as mmcv does.
    """
    low, high = ratio_range
    ratio = rng.random() * (high - low) + low
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    height, width = image.shape[:2]
    size = keep_ratio_size(width, height, target)
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return image, label


def propose_crop(
    height: int, width: int, crop_size: tuple[int, int], rng: np.random.Generator
) -> Box:
    """A crop box at a uniform offset in [0, margin], clipped by the image."""
    margin_h = max(height - crop_size[0], 0)
    margin_w = max(width - crop_size[1], 0)
    offset_h = int(rng.integers(0, margin_h + 1))
    offset_w = int(rng.integers(0, margin_w + 1))
    return offset_h, offset_h + crop_size[0], offset_w, offset_w + crop_size[1]


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    crop_size: tuple[int, int],
    cat_max_ratio: float,
    ignore_index: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """mmseg's RandomCrop: up to 10 boxes are checked for >= 2 classes with the largest share
    below ``cat_max_ratio`` (ignored pixels not counted); after 10 failures the next box is used."""
    height, width = label.shape
    box = propose_crop(height, width, crop_size, rng)
    if cat_max_ratio < 1.0:
        for _ in range(CROP_CHECKS):
            y1, y2, x1, x2 = box
            values, counts = np.unique(label[y1:y2, x1:x2], return_counts=True)
            counts = counts[values != ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = propose_crop(height, width, crop_size, rng)
    y1, y2, x1, x2 = box
    return image[y1:y2, x1:x2], label[y1:y2, x1:x2]


def random_flip(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, prob: float = FLIP_PROB
) -> tuple[np.ndarray, np.ndarray]:
    """Mirrors image and label left-right together when a uniform draw is below ``prob``."""
    if rng.random() < prob:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _scale_shift(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # mmseg's convert: float32 arithmetic, clip to 0..255, then truncating cast to uint8.
    out = values.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(out, 0, 255).astype(np.uint8)


def _contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.integers(2):
        return _scale_shift(image, alpha=rng.uniform(*CONTRAST_RANGE))
    return image


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on a uint8 BGR image; each step runs on a fair coin.

    Order: brightness, then contrast either second (mode 1) or last (mode 0), with saturation and
    hue between them, each in its own OpenCV BGR -> HSV -> BGR round trip (H in 0..179).
    """
    image = np.ascontiguousarray(image)
    if rng.integers(2):
        image = _scale_shift(image, beta=rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    mode = rng.integers(2)
    if mode == 1:
        image = _contrast(image, rng)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = _scale_shift(hsv[:, :, 1], alpha=rng.uniform(*SATURATION_RANGE))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
        # numpy's randint(-18, 18): the upper bound is exclusive.
        shift = int(rng.integers(-HUE_DELTA, HUE_DELTA))
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int64) + shift) % 180
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
        image = _contrast(image, rng)
    return image


def pad_to_size(
    image: torch.Tensor, label: torch.Tensor, size: tuple[int, int], ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pads a normalised (3, H, W) image with 0 and an (H, W) label with ``ignore_index`` at the
    bottom and right up to ``size`` (h, w)."""
    height, width = label.shape
    pad_h, pad_w = max(size[0] - height, 0), max(size[1] - width, 0)
    if pad_h == 0 and pad_w == 0:
        return image, label
    padded_image = image.new_zeros((image.shape[0], height + pad_h, width + pad_w))
    padded_image[:, :height, :width] = image
    padded_label = label.new_full((height + pad_h, width + pad_w), ignore_index)
    padded_label[:height, :width] = label
    return padded_image, padded_label


class TrainTransform:
    """The training pipeline for one ``DataSpec``: resize, crop, flip, photometric, normalise, pad
    (docs/FAITHFULNESS.md#training-pipeline).

    Called as ``transform(image, label, rng)``, it returns the image as float32 (3, h_c, w_c) RGB
    normalised and the label as int64 (h_c, w_c), where (h_c, w_c) is ``spec.crop_size``.
    """

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spec
        image, label = random_resize(image, label, spec.train_scale, spec.ratio_range, rng)
        image, label = random_crop(
            image, label, spec.crop_size, spec.cat_max_ratio, spec.ignore_index, rng
        )
        image, label = random_flip(image, label, rng)
        image = photometric_distortion(image, rng)
        image_tensor = normalize_bgr(image)[0]  # (3, H, W) float32 RGB
        label_tensor = torch.from_numpy(np.ascontiguousarray(label)).long()  # (H, W)
        return pad_to_size(image_tensor, label_tensor, spec.crop_size, spec.ignore_index)
