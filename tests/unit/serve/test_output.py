"""Response bodies: the predict encoders to bytes, and the JSON summary's counts and confidences."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.mask_io import colorize, to_cityscapes_label_ids
from isaseg_cli.serve.output import FORMATS, encode_result, summarize

CLASSES = ("road", "car", "sky")
PALETTE = ((128, 64, 128), (0, 0, 142), (70, 130, 180))
MASK = np.array([[0, 0, 1], [2, 2, 2]], np.uint8)
PROBS = np.array(
    [
        [[0.9, 0.7, 0.1], [0.1, 0.0, 0.2]],
        [[0.05, 0.2, 0.6], [0.1, 0.3, 0.1]],
        [[0.05, 0.1, 0.3], [0.8, 0.7, 0.7]],
    ]
)


def _encode(fmt: str) -> tuple[bytes, str]:
    image = np.zeros((2, 3, 3), np.uint8)
    return encode_result(fmt, image=image, mask=MASK, probs=PROBS, classes=CLASSES,
                         palette=PALETTE, opacity=0.5)  # fmt: skip


def test_the_summary_counts_pixels_and_averages_the_top_probability() -> None:
    summary = summarize(MASK, PROBS, CLASSES)
    assert summary["width"] == 3 and summary["height"] == 2
    assert summary["classes"] == [
        {"index": 0, "name": "road", "pixels": 2, "mean_confidence": 0.8},
        {"index": 1, "name": "car", "pixels": 1, "mean_confidence": 0.6},
        {"index": 2, "name": "sky", "pixels": 3, "mean_confidence": round(2.2 / 3, 6)},
    ]
    assert summary["mean_confidence"] == pytest.approx((0.9 + 0.7 + 0.6 + 0.8 + 0.7 + 0.7) / 6)


def test_without_probabilities_only_counts_and_unknown_indices_keep_their_number() -> None:
    summary = summarize(np.array([[0, 5]], np.uint8), None, CLASSES)
    assert summary == {
        "width": 2,
        "height": 1,
        "classes": [
            {"index": 0, "name": "road", "pixels": 1},
            {"index": 5, "name": "5", "pixels": 1},
        ],
    }


def test_each_format_decodes_back_to_what_predict_writes() -> None:
    assert set(FORMATS) == {"index", "color", "overlay", "labelids", "json"}
    body, media = _encode("index")
    with Image.open(io.BytesIO(body)) as png:
        assert media == "image/png" and png.mode == "P"
        assert np.array_equal(np.array(png), MASK)
    body, _ = _encode("labelids")
    with Image.open(io.BytesIO(body)) as png:
        assert np.array_equal(np.array(png), to_cityscapes_label_ids(MASK))
    body, _ = _encode("color")
    rgb = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(rgb, colorize(MASK, PALETTE))
    body, media = _encode("json")
    assert media == "application/json"
    assert json.loads(body) == summarize(MASK, PROBS, CLASSES)
