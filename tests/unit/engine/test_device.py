"""Device names and precisions: what each resolves to, and one-line errors for the rest; the
process-wide torch flags, set in one place and put back."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.engine.device import (
    ProcessFlags,
    autocast,
    check_precision,
    inference_flags,
    process_flags,
    resolve_device,
    set_process_flags,
)
from isaseg_cli.errors import InputError

CPU = torch.device("cpu")


def test_names_resolve_case_and_space_insensitively() -> None:
    assert resolve_device(" CPU ") == CPU


@pytest.mark.skipif(
    torch.cuda.is_available() or torch.backends.mps.is_available(), reason="has an accelerator"
)
def test_auto_falls_back_to_the_cpu() -> None:
    assert resolve_device("auto") == CPU


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu0", "unknown device 'gpu0': use auto, cpu, cuda, cuda:N or mps"),
        ("meta", "unsupported device 'meta'"),
        ("cuda:99", "cuda:99"),
    ],
)
def test_bad_devices_are_one_line_errors(name: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_says_so() -> None:
    with pytest.raises(InputError, match="CUDA is not available here"):
        resolve_device("cuda")


def test_precisions_map_to_autocast_dtypes() -> None:
    assert check_precision("fp32", CPU) is torch.float32
    assert check_precision("bf16", CPU) is torch.bfloat16
    assert check_precision("fp16", torch.device("cuda")) is torch.float16
    with pytest.raises(InputError, match="fp16 needs a GPU; on the CPU use bf16 or fp32"):
        check_precision("fp16", CPU)
    with pytest.raises(InputError, match="unknown precision 'int8': use fp32, bf16, fp16"):
        check_precision("int8", CPU)


def test_autocast_casts_only_below_fp32() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(CPU, "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32  # restored on exit


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
    assert inference_flags(CPU) == ProcessFlags(cudnn_benchmark=False)
