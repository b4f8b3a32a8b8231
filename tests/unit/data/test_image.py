"""Decoding (OpenCV, BGR), the keep-ratio resize rule and normalisation of the test pipeline.

The keep-ratio rule never yields a 0-pixel side (mmcv would, and OpenCV then fails).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from isaseg_cli.data.image import (
    MEAN_RGB,
    STD_RGB,
    keep_ratio_size,
    normalize_bgr,
    read_image_bgr,
    resize_keep_ratio,
    resize_to,
    scale_by_ratio,
)
from isaseg_cli.errors import InputError


@pytest.mark.parametrize("width, height", [(1, 5000), (5000, 1), (1, 1), (2, 40000)])
def test_degenerate_sizes_keep_at_least_one_pixel(width: int, height: int) -> None:
    new_w, new_h = keep_ratio_size(width, height, (2048, 1024))
    assert new_w >= 1 and new_h >= 1
    assert max(new_w, new_h) <= 2048 and min(new_w, new_h) <= 1024
    image = np.zeros((height, width, 3), dtype=np.uint8)
    assert resize_keep_ratio(image, (2048, 1024)).shape == (new_h, new_w, 3)
    assert min(scale_by_ratio(width, height, 0.25)) >= 1


def test_ordinary_sizes_follow_mmcv_rounding() -> None:
    # 1500 x 500 into (2048, 1024): factor min(2048/1500, 1024/500) = 1.3653..., 682.67 -> 683
    assert keep_ratio_size(1500, 500, (2048, 1024)) == (2048, 683)
    assert keep_ratio_size(500, 375, (2048, 512)) == (683, 512)
    assert scale_by_ratio(141, 97, 0.5) == (71, 49)


def test_resize_to_gives_exactly_the_size_asked() -> None:
    image = np.zeros((500, 1500, 3), dtype=np.uint8)
    assert resize_to(image, (1024, 341)).shape == (341, 1024, 3)
    assert resize_to(image, (1500, 500)) is image


def test_images_decode_as_bgr_and_grey_ones_as_three_channels(tmp_path: Path) -> None:
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    assert np.array_equal(read_image_bgr(tmp_path / "blue.png"), bgr)
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((4, 6), 77, np.uint8))
    grey = read_image_bgr(tmp_path / "grey.png")
    assert grey.shape == (4, 6, 3) and (grey == 77).all()


def test_unreadable_images_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    for name in ("empty.png", "text.png"):
        with pytest.raises(InputError, match=f"cannot decode .*{name}"):
            read_image_bgr(tmp_path / name)


def test_normalisation_flips_to_rgb_and_standardises_in_float32() -> None:
    bgr = np.array([[[10, 20, 30], [255, 0, 128]]], np.uint8)  # 1 x 2 pixels
    images = normalize_bgr(bgr)
    assert images.shape == (1, 3, 1, 2) and images.dtype == torch.float32
    rgb = bgr[..., ::-1].astype(np.float32)
    expected = (rgb - np.float32(MEAN_RGB)) / np.float32(STD_RGB)
    assert torch.allclose(images[0].permute(1, 2, 0), torch.from_numpy(expected), atol=1e-6)
