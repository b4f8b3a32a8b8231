"""The training-step benchmark on the CPU at tiny sizes: the path it records and refuses."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.bench.flops import training_flops
from isaseg_cli.bench.training import benchmark_train
from isaseg_cli.errors import InputError
from tests.helpers import make_tiny_entry

CPU = torch.device("cpu")
CALLS = {"warmup": 0, "iters": 1}


def test_cpu_step_is_the_reference_path_unless_asked(one_thread) -> None:
    entry = make_tiny_entry()
    result = benchmark_train(entry, device=CPU, size=(32, 32), batch_size=2, **CALLS)
    settings = result.settings
    assert settings["fast"] and not settings["cuda_graphs"] and not settings["compile"]
    reference = {"channels_last": False, "attention": "matmul", "fast_interlace": False}
    assert {k: settings[k] for k in reference} == reference
    assert not settings["recompute"] and not settings["matmul_resize"]
    assert result.flops_per_iter == training_flops(entry, (2, 3, 32, 32))
    asked = benchmark_train(
        entry, device=CPU, size=(32, 32), batch_size=2, attention="sdpa", **CALLS
    ).settings
    assert asked["attention"] == "sdpa" and asked["fast_interlace"]


def test_plain_with_an_attention_kernel_keeps_the_regrouping(one_thread) -> None:
    settings = benchmark_train(
        make_tiny_entry(), device=CPU, size=(32, 32), plain=True, attention="sdpa", **CALLS
    ).settings
    assert settings["plain"] and not settings["fast"]
    assert settings["attention"] == "sdpa" and not settings["fast_interlace"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"plain": True, "recompute": True}, "--plain"),
        ({"cuda_graphs": True}, "CUDA graphs need a CUDA device"),
        ({"attention": "flash"}, "unknown attention"),
    ],
)
def test_options_that_do_not_apply_are_refused(changes, message) -> None:
    with pytest.raises(InputError, match=message):
        benchmark_train(make_tiny_entry(), device=CPU, size=(32, 32), **CALLS, **changes)
