"""Peak memory, measured three ways: the CUDA allocator, the process RSS, and an exact count of
the tensor bytes an operation holds at once (any device, ``meta`` included)."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

T = TypeVar("T")


class _LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of every storage an aten op allocates until it is freed; tensors that
    existed before (inputs, weights) and views or in-place results of them are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self._sweep()  # before the op, so a reused storage address is not mistaken for a live one
        existing = {
            leaf.untyped_storage()._cdata for leaf in tree_leaves((args, kwargs)) if _is(leaf)
        }
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if not _is(leaf):
                continue
            storage = leaf.untyped_storage()
            key = storage._cdata
            if key not in existing and key not in self.live:
                self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out

    def _sweep(self) -> None:
        for key, (ref, nbytes) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.current -= nbytes


def _is(value: object) -> bool:
    return isinstance(value, torch.Tensor)


def peak_tensor_bytes(fn: Callable[[], T]) -> tuple[T, int]:
    """Runs ``fn`` and returns its result with the most bytes of tensors it held alive at once.

    Exact at the level of aten operators (kernel-internal workspaces are not seen), device
    independent, and free on the ``meta`` device, where nothing is computed.
    """
    with _LiveTensorBytes() as tracker:
        result = fn()
    return result, tracker.peak


def process_peak_rss_bytes() -> int:
    """The highest resident set size of this process so far (never goes down)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak(device: torch.device) -> None:
    """Starts a new CUDA peak (the RSS peak of a process cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def read_peak(device: torch.device) -> tuple[int, str]:
    """The peak since ``reset_peak`` on CUDA, else the process RSS peak, with what it is."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    return process_peak_rss_bytes(), "process peak RSS (whole process, incl. Python and torch)"
