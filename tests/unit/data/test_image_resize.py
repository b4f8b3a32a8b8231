"""The keep-ratio resize rule never yields a 0-pixel side (mmcv would, and OpenCV then fails)."""

from __future__ import annotations

import numpy as np
import pytest

from isaseg_cli.data.image import keep_ratio_size, resize_keep_ratio, resize_to, scale_by_ratio


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
