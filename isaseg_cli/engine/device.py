"""Device and precision choices shared by predict, eval, train and benchmark."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
