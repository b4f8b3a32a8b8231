"""The server's body decoding: limits come from the header, before any pixel is decoded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.serve import image_header
from isaseg_cli.serve.api_error import ApiError
from isaseg_cli.serve.image_header import decode_image, image_size
from tests.helpers import huge_png_header


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(image_header.cv2, "imdecode", refuse)


@pytest.mark.parametrize(("width", "height"), [(60_000, 60_000), (10_000, 9_000)])
def test_a_huge_header_is_refused_without_decoding(
    no_decoding: None, width: int, height: int
) -> None:
    with pytest.raises(ApiError) as caught:
        decode_image(huge_png_header(width, height), max_pixels=4096 * 4096)
    assert caught.value.status == 413
    assert "pixels" in str(caught.value)


def test_the_size_comes_from_the_header(tiny_image_path: Path) -> None:
    assert image_size(huge_png_header(10_000, 9_000)) == (10_000, 9_000)
    assert image_size(tiny_image_path.read_bytes()) == (141, 97)


def test_a_good_image_decodes_as_predict_reads_files(tiny_image_path: Path) -> None:
    decoded = decode_image(tiny_image_path.read_bytes(), max_pixels=141 * 97)
    np.testing.assert_array_equal(decoded, read_image_bgr(tiny_image_path))
    with pytest.raises(ApiError, match="limit is 13676"):
        decode_image(tiny_image_path.read_bytes(), max_pixels=141 * 97 - 1)


def test_a_jpeg_body_decodes_too() -> None:
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    body = cv2.imencode(".jpg", image)[1].tobytes()
    assert decode_image(body, max_pixels=600).shape == (20, 30, 3)
