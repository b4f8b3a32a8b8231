"""Confidence maps equal the softmax of the logits, --min-confidence marks exactly the pixels
below it, bands add up to the whole image, and the files hold what they say."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.engine.infer.confidence import (
    IGNORE_GREY,
    IGNORE_INDEX,
    BandCollector,
    ConfidenceSpec,
    collect,
    confidence_bytes,
    label_ids,
    measure_map,
    palette_with_ignore,
    save_probs,
)
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import load_model
from isaseg_cli.errors import InputError


@pytest.fixture(scope="module")
def logits() -> torch.Tensor:
    return 3 * torch.randn(1, 5, 23, 31, generator=torch.Generator().manual_seed(1))


def test_measures_against_numpy(logits) -> None:
    probs = logits[0].double().softmax(0).numpy()
    top1 = probs.max(0)
    ordered = np.sort(probs, axis=0)
    entropy = -(probs * np.log(probs)).sum(0) / math.log(5)
    for measure, expected in (
        ("top1", top1),
        ("margin", ordered[-1] - ordered[-2]),
        ("entropy", entropy),
    ):
        result = collect(logits, ConfidenceSpec(measure=measure), are_probs=False)
        assert result.confidence is not None and result.confidence.dtype == np.float32
        np.testing.assert_allclose(result.confidence, expected, atol=1e-6)
        assert np.array_equal(result.mask, logits[0].argmax(0).numpy())
    assert result.stats.mean_confidence == pytest.approx(top1.mean(), rel=1e-6)


def test_entropy_is_zero_when_certain_and_one_when_uniform() -> None:
    certain = torch.zeros(4, 1, 2)
    certain[2] = 1
    uniform = torch.full((4, 1, 2), 0.25)
    assert measure_map(certain, certain.amax(0), "entropy").tolist() == [[0.0, 0.0]]
    assert measure_map(uniform, uniform.amax(0), "entropy") == pytest.approx(torch.ones(1, 2))


def test_min_confidence_marks_exactly_the_pixels_below(logits) -> None:
    top1 = logits[0].softmax(0).amax(0).numpy()
    threshold = float(np.median(top1))
    result = collect(logits, ConfidenceSpec(min_confidence=threshold), are_probs=False)
    below = top1 < threshold
    assert below.any() and (~below).any()
    assert np.array_equal(result.mask == IGNORE_INDEX, below)
    assert np.array_equal(result.mask[~below], logits[0].argmax(0).numpy()[~below])
    assert result.stats.low_confidence == int(below.sum())
    assert sum(result.stats.class_pixels) + result.stats.low_confidence == below.size


def test_bands_add_up_to_the_whole_image(logits) -> None:
    spec = ConfidenceSpec(measure="margin", min_confidence=0.4, probs=True)
    whole = collect(logits, spec, are_probs=False)
    collector = BandCollector(23, 31, 5, spec, are_probs=False)
    for top, rows in ((0, 5), (5, 1), (6, 17)):
        collector.add(top, logits[0, :, top : top + rows])
    banded = collector.result()
    assert np.array_equal(banded.mask, whole.mask)
    # the softmax's vector kernels may round a band's last pixels differently: ulps only
    np.testing.assert_allclose(banded.confidence, whole.confidence, atol=1e-6)
    np.testing.assert_allclose(banded.probs, whole.probs, atol=1e-6)
    assert banded.stats.class_pixels == whole.stats.class_pixels
    assert banded.stats.mean_confidence == pytest.approx(whole.stats.mean_confidence, rel=1e-12)


def test_probabilities_in_are_not_softmaxed_again(logits) -> None:
    probs = logits.softmax(1)
    result = collect(probs, ConfidenceSpec(measure="top1", probs=True), are_probs=True)
    assert np.array_equal(result.probs, probs[0].numpy())
    assert np.array_equal(result.confidence, probs[0].amax(0).numpy())


def test_bad_specs() -> None:
    with pytest.raises(InputError, match="uncertainty"):
        ConfidenceSpec(measure="variance")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        ConfidenceSpec(min_confidence=1.5)
    with pytest.raises(InputError, match="255"):
        BandCollector(2, 2, 300, ConfidenceSpec(min_confidence=0.5), are_probs=False)


def test_files_and_palettes(tmp_path) -> None:
    values = np.array([[0.0, 0.25, 0.5], [0.999, 1.0, 0.002]], dtype=np.float32)
    png = np.array(Image.open(io.BytesIO(confidence_bytes(values, ".png"))))
    assert png.dtype == np.uint8 and png.tolist() == [[0, 64, 128], [255, 255, 1]]
    npy = np.load(io.BytesIO(confidence_bytes(values, ".npy")))
    assert npy.dtype == np.float16 and np.allclose(npy, values, atol=1e-3)
    probs = np.random.default_rng(0).random((3, 4, 5), dtype=np.float32)
    packed = np.load(save_probs(tmp_path / "p.npz", probs))["probs"]
    assert packed.dtype == np.float16 and np.allclose(packed, probs, atol=1e-3)
    assert np.array_equal(np.load(save_probs(tmp_path / "p.npy", probs)), probs)
    palette = palette_with_ignore([(1, 2, 3), (4, 5, 6)])
    assert len(palette) == 256 and palette[1] == (4, 5, 6) and palette[IGNORE_INDEX] == IGNORE_GREY
    ids = label_ids(np.array([[0, 18, IGNORE_INDEX]], np.uint8), ConfidenceSpec(min_confidence=0.5))
    assert ids.tolist() == [[7, 33, IGNORE_INDEX]]


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_model(checkpoint=tiny_checkpoint)


def test_segmenter_returns_the_softmax_confidence(loaded, tiny_image_path) -> None:
    image = read_image_bgr(tiny_image_path)
    segmenter = Segmenter(loaded, device="cpu", uncertainty="top1")
    scores = infer_scores(segmenter.model, image, segmenter.test)[0]
    mask, confidence = segmenter(image, return_confidence=True)
    assert np.array_equal(mask, scores.argmax(0).numpy())
    # taken in bands of rows: the softmax's vector kernels may differ in the last ulp
    np.testing.assert_allclose(confidence, scores.softmax(0).amax(0).numpy(), atol=1e-6)
    mask, probs, confidence = segmenter(image, return_probs=True, return_confidence=True)
    np.testing.assert_allclose(probs, scores.softmax(0).numpy(), atol=1e-6)
    strict = Segmenter(loaded, device="cpu", min_confidence=0.6)
    below = scores.softmax(0).amax(0).numpy() < 0.6
    assert np.array_equal(strict(image) == IGNORE_INDEX, below)
    assert np.array_equal(strict.predict_batch([image, image])[1] == IGNORE_INDEX, below)


def test_segmenter_tile_mode_matches_its_slide(loaded, tiny_image_path) -> None:
    image = read_image_bgr(tiny_image_path)
    slide = Segmenter(loaded, device="cpu", crop=(64, 64), stride=(43, 43), scale="native")
    tiled = Segmenter(loaded, device="cpu", tile=(64, 64), tile_stride=(43, 43))
    assert tiled.test.scale is None and slide.test.scale is None
    assert np.array_equal(tiled(image), slide(image))
    mask, confidence = tiled(image, return_confidence=True)
    assert confidence.shape == mask.shape and confidence.dtype == np.float16
    for bad, match in (
        ({"tile": (64, 64), "mode": "slide"}, "replaces"),
        ({"tile": (64, 64), "ms_flip": True}, "one scale"),
        ({"tile_stride": (8, 8)}, "needs"),
        ({"tile": (32, 32), "tile_stride": (40, 40)}, "must not exceed"),
        ({"scale": "huge"}, "native, zoo"),
    ):
        with pytest.raises(InputError, match=match):
            Segmenter(loaded, device="cpu", **bad)
    with pytest.raises(InputError, match="probabilities"):
        tiled(image, return_probs=True)
