"""engine/infer/protocol: the test settings a user's overrides give, the default slide stride,
and bilinear taps that reproduce PyTorch's resize (slide windows and ms+flip views are checked
against mmsegmentation's fixture in test_pipeline_parity.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isaseg_cli.data.image import resize_keep_ratio
from isaseg_cli.engine.infer.protocol import (
    default_slide_stride,
    linear_taps,
    ms_flip_ratios,
    prepare_image,
    resolve_test_spec,
)
from isaseg_cli.errors import InputError
from tests.helpers import make_tiny_entry


def test_default_stride_is_two_thirds_rounded_up() -> None:
    assert default_slide_stride((769, 769)) == (513, 513)  # mmseg's 769 crop, 513 stride
    assert default_slide_stride((512, 1024)) == (342, 683)
    assert default_slide_stride((1, 2)) == (1, 2)


def test_overrides_resolve_to_whole_or_slide() -> None:
    entry = make_tiny_entry()
    assert resolve_test_spec(entry, mode="whole").crop_size is None
    crop_only = resolve_test_spec(entry, crop=(30, 45))  # a crop alone means slide
    assert (crop_only.mode, crop_only.crop_size, crop_only.stride) == ("slide", (30, 45), (20, 30))
    explicit = resolve_test_spec(entry, crop=(30, 45), stride=(10, 15))
    assert explicit.stride == (10, 15)
    with pytest.raises(InputError, match="must not exceed"):
        resolve_test_spec(entry, crop=(30, 45), stride=(31, 15))
    with pytest.raises(InputError, match="slide mode only"):
        resolve_test_spec(entry, mode="whole", crop=(30, 45))
    with pytest.raises(InputError, match="mode must be"):
        resolve_test_spec(entry, mode="tiles")


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("source", "output"), [(7, 19), (19, 7), (97, 769), (5, 5), (1, 4)])
def test_linear_taps_reproduce_torch_bilinear(source: int, output: int, align_corners) -> None:
    row = torch.arange(source, dtype=torch.float32).pow(1.5).view(1, 1, 1, source)
    expected = F.interpolate(
        row, size=(1, output), mode="bilinear", align_corners=align_corners
    ).view(-1)
    first, second, weight = linear_taps(source, output, align_corners)
    assert first.min() >= 0 and second.max() <= source - 1
    values = row.view(-1).numpy()
    ours = values[first] * (1 - weight) + values[second] * weight
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6, atol=1e-5)


def test_prepare_image_is_the_keep_ratio_resize_or_the_image_itself() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    test = resolve_test_spec(make_tiny_entry(), mode="whole")
    scaled = dataclasses.replace(test, scale=(90, 30))
    assert np.array_equal(prepare_image(image, scaled), resize_keep_ratio(image, (90, 30)))
    assert prepare_image(image, dataclasses.replace(test, scale=None)) is image


def test_ms_flip_ratios_are_checked_for_both_segmenters() -> None:
    assert ms_flip_ratios(None, ms_flip=True) is None
    assert ms_flip_ratios([0.5, 1], ms_flip=True) == (0.5, 1.0)
    with pytest.raises(InputError, match="add ms_flip"):
        ms_flip_ratios([1.0], ms_flip=False)
    with pytest.raises(InputError, match="positive ratios"):
        ms_flip_ratios([1.0, 0.0], ms_flip=True)
