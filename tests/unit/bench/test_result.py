"""The benchmark record: figures derived from the timing, and the JSON fields."""

from __future__ import annotations

from isaseg_cli.bench.result import BenchmarkResult
from isaseg_cli.bench.timing import Timing


def _result() -> BenchmarkResult:
    timing = Timing(2.0, (10.0, 20.0, 30.0), 1024, "tensor accounting", None)
    return BenchmarkResult(
        kind="inference",
        model="m",
        environment={"device": "cpu", "device_name": "x"},
        precision="bf16",
        size=(32, 48),
        batch_size=4,
        warmup=1,
        iters=3,
        timing=timing,
        flops_per_iter=3 * 10**12,
        settings={"fast": True},
    )


def test_derived_figures() -> None:
    result = _result()
    assert result.images_per_s == 4 * 1000.0 / 20.0  # the median call
    assert result.achieved_tflops == 3.0 / 0.020
    assert result.compile_s == 2.0 - 0.020


def test_record_fields() -> None:
    record = _result().to_dict()
    assert record["device"] == "cpu" and record["size"] == [32, 48]
    assert record["latency_median_ms"] == 20.0 and record["latency_all_ms"] == [10.0, 20.0, 30.0]
    assert record["peak_memory_bytes"] == 1024 and record["settings"] == {"fast": True}
    assert record["achieved_tflops_per_s"] == 150.0
