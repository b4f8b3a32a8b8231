"""The timing protocol of every benchmark: a first call (reported alone: it includes any
compilation), untimed warm-up calls, then timed calls that each end with a device
synchronisation; and where a figure was measured."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isaseg_cli.bench.memory import read_peak, reset_peak
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.errors import InputError


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds of the first call, and milliseconds of each timed call."""

    first_call_s: float
    times_ms: tuple[float, ...]
    peak_memory_bytes: int
    peak_memory_kind: str
    peak_reserved_bytes: int | None = None  # CUDA: what the caching allocator held at most

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p90_ms(self) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def environment(device: torch.device) -> dict[str, Any]:
    """Where a figure was measured: device name, torch/CUDA versions, CPU threads."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        # CPU figures are only comparable on an otherwise idle machine: record how busy it was.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); nothing to wait for elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    step: Callable[[], object],
    device: torch.device,
    *,
    warmup: int,
    iters: int,
    on_progress: ProgressCallback | None = None,
    task: str = "benchmark",
    first_call: bool = True,
    reset_memory_peak: bool = True,
    profile_to: Path | None = None,
) -> Timing:
    """Times ``step``: a first call (timed alone; skipped if ``first_call`` is False, when the
    caller made it), ``warmup`` untimed calls, then ``iters`` timed calls.

    The peak memory is that of the timed calls, or, with ``reset_memory_peak`` False, since
    the caller's own ``reset_peak`` (CUDA graph replays allocate nothing: their memory is
    seen when they are captured). With ``profile_to``, a ``torch.profiler`` table of a few
    more calls is written there (``write_profile``).

    Raises:
        InputError: ``iters`` below 1 or ``warmup`` below 0.
    """
    if iters < 1 or warmup < 0:
        raise InputError("--iters must be at least 1 and --warmup at least 0")
    total = 1 + warmup + iters
    first = 0.0
    if first_call:
        start = time.perf_counter()
        step()
        synchronize(device)
        first = time.perf_counter() - start
    for index in range(warmup):
        step()
        _report(on_progress, task, 2 + index, total)
    if reset_memory_peak:
        reset_peak(device)
    times = []
    for index in range(iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
        _report(on_progress, task, 2 + warmup + index, total, ms=times[-1])
    peak, kind = read_peak(device)
    reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None
    if profile_to is not None:
        write_profile(step, device, profile_to)
    return Timing(first, tuple(times), peak, kind, reserved)


def write_profile(
    step: Callable[[], object], device: torch.device, path: Path, *, steps: int = 3
) -> None:
    """Runs ``step`` ``steps`` times under ``torch.profiler`` and writes the operators and
    kernels that took the most device time (CPU time off CUDA) as a text table to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=40, max_name_column_width=70)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{steps} steps, sorted by {sort_by}\n{table}\n", encoding="utf-8")


def _report(
    callback: ProgressCallback | None, task: str, done: int, total: int, **info: Any
) -> None:
    if callback is not None:
        callback(ProgressEvent(task, done, total, info))
