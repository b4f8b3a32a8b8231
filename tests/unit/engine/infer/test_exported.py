"""The torch-free ExportedSegmenter: fixture parity in whole, slide and ms+flip (the tolerance
rule of the PyTorch parity tests), the same results as ``Segmenter`` on the same exported
network, and a bilinear resize that agrees with PyTorch's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.engine.infer.backends import load_exported, open_exported
from isaseg_cli.engine.infer.confidence import ConfidenceSpec
from isaseg_cli.engine.infer.exported import ExportedSegmenter, resize_logits
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.errors import InputError
from tests.helpers import (
    FIXTURE_CASES,
    TINY,
    assert_close_to_reference,
    assert_masks_match_except_ties,
)

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("mode", list(FIXTURE_CASES))
def test_exported_segmenter_matches_the_mmseg_fixture(tiny_onnx, expected, mode) -> None:
    test, ms_flip, scores_key, mask_key = FIXTURE_CASES[mode]
    exported = open_exported(tiny_onnx["path"], "onnxruntime")
    exported = dataclasses.replace(exported, entry=dataclasses.replace(exported.entry, test=test))
    segmenter = ExportedSegmenter(exported, ms_flip=ms_flip)
    scores = segmenter.scores(read_image_bgr(TINY / "image.png"))
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32
    assert_close_to_reference(scores, expected[scores_key])
    assert_masks_match_except_ties(scores.argmax(1), expected[mask_key], expected[scores_key])


@pytest.mark.parametrize("options", [{}, {"crop": (64, 64), "stride": (43, 43)}, {"ms_flip": True}])
def test_same_masks_and_probabilities_as_segmenter_on_the_same_file(tiny_onnx, options) -> None:
    """Against the PyTorch pipeline running the same network (``load_exported``), with the
    entry's own test scale, so the logits are resized back from another size."""
    ours = ExportedSegmenter(open_exported(tiny_onnx["path"]), **options)
    theirs = Segmenter(load_exported(tiny_onnx["path"]), device="cpu", **options)
    image = read_image_bgr(TINY / "image.png")
    small = np.ascontiguousarray(image[:61, :45])
    ours_results = ours.predict_batch([image, small, image], return_probs=True)
    theirs_results = theirs.predict_batch([image, small, image], return_probs=True)
    for (mask, probs), (their_mask, their_probs) in zip(ours_results, theirs_results, strict=True):
        assert mask.dtype == their_mask.dtype == np.uint8 and mask.shape == their_mask.shape
        assert probs.dtype == np.float32 and probs.shape == their_probs.shape
        assert np.abs(probs - their_probs).max() < 1e-5
        top2 = np.sort(their_probs, axis=0)[-2:]
        assert ((mask == their_mask) | (top2[1] - top2[0] < 1e-5)).all()
    assert np.array_equal(ours(image), ours_results[0][0])


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(97, 141), (13, 18), (200, 33), (1, 1), (26, 36)])
def test_resize_logits_agrees_with_pytorch(align_corners, size) -> None:
    logits = torch.randn(2, 5, 26, 36, generator=torch.Generator().manual_seed(0))
    theirs = F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)
    ours = resize_logits(logits.numpy(), size, align_corners)
    assert ours.shape == tuple(theirs.shape) and ours.dtype == np.float32
    assert np.abs(ours - theirs.numpy()).max() < 1e-5


def test_torch_only_options_and_bad_scales_are_refused(tiny_onnx) -> None:
    exported = open_exported(tiny_onnx["path"])
    for options in ({"precision": "bf16"}, {"device": "cuda"}, {"scales": (1.0,)}):
        with pytest.raises(InputError):
            ExportedSegmenter(exported, **options)


def test_segment_batch_gives_predict_batchs_masks_and_asked_probabilities(tiny_onnx) -> None:
    segmenter = ExportedSegmenter(open_exported(tiny_onnx["path"]))
    image = read_image_bgr(TINY / "image.png")
    images = [image, image[::-1].copy()]
    masks = segmenter.predict_batch(images)
    plain = segmenter.segment_batch(images)
    asked = segmenter.segment_batch(images, spec=ConfidenceSpec(probs=True))
    for mask, one, with_probs in zip(masks, plain, asked, strict=True):
        assert np.array_equal(one.mask, mask) and np.array_equal(with_probs.mask, mask)
        assert one.probs is None and one.stats.mean_confidence is None
        counts = np.bincount(mask.reshape(-1), minlength=segmenter.num_classes)
        assert one.stats.class_pixels == tuple(int(n) for n in counts)
        assert with_probs.probs.shape == (segmenter.num_classes, *mask.shape)
        expected_mean = float(with_probs.probs.max(axis=0).mean(dtype=np.float64))
        assert with_probs.stats.mean_confidence == pytest.approx(expected_mean)
