"""ms+flip view sizes: each view is resized once to exactly the size mmseg's rule gives."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.engine.infer.protocol import ms_flip_views
from isaseg_cli.zoo.spec import TestSpec

CITYSCAPES_TEST_SCALE = (2048, 1024)
RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
# Thin, wide, odd and ordinary sizes (w, h); rounding of the keep-ratio rule bites on most.
WIDTHS = (1, 3, 37, 341, 500, 999, 1500, 2048, 2049, 4001)
HEIGHTS = (1, 7, 97, 341, 500, 1023, 1024, 5000)


def protocol_size(width: int, height: int, bound: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``rescale_size`` written out from its source: fit (w, h) into an unordered bound."""
    factor = min(max(bound) / max(width, height), min(bound) / min(width, height))
    return max(int(width * factor + 0.5), 1), max(int(height * factor + 0.5), 1)


def protocol_views_0x(width: int, height: int) -> list[tuple[int, int]]:
    """mmseg 0.x MultiScaleFlipAug: ratios scale the test scale, truncated, then fit once."""
    return [
        protocol_size(
            width,
            height,
            (int(CITYSCAPES_TEST_SCALE[0] * ratio), int(CITYSCAPES_TEST_SCALE[1] * ratio)),
        )
        for ratio in RATIOS
    ]


def protocol_views_1x(width: int, height: int) -> list[tuple[int, int]]:
    """mmseg 1.x TTA: ratios scale the image (rounded half up), then fit once."""
    return [
        protocol_size(
            width,
            height,
            (max(int(width * ratio + 0.5), 1), max(int(height * ratio + 0.5), 1)),
        )
        for ratio in RATIOS
    ]


def test_the_issue_example_is_sized_by_the_0x_rule() -> None:
    test = TestSpec(scale=CITYSCAPES_TEST_SCALE, ms_ratios=RATIOS)
    sizes = [size for size, flip in ms_flip_views(1500, 500, test) if not flip]
    assert sizes[0] == (1024, 341) and sizes[3] == (2560, 853)


@pytest.mark.parametrize("rule", ["scale", "image"])
def test_view_sizes_follow_the_rule_on_a_grid(rule: str) -> None:
    test = TestSpec(scale=CITYSCAPES_TEST_SCALE, ms_ratios=RATIOS, ms_rule=rule)
    expected_views = protocol_views_0x if rule == "scale" else protocol_views_1x
    for width, height in itertools.product(WIDTHS, HEIGHTS):
        views = ms_flip_views(width, height, test)
        expected = expected_views(width, height)
        assert [size for size, _ in views] == [size for size in expected for _ in (0, 1)], (
            width,
            height,
        )
        assert [flip for _, flip in views] == [False, True] * len(RATIOS)


class _RecordingModel:
    """Stands in for the network: records each input's size and returns zero logits."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        n, _, height, width = images.shape
        self.sizes.append((width, height))
        return {"out": torch.zeros(n, 2, height, width)}

    def resize(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return torch.nn.functional.interpolate(logits, size=tuple(size), mode="bilinear")


@pytest.mark.parametrize(
    "width, height", [(1500, 500), (37, 1001), (2049, 7), (1, 5000), (5000, 1), (999, 341)]
)
def test_views_reach_the_network_at_exactly_the_rule_size(width: int, height: int) -> None:
    ratios = (0.5, 0.75, 1.25)
    test = TestSpec(scale=CITYSCAPES_TEST_SCALE, ms_ratios=ratios)
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    model = _RecordingModel()
    scores = infer_scores(model, image, test, ms_flip=True)  # type: ignore[arg-type]
    expected = [
        protocol_size(width, height, (int(2048 * ratio), int(1024 * ratio))) for ratio in ratios
    ]
    assert model.sizes == [size for size in expected for _ in (0, 1)]
    assert scores.shape == (1, 2, height, width)
