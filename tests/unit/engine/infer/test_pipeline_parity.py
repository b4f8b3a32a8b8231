"""Same outputs as mmsegmentation: every array of the mmseg_tiny fixture.

The fixture was made on an AVX-512 CPU; mmseg itself, re-run on an AVX2 or ARM CPU, differs
from it by float32 rounding that grows with the input (oneDNN picks other kernels per
instruction set). So floats are compared with ``tests.helpers``' rule, 1e-4 of the reference's
largest magnitude (floor 1e-5), and masks are compared except at pixels whose top-2 margin in
the reference is within that tolerance. A wrong resize, padding or window placement moves
logits by 1e-2 or more and fails (each was broken on purpose once to check).

Bit-exact checks are kept only where the result does not depend on the CPU: the normalised
input (one IEEE subtract and divide per element), OpenCV's 8-bit bilinear resize (fixed-point:
the same on every CPU for one OpenCV version), and the integer window and view geometry.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isaseg_cli.data.image import (
    normalize_bgr,
    read_image_bgr,
    resize_keep_ratio,
    resize_to,
    scale_by_ratio,
)
from isaseg_cli.engine.infer.pipeline import forward_logits, infer_scores
from isaseg_cli.engine.infer.protocol import ms_flip_views, slide_windows
from isaseg_cli.zoo.spec import TestSpec
from tests.helpers import (
    FIXTURE_SLIDE,
    TINY,
    assert_close_to_reference,
    assert_masks_match_except_ties,
    tiny_reference_model,
)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return read_image_bgr(TINY / "image.png")


def test_normalised_input_is_identical(image, expected) -> None:
    assert torch.equal(normalize_bgr(image), torch.from_numpy(expected["input"]))


def test_backbone_and_head_outputs(expected) -> None:
    model = tiny_reference_model().eval()
    with torch.no_grad():
        features = model.backbone(torch.from_numpy(expected["input"]))
        for index, feature in enumerate(features):
            assert_close_to_reference(feature, expected[f"backbone_out{index}"])
        assert_close_to_reference(model.decode_head(features), expected["decode_logits_lowres"])
        assert_close_to_reference(model.auxiliary_head(features), expected["aux_logits_lowres"])


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_whole_and_slide_logits_and_masks(image, expected, mode, align_corners) -> None:
    test = FIXTURE_SLIDE if mode == "slide" else TestSpec()
    suffix = "_align_corners" if align_corners else ""
    scores = infer_scores(tiny_reference_model(align_corners).eval(), image, test)
    assert_close_to_reference(scores, expected[f"{mode}_logits{suffix}"])
    assert_masks_match_except_ties(
        scores.argmax(1), expected[f"{mode}_pred{suffix}"], expected[f"{mode}_logits{suffix}"]
    )


def test_slide_windows_match_reference(expected) -> None:
    assert slide_windows(97, 141, (64, 64), (43, 43)) == [
        tuple(row) for row in expected["slide_windows_y1y2x1x2"].tolist()
    ]


def test_ms_flip_views_follow_the_1x_rule_for_the_fixture(image, expected) -> None:
    views = ms_flip_views(141, 97, TestSpec(ms_rule="image"))
    assert [(h, w) for (w, h), _ in views] == [tuple(s) for s in expected["tta_view_img_shape"]]
    assert [flip for _, flip in views] == expected["tta_view_flip"].tolist()
    first = resize_keep_ratio(image, scale_by_ratio(141, 97, 0.5))
    assert np.array_equal(first[:, :, ::-1], expected["tta_view0_image_rgb"])


def test_ms_flip_merge_matches_reference(image, expected) -> None:
    probs = infer_scores(
        tiny_reference_model().eval(), image, TestSpec(ms_rule="image"), ms_flip=True
    )
    assert_close_to_reference(probs, expected["tta_prob"])
    assert_masks_match_except_ties(probs.argmax(1), expected["tta_pred"], expected["tta_prob"])


def test_ms_flip_views_published_0x_rule() -> None:
    """Ratios scale the test scale, then the image is fitted keep-ratio
    (FAITHFULNESS.md#multi-scale-and-flip-views)."""
    voc = TestSpec(scale=(2048, 512))
    sizes = [size for size, flip in ms_flip_views(500, 375, voc) if not flip]
    assert sizes == [(341, 256), (512, 384), (683, 512), (853, 640), (1024, 768), (1195, 896)]
    city = TestSpec(scale=(2049, 1025))
    sizes = [size for size, flip in ms_flip_views(2048, 1024, city) if not flip]
    assert sizes[2] == (2049, 1025) and sizes[0] == (1024, 512)


def test_cityscapes_test_pipeline(image, expected) -> None:
    scores = infer_scores(tiny_reference_model().eval(), image, TestSpec(scale=(2048, 1024)))
    assert_close_to_reference(scores, expected["pipeline_cityscapes_logits"])
    assert_masks_match_except_ties(
        scores.argmax(1),
        expected["pipeline_cityscapes_pred"],
        expected["pipeline_cityscapes_logits"],
    )


@pytest.mark.parametrize("size", [(1, 1), (7, 300), (300, 7), (45, 61), (64, 64)])
@pytest.mark.parametrize("mode", ["whole", "slide", "ms_flip"])
def test_odd_sizes_run_in_every_mode(size, mode) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    test = FIXTURE_SLIDE if mode == "slide" else TestSpec(ms_rule="image")
    scores = infer_scores(tiny_reference_model().eval(), image, test, ms_flip=mode == "ms_flip")
    assert scores.shape == (1, 5, *size)
    assert torch.isfinite(scores).all()


def test_each_ms_flip_view_matches_reference(image, expected) -> None:
    """Each view's logits after flipping back and resizing to the image (mmseg's post-process),
    compared as one array, as the fixture measures them."""
    model = tiny_reference_model().eval()
    views = ms_flip_views(141, 97, TestSpec(ms_rule="image"))
    logits_per_view = []
    with torch.no_grad():
        for size, flip in views:
            view = resize_to(image, size)
            view = np.ascontiguousarray(view[:, ::-1]) if flip else view
            logits = forward_logits(model, normalize_bgr(view), TestSpec())
            logits = logits.flip(dims=(3,)) if flip else logits
            logits_per_view.append(model.resize(logits, (97, 141)))
    assert_close_to_reference(torch.stack(logits_per_view), expected["tta_view_logits"])
