"""Image sizes from headers: read without decoding, and the pixel limit checked against them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.data.image_header import check_image_size, read_image_size
from isaseg_cli.errors import InputError
from tests.hostile import write_png_bomb


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif", ".webp"])
def test_sizes_come_from_the_header(tmp_path, suffix) -> None:
    path = tmp_path / f"a{suffix}"
    Image.fromarray(np.zeros((30, 70, 3), dtype=np.uint8)).save(path)
    assert read_image_size(path) == (70, 30)


def test_a_bomb_is_measured_and_refused_without_decoding(tmp_path, monkeypatch) -> None:
    bomb = write_png_bomb(tmp_path / "bomb.png", 60_000, 60_000)
    assert read_image_size(bomb) == (60_000, 60_000)  # beyond Pillow's own limit: read from IHDR

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(InputError, match=r"60000x60000 \(3,600,000,000 pixels\), which exceeds"):
        read_image_bgr(bomb)


def test_the_limit_is_inclusive_and_unknown_headers_pass_to_the_decoder(tmp_path) -> None:
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((10, 20, 3), dtype=np.uint8))
    check_image_size(path, max_pixels=200)
    with pytest.raises(InputError, match="--max-pixels 199 "):
        check_image_size(path, max_pixels=199)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    assert read_image_size(junk) is None
    with pytest.raises(InputError, match="cannot decode"):
        read_image_bgr(junk)
