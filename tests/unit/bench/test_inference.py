"""The inference benchmark on the CPU at tiny sizes: the record of what ran, the slide
settings, mask agreement, and the process flags put back."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from isaseg_cli.bench.inference import benchmark_inference, mask_agreement, slide_test
from isaseg_cli.engine.infer.fast import FastOptions
from isaseg_cli.errors import InputError
from isaseg_cli.zoo.spec import TestSpec
from tests.helpers import make_tiny_entry

CPU = torch.device("cpu")
CALLS = {"warmup": 0, "iters": 1}


def test_mask_agreement_counts_pixels_of_the_same_class() -> None:
    reference = torch.zeros(1, 2, 2, 2)
    reference[0, 1] = 1.0  # class 1 everywhere
    logits = reference.clone()
    logits[0, 0, 0, 0] = 5.0  # one pixel of four changes class
    assert mask_agreement(logits, reference) == 0.75


def test_slide_test_defaults_to_two_thirds_of_the_crop() -> None:
    entry = make_tiny_entry()
    entry = dataclasses.replace(entry, data=dataclasses.replace(entry.data, crop_size=(769, 512)))
    test = slide_test(entry)
    assert (test.mode, test.crop_size, test.stride) == ("slide", (769, 512), (513, 342))
    own = TestSpec(mode="slide", crop_size=(64, 64), stride=(32, 32))
    assert slide_test(dataclasses.replace(entry, test=own)) is own


def test_fast_bf16_run_records_what_it_applied(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    result = benchmark_inference(
        make_tiny_entry(),
        device=CPU,
        options=FastOptions(precision="bf16"),
        size=(32, 48),
        check_masks=True,
        **CALLS,
    )
    settings = result.settings
    assert settings["fast"] and not settings["plain"] and settings["mode"] == "whole"
    assert settings["fuse_bn"] and settings["channels_last"] and settings["fast_interlace"]
    assert settings["attention"] == "matmul" and not settings["cuda_graphs"]
    assert 0.5 <= settings["mask_agreement"] <= 1.0
    assert result.precision == "bf16" and result.size == (32, 48) and result.flops_per_iter > 0
    assert torch.backends.cudnn.benchmark is False  # put back after the run


def test_plain_slide_run_is_the_reference_path() -> None:
    result = benchmark_inference(
        make_tiny_entry(), device=CPU, size=(80, 96), mode="slide", plain=True, **CALLS
    )
    settings = result.settings
    assert settings["plain"] and not settings["fast"] and settings["window_batch"] == 1
    assert "fuse_bn" not in settings and settings["mask_agreement"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"plain": True, "options": FastOptions(precision="bf16")}, "--plain"),
        ({"mode": "tiles"}, "unknown mode"),
        ({"options": FastOptions(precision="fp16")}, "fp16 needs a GPU"),
    ],
)
def test_options_that_do_not_apply_are_refused(changes, message) -> None:
    with pytest.raises(InputError, match=message):
        benchmark_inference(make_tiny_entry(), device=CPU, size=(32, 32), **CALLS, **changes)
