"""``isaseg benchmark``'s entry point: option checks across benchmarks, call counts, dispatch."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.bench.attention import AttentionBenchResult
from isaseg_cli.bench.result import BenchmarkResult
from isaseg_cli.bench.run import BenchmarkRequest, call_counts, check_request, run_benchmark
from isaseg_cli.engine.infer.fast import FastOptions
from isaseg_cli.errors import InputError
from tests.helpers import make_tiny_entry

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (BenchmarkRequest(kind="speed"), "unknown benchmark"),
        (BenchmarkRequest(recompute=True), "apply to --train"),
        (BenchmarkRequest(kind="attention", cuda_graphs=False), "apply to --train"),
        (BenchmarkRequest(kind="attention", profile_to="p.txt"), "--profile applies"),
    ],
)
def test_options_of_another_benchmark_are_refused(request_, message) -> None:
    with pytest.raises(InputError, match=message):
        check_request(request_)


@pytest.mark.parametrize(
    "request_",
    [
        BenchmarkRequest(backend="onnxruntime", kind="train"),
        BenchmarkRequest(backend="onnxruntime", plain=True),
        BenchmarkRequest(backend="openvino", options=FastOptions(precision="bf16")),
        BenchmarkRequest(backend="openvino", options=FastOptions(compile=True)),
    ],
)
def test_an_exported_backend_times_float32_cpu_inference_only(request_) -> None:
    with pytest.raises(InputError, match="times float32 inference on the CPU"):
        check_request(request_, CPU)
    with pytest.raises(InputError, match="times float32 inference on the CPU"):
        check_request(BenchmarkRequest(backend="onnxruntime"), torch.device("cuda"))
    check_request(BenchmarkRequest(backend="onnxruntime"), CPU)  # what it does time


def test_call_counts_per_device() -> None:
    assert call_counts(BenchmarkRequest(), CPU) == {"warmup": 1, "iters": 3}
    assert call_counts(BenchmarkRequest(), torch.device("cuda")) == {"warmup": 5, "iters": 20}
    assert call_counts(BenchmarkRequest(warmup=0, iters=7), CPU) == {"warmup": 0, "iters": 7}


def test_each_kind_runs_its_benchmark(one_thread) -> None:
    calls = {"warmup": 0, "iters": 1, "size": (32, 32)}
    entry = make_tiny_entry()
    inference = run_benchmark(entry, BenchmarkRequest(**calls), CPU)
    assert isinstance(inference, BenchmarkResult) and inference.kind == "inference"
    assert inference.size == (32, 32) and inference.batch_size == 1
    train = run_benchmark(entry, BenchmarkRequest(kind="train", batch_size=2, **calls), CPU)
    assert isinstance(train, BenchmarkResult) and train.kind == "train"
    attention = BenchmarkRequest(
        kind="attention", feature_sizes=((8, 8),), options=FastOptions(), warmup=0, iters=1
    )
    result = run_benchmark(None, attention, CPU)
    assert isinstance(result, AttentionBenchResult) and result.rows[0].tokens == 64
    with pytest.raises(InputError, match="need a model"):
        run_benchmark(None, BenchmarkRequest(), CPU)
