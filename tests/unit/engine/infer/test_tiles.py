"""Tiled inference: equal to the full-canvas slide wherever both fit, logits resized band by band
as the whole canvas would be, and memory bounded by the band rather than the image."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isaseg_cli.bench.memory import peak_tensor_bytes
from isaseg_cli.data.image import normalize_bgr, read_image_bgr
from isaseg_cli.engine.infer.confidence import ConfidenceSpec
from isaseg_cli.engine.infer.pipeline import forward_logits, infer_scores
from isaseg_cli.engine.infer.protocol import slide_windows
from isaseg_cli.engine.infer.tiles import (
    logit_bands,
    resized_bands,
    segment_tiled,
    window_rows,
)
from isaseg_cli.engine.loading import load_model
from isaseg_cli.errors import InputError
from isaseg_cli.zoo import spec
from tests.helpers import assert_close_to_reference, assert_masks_match_except_ties


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(checkpoint=tiny_checkpoint).model.eval()


@pytest.fixture(scope="module")
def image(tiny_image_path) -> np.ndarray:
    return read_image_bgr(tiny_image_path)  # 97 x 141


def _slide(crop: tuple[int, int], stride: tuple[int, int], **changes) -> spec.TestSpec:
    return spec.TestSpec(mode="slide", crop_size=crop, stride=stride, **changes)


def test_window_rows_are_slides_windows_by_row() -> None:
    rows = window_rows(200, 150, (64, 48), (40, 30))
    assert [box for row in rows for box in row] == slide_windows(200, 150, (64, 48), (40, 30))
    assert all(len({box[:2] for box in row}) == 1 for row in rows)
    assert [row[0][0] for row in rows] == sorted(
        {box[0] for box in slide_windows(200, 150, (64, 48), (40, 30))}
    )


@pytest.mark.parametrize(
    ("tile", "stride", "window_batch"),
    [
        ((64, 64), (43, 43), 1),
        ((64, 48), (40, 30), 3),
        ((200, 64), (150, 43), 2),
        ((32, 32), (32, 32), 1),
    ],
)
@torch.no_grad()
def test_bands_equal_the_full_canvas_slide(model, image, tile, stride, window_batch) -> None:
    reference = forward_logits(model, normalize_bgr(image), _slide(tile, stride))[0].numpy()
    bands = list(logit_bands(model, image, tile, stride, window_batch=window_batch))
    tops = [top for top, _ in bands]
    assert tops == sorted(tops) and tops[0] == 0
    assert all(band.shape[1] <= min(tile[0], image.shape[0]) for _, band in bands)
    ours = torch.cat([band for _, band in bands], dim=1)
    assert_close_to_reference(ours, reference)
    if window_batch == 1:  # the same windows summed in the same order: the same floats
        assert np.array_equal(ours.numpy(), reference)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    ("source", "size"), [((37, 50), (100, 73)), ((100, 80), (37, 41)), ((1, 5), (7, 9))]
)
def test_resized_bands_equal_one_interpolate(align_corners, source, size) -> None:
    logits = torch.randn(1, 4, *source, generator=torch.Generator().manual_seed(0))
    reference = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)

    def bands():  # uneven bands, as windows of different rows finish them
        top = 0
        for rows in (3, 1, 10, 7, 1000):
            if top < source[0]:
                yield top, logits[0, :, top : top + rows]
            top += rows

    out = list(resized_bands(bands(), source[0], size, align_corners))
    assert [top for top, _ in out] == sorted(top for top, _ in out)
    assert_close_to_reference(torch.cat([b for _, b in out], dim=1), reference[0].numpy())


@pytest.mark.parametrize("scale", [None, (150, 100), (70, 40)])
def test_segment_tiled_equals_slide_inference(model, image, scale) -> None:
    test = _slide((64, 64), (43, 43), scale=scale)
    scores = infer_scores(model, image, test)  # (1, K, H, W) at the original size
    result = segment_tiled(
        model, image, (64, 64), (43, 43), scale=scale, spec=ConfidenceSpec(measure="top1")
    )
    assert result.mask.shape == image.shape[:2]
    assert_masks_match_except_ties(result.mask[None], scores.argmax(1).numpy(), scores.numpy())
    top1 = scores[0].softmax(0).amax(0).numpy()
    assert result.confidence is not None and result.confidence.dtype == np.float16
    assert np.abs(result.confidence.astype(np.float32) - top1).max() <= 1e-3  # float16 storage
    assert result.stats.mean_confidence == pytest.approx(float(top1.mean()), rel=1e-5)
    assert sum(result.stats.class_pixels) == image.shape[0] * image.shape[1]


def test_float16_accumulation_changes_few_pixels(model, image) -> None:
    full = segment_tiled(model, image, (48, 48), (32, 32))
    half = segment_tiled(model, image, (48, 48), (32, 32), accumulate="float16")
    assert (full.mask != half.mask).mean() < 0.01


def test_bad_tile_options(model, image) -> None:
    with pytest.raises(InputError, match="must not exceed"):
        segment_tiled(model, image, (32, 32), (40, 32))
    with pytest.raises(InputError, match="probabilities"):
        segment_tiled(model, image, (32, 32), (16, 16), spec=ConfidenceSpec(probs=True))
    with pytest.raises(InputError, match="accumulate"):
        segment_tiled(model, image, (32, 32), (16, 16), accumulate="int8")


def _peak_above_image(run) -> int:
    """Peak bytes of tensors (counted per aten op) plus numpy arrays (tracemalloc) that ``run``
    held at once, the image itself excluded (it existed before). ``run`` runs once first, so
    one-time set-up (kernel caches, lazy imports) is not counted."""
    run()
    tracemalloc.start()
    try:
        _, tensors = peak_tensor_bytes(run)
        _, arrays = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return tensors + arrays


def test_memory_is_bounded_by_the_band_not_the_image(model, tiny_image_path, one_thread) -> None:
    base = cv2.imread(str(tiny_image_path))[:96, :128]
    small = np.ascontiguousarray(np.tile(base, (2, 1, 1)))  # 192 x 128
    large = np.ascontiguousarray(np.tile(base, (8, 1, 1)))  # 768 x 128: 4x the pixels
    tile, stride = (64, 64), (43, 43)
    confidence = ConfidenceSpec(measure="top1")

    def tiled(image):
        return lambda: segment_tiled(model, image, tile, stride, spec=confidence)

    small_peak, large_peak = (
        _peak_above_image(tiled(small)),
        _peak_above_image(tiled(large)),
    )
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)

    # The control: the full-canvas slide grows with the image, so the check above has teeth.
    def slide(image):
        return lambda: infer_scores(model, image, _slide(tile, stride))

    slide_small, slide_large = (
        _peak_above_image(slide(small)),
        _peak_above_image(slide(large)),
    )
    assert slide_large > 2.5 * slide_small, (slide_small, slide_large)
