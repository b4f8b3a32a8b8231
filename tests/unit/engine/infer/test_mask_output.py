"""engine/infer/mask_output: one mask written in each format, PNG or TIFF, with low-confidence
pixels (255) drawn grey only when the segmenter masks them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from isaseg_cli.engine.infer.confidence import ConfidenceSpec
from isaseg_cli.engine.infer.mask_output import confidence_spec, write_mask

PALETTE = ((10, 20, 30), (200, 100, 50), (0, 255, 0))


@dataclass
class _Segmenter:
    palette: tuple[tuple[int, int, int], ...] = PALETTE
    confidence: ConfidenceSpec = field(default_factory=ConfidenceSpec)


MASK = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
IMAGE = np.full((2, 3, 3), 100, dtype=np.uint8)


def test_index_png_keeps_the_indices_and_carries_the_palette(tmp_path: Path) -> None:
    path = write_mask(_Segmenter(), "index", tmp_path / "m.png", MASK, IMAGE, 0.5)
    with Image.open(path) as png:
        assert png.mode == "P"
        assert np.array_equal(np.asarray(png), MASK)
        assert tuple(png.getpalette()[:9]) == sum(PALETTE, ())


def test_color_png_paints_each_class_in_its_colour(tmp_path: Path) -> None:
    path = write_mask(_Segmenter(), "color", tmp_path / "c.png", MASK, IMAGE, 0.5)
    rgb = cv2.imread(str(path))[..., ::-1]
    assert np.array_equal(rgb, np.array(PALETTE, dtype=np.uint8)[MASK])


def test_overlay_blends_the_image_and_the_colours(tmp_path: Path) -> None:
    path = write_mask(_Segmenter(), "overlay", tmp_path / "o.png", MASK, IMAGE, 0.5)
    bgr = cv2.imread(str(path)).astype(int)
    colours = np.array(PALETTE)[MASK][..., ::-1]
    assert np.abs(bgr - (IMAGE + colours) / 2).max() <= 1


def test_ignored_pixels_are_grey_only_with_min_confidence(tmp_path: Path) -> None:
    masked = MASK.copy()
    masked[0, 0] = 255
    sure = _Segmenter(confidence=ConfidenceSpec(min_confidence=0.5))
    path = write_mask(sure, "color", tmp_path / "g.png", masked, IMAGE, 0.5)
    pixel = cv2.imread(str(path))[0, 0]
    assert pixel[0] == pixel[1] == pixel[2]  # grey
    assert confidence_spec(object()) == ConfidenceSpec()  # an exported network: plain masks


def test_a_tif_path_gets_a_tiff(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    path = write_mask(_Segmenter(), "index", tmp_path / "m.tif", MASK, IMAGE, 0.5)
    assert np.array_equal(tifffile.imread(path), MASK)
