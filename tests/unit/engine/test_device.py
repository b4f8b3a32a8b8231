"""Device choices, precisions and the process-wide torch flags."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.engine.device import (
    ProcessFlags,
    check_precision,
    inference_flags,
    process_flags,
    resolve_device,
    set_process_flags,
)
from isaseg_cli.errors import InputError


@pytest.fixture
def cudnn_benchmark_off(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def test_set_process_flags_returns_the_ones_it_replaces(cudnn_benchmark_off) -> None:
    previous = set_process_flags(ProcessFlags(cudnn_benchmark=True))
    assert previous == ProcessFlags(cudnn_benchmark=False)
    assert torch.backends.cudnn.benchmark is True
    assert set_process_flags(previous) == ProcessFlags(cudnn_benchmark=True)
    assert torch.backends.cudnn.benchmark is False


def test_process_flags_are_put_back_after_the_block_even_on_error(cudnn_benchmark_off) -> None:
    with pytest.raises(RuntimeError), process_flags(ProcessFlags(cudnn_benchmark=True)):
        assert torch.backends.cudnn.benchmark is True
        raise RuntimeError("inside")
    assert torch.backends.cudnn.benchmark is False


def test_inference_flags_autotune_on_cuda_only() -> None:
    assert inference_flags(torch.device("cuda")) == ProcessFlags(cudnn_benchmark=True)
    assert inference_flags(torch.device("cpu")) == ProcessFlags(cudnn_benchmark=False)


def test_devices_and_precisions() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu:x")
    assert check_precision("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(InputError, match="fp16 needs a GPU"):
        check_precision("fp16", torch.device("cpu"))
    with pytest.raises(InputError, match="unknown precision"):
        check_precision("int8", torch.device("cpu"))
