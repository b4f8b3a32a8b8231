"""Device, precision and process-wide torch flags, shared by predict, eval, train and benchmark."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from isaseg_cli.errors import InputError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        InputError: the device is unknown or not available on this machine.
    """
    name = name.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' asked for, but MPS is not available here")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of ``fp32`` / ``bf16`` / ``fp16``; fp16 needs a GPU."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise InputError("fp16 needs a GPU; on the CPU use bf16 or fp32")
    return PRECISIONS[precision]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (CUDA's own error, or the
    RuntimeError other backends raise), the one failure inference retries smaller."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def free_cached_memory(device: torch.device) -> None:
    """Hands the CUDA allocator's cached blocks back before a retry after running out of memory."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def autocast(device: torch.device, precision: str, *, cache: bool = True) -> Iterator[None]:
    """Mixed precision for the model's forward (no-op for fp32).

    ``cache=False`` drops autocast's cache of cast weights, which CUDA graph capture requires;
    training passes it always (each weight is cast once per forward anyway).
    """
    dtype = check_precision(precision, device)
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache):
        yield


@dataclass(frozen=True, kw_only=True, slots=True)
class ProcessFlags:
    """The process-wide torch switches isaseg sets; the defaults are torch's own.

    Attributes:
        cudnn_benchmark: ``torch.backends.cudnn.benchmark``: cuDNN times its kernels on the
            first call of each input shape and keeps the fastest (it pays when shapes repeat:
            a training crop, inference at the test scale).
    """

    cudnn_benchmark: bool = False


def inference_flags(device: torch.device) -> ProcessFlags:
    """The flags of an inference command (predict, eval, serve, benchmark): cuDNN autotuning
    on CUDA, where the fast path runs the same shapes again and again."""
    return ProcessFlags(cudnn_benchmark=device.type == "cuda")


def set_process_flags(flags: ProcessFlags) -> ProcessFlags:
    """Sets the process-wide torch switches; returns the ones they replace.

    The one place isaseg changes them: each command's engine entry calls it at its start
    (``fit`` with ``--cudnn-benchmark``; ``Segmenter`` with ``inference_flags``), and
    ``evaluate`` and the inference benchmark for their loop, putting the previous flags back
    (so a training run's validation leaves them as the run set them). Model code never does.
    docs/PERFORMANCE.md lists them.
    """
    previous = ProcessFlags(cudnn_benchmark=torch.backends.cudnn.benchmark)
    torch.backends.cudnn.benchmark = flags.cudnn_benchmark
    return previous


@contextlib.contextmanager
def process_flags(flags: ProcessFlags) -> Iterator[None]:
    """``set_process_flags`` for the duration of a block; the previous flags come back after."""
    previous = set_process_flags(flags)
    try:
        yield
    finally:
        set_process_flags(previous)
