"""FLOP counts: a convolution counted exactly, the published ISANet figures, the train step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isaseg_cli.bench.flops import count_flops, inference_flops, training_flops
from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.catalog import resolve_entry
from isaseg_cli.zoo.spec import TestSpec
from tests.helpers import make_tiny_entry


def test_a_convolution_counts_two_flops_per_multiply_add() -> None:
    conv = nn.Conv2d(3, 4, 3, bias=False)
    images = torch.randn(1, 3, 9, 9)
    # 4 x 7 x 7 outputs, each 3 x 3 x 3 multiply-adds.
    assert count_flops(lambda: conv(images)) == 2 * 4 * 7 * 7 * 27


@pytest.mark.parametrize(
    ("name", "tflop"), [("isanet_r50_cityscapes", 2.42), ("isanet_r101_cityscapes", 3.66)]
)
def test_flops_of_r50_and_r101_match_the_issue(name: str, tflop: float) -> None:
    """The issue states 2.42 TFLOP (R-50) and 3.66 (R-101) for one 1024x2048 forward."""
    with torch.device("meta"):
        model = build_model(resolve_entry(name).model, with_aux=False).eval()
        images = torch.empty(1, 3, 1024, 2048)
    assert abs(count_flops(lambda: model(images)) / 1e12 - tflop) < 0.01
    entry = resolve_entry(name)
    assert abs(inference_flops(entry, (1, 3, 1024, 2048), TestSpec()) / 1e12 - tflop) < 0.01


def test_a_training_step_costs_about_three_forwards() -> None:
    """The backward computes two products per forward one (inputs' and weights' gradients);
    the auxiliary head adds a little."""
    entry = make_tiny_entry()
    forward = inference_flops(entry, (2, 3, 64, 64), TestSpec())
    step = training_flops(entry, (2, 3, 64, 64))
    assert 2.9 * forward <= step <= 3.5 * forward
