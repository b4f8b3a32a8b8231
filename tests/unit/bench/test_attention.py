"""The attention comparison: ISA needs >= 10x less memory than dense at 128x256, the rows'
token counts and affinity sizes, and dense attention too large to run counted on meta."""

from __future__ import annotations

import torch

from isaseg_cli.bench.attention import benchmark_attention
from isaseg_cli.bench.memory import peak_tensor_bytes
from isaseg_cli.models.heads import ISAHead, SelfAttentionBlock

CPU = torch.device("cpu")


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


def test_isa_runs_as_the_fast_inference_path_runs_it() -> None:
    """The same interlace rule as engine.infer.fast (copy-saving whatever the kernel): the
    matmul kernel on the fast layout still gives one row per size, with finite times."""
    result = benchmark_attention(
        device=CPU, feature_sizes=((9, 10),), channels=16, attn_channels=8, iters=1
    )
    (row,) = result.rows
    assert row.tokens == 90 and row.isa_ms is not None and row.isa_ms >= 0
    assert result.to_dict()["attention"] == "matmul"
