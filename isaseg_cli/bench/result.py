"""The record of one measured configuration, and the figures derived from its timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from isaseg_cli.bench.timing import Timing


@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    """One measured configuration; ``to_dict`` is the JSON record."""

    kind: str  # "inference" or "train"
    model: str
    environment: dict[str, Any]
    precision: str
    size: tuple[int, int]
    batch_size: int
    warmup: int
    iters: int
    timing: Timing
    flops_per_iter: int
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.batch_size * 1000.0 / self.timing.median_ms

    @property
    def achieved_tflops(self) -> float:
        return self.flops_per_iter / (self.timing.median_ms * 1e-3) / 1e12

    @property
    def compile_s(self) -> float:
        """First call minus a steady call: what compilation (or lazy set-up) cost once."""
        return max(0.0, self.timing.first_call_s - self.timing.median_ms * 1e-3)

    def to_dict(self) -> dict[str, Any]:
        timing = self.timing
        return {
            "kind": self.kind,
            "model": self.model,
            **self.environment,
            "precision": self.precision,
            "size": list(self.size),
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "iters": self.iters,
            "settings": self.settings,
            "first_call_s": timing.first_call_s,
            "compile_s": self.compile_s,
            "latency_median_ms": timing.median_ms,
            "latency_p90_ms": timing.p90_ms,
            "latency_all_ms": list(timing.times_ms),
            "images_per_s": self.images_per_s,
            "peak_memory_bytes": timing.peak_memory_bytes,
            "peak_memory_kind": timing.peak_memory_kind,
            "peak_reserved_bytes": timing.peak_reserved_bytes,
            "flops_per_iter": self.flops_per_iter,
            "achieved_tflops_per_s": self.achieved_tflops,
        }
