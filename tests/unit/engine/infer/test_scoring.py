"""engine/infer/scoring: images of one resized size share a forward pass, others run alone, and
the batched scores are each image's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import load_model
from tests.helpers import assert_close_to_reference


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint) -> Segmenter:
    return Segmenter(load_model(checkpoint=tiny_checkpoint), device="cpu")


def test_same_size_images_share_one_forward(segmenter, tiny_image_path, monkeypatch) -> None:
    image = read_image_bgr(tiny_image_path)
    images = [image, image[::-1].copy(), image[: image.shape[0] // 2].copy()]
    alone = [segmenter.scores(one) for one in images]
    batches: list[int] = []
    forward = segmenter.model.forward

    def counting(inputs: torch.Tensor):
        batches.append(inputs.shape[0])
        return forward(inputs)

    monkeypatch.setattr(segmenter.model, "forward", counting)
    together = segmenter._all_scores(images)
    assert sorted(batches) == [1, 2]  # the two full-size images in one pass, the half alone
    for ours, reference in zip(together, alone, strict=True):
        assert ours.shape == reference.shape
        assert_close_to_reference(ours.numpy(), reference.numpy())
    assert not torch.equal(together[0], together[1])  # each image gets its own scores


def test_the_scores_are_at_each_images_own_size(segmenter, tiny_image_path) -> None:
    image = read_image_bgr(tiny_image_path)
    small = np.ascontiguousarray(image[:31, :45])
    for one in (image, small):
        scores = segmenter.scores(one)
        assert scores.shape == (1, segmenter.num_classes, *one.shape[:2])
