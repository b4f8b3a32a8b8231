"""Benchmark building blocks: timing protocol, FLOP count, BN calibration, memory accounting
and the attention comparison (ISA needs >= 10x less memory than dense at 128x256)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from isaseg_cli.bench.attention import benchmark_attention
from isaseg_cli.bench.benchmark import calibrate_batchnorm, count_flops, measure
from isaseg_cli.bench.memory import peak_tensor_bytes
from isaseg_cli.models.build import build_model
from isaseg_cli.models.heads import ISAHead, SelfAttentionBlock
from isaseg_cli.zoo.catalog import resolve_entry

CPU = torch.device("cpu")


def test_measure_calls_first_warmup_and_timed_steps() -> None:
    calls = []
    timing = measure(lambda: calls.append(1), CPU, warmup=2, iters=3)
    assert len(calls) == 6 and len(timing.times_ms) == 3
    assert timing.first_call_s >= 0 and timing.median_ms >= 0 and timing.peak_memory_bytes > 0
    calls.clear()
    measure(lambda: calls.append(1), CPU, warmup=0, iters=1, first_call=False)
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("name", "tflop"), [("isanet_r50_cityscapes", 2.42), ("isanet_r101_cityscapes", 3.66)]
)
def test_flops_of_r50_and_r101_match_the_issue(name: str, tflop: float) -> None:
    """The issue states 2.42 TFLOP (R-50) and 3.66 (R-101) for one 1024x2048 forward."""
    with torch.device("meta"):
        model = build_model(resolve_entry(name).model, with_aux=False).eval()
        images = torch.empty(1, 3, 1024, 2048)
    assert abs(count_flops(lambda: model(images)) / 1e12 - tflop) < 0.01


def test_calibrated_bn_holds_the_statistics_of_its_input() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    images = torch.randn(2, 3, 9, 9) * 5 + 2
    calibrate_batchnorm(model, images)
    conv_out = model[0](images).detach()
    assert not model.training
    assert torch.allclose(model[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)
    unbiased = conv_out.var(dim=(0, 2, 3), unbiased=True)
    assert torch.allclose(model[1].running_var, unbiased, rtol=1e-4)
    assert model[1].momentum == 0.1  # restored


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_peak_tensor_bytes_counts_live_intermediates_exactly(device: str) -> None:
    query = torch.randn(1, 100, 8, device=device)

    def attention() -> torch.Tensor:
        similarity = torch.matmul(query, query.transpose(1, 2))  # 100x100 floats
        weights = F.softmax(similarity, dim=-1)  # another 100x100, both alive
        return torch.matmul(weights, query)  # 100x8

    _, peak = peak_tensor_bytes(attention)
    assert peak == (2 * 100 * 100 + 100 * 8) * 4
    _, views_only = peak_tensor_bytes(lambda: query.transpose(1, 2).view(1, 8, 100))
    assert views_only == 0


def test_isa_needs_ten_times_less_attention_memory_at_128x256() -> None:
    """Counted on the meta device (nothing computed), the same accounting the benchmark uses."""
    with torch.device("meta"):
        isa = ISAHead(512, 512, 256, 1).eval()
        dense = SelfAttentionBlock(512, 256).eval()
        feature = torch.empty(1, 512, 128, 256)
    with torch.no_grad():
        _, isa_bytes = peak_tensor_bytes(lambda: isa.interlaced_attention(feature))
        _, dense_bytes = peak_tensor_bytes(lambda: dense(feature))
    assert dense_bytes >= 2 * 32768**2 * 4  # the similarity and its softmax, 4 GiB each
    assert dense_bytes >= 10 * isa_bytes


def test_attention_benchmark_rows() -> None:
    result = benchmark_attention(
        device=CPU, feature_sizes=((8, 8), (11, 19)), channels=32, attn_channels=16, iters=1
    )
    first, second = result.rows
    assert first.tokens == 64 and second.tokens == 11 * 19
    assert first.isa_ms is not None and first.dense_ms is not None
    assert first.dense_affinity_bytes == 64 * 64 * 4
    # 11x19 pads to 16x24: global 64 groups of 6 tokens, local 6 groups of 64 tokens.
    assert second.isa_affinity_bytes == (64 * 6 * 6 + 6 * 64 * 64) * 4
    record = result.to_dict()
    assert record["rows"][1]["memory_ratio"] == second.dense_peak_bytes / second.isa_peak_bytes


def test_dense_attention_that_does_not_fit_is_counted_on_meta() -> None:
    result = benchmark_attention(
        device=CPU,
        feature_sizes=((16, 16),),
        channels=32,
        attn_channels=16,
        iters=1,
        max_dense_bytes=0,
    )
    (row,) = result.rows
    assert row.dense_ms is None and row.time_ratio is None
    assert row.dense_peak_bytes >= 2 * 256 * 256 * 4
