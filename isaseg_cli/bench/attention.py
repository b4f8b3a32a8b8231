"""ISA against dense self-attention on the same feature map: time and peak memory (paper §3).

Dense = one ``SelfAttentionBlock`` over all h*w tokens; ISA = the head's interlaced
long-range + short-range relations (``ISAHead.interlaced_attention``), same widths."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from isaseg_cli.bench.memory import peak_tensor_bytes
from isaseg_cli.bench.timing import environment, measure
from isaseg_cli.engine.device import check_precision
from isaseg_cli.engine.infer.fast import inference_execution
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.errors import InputError
from isaseg_cli.models.heads import ISAHead, SelfAttentionBlock

MEMORY_METHOD = (
    "tensor accounting: the most bytes of tensors created by the module's aten ops alive at "
    "once (inputs and weights excluded; kernel workspaces not seen); same on every device"
)


@dataclass(frozen=True, slots=True)
class AttentionRow:
    """One feature size; times in ms (None where dense was not run), memory in bytes."""

    feature_size: tuple[int, int]
    tokens: int
    isa_ms: float | None
    dense_ms: float | None
    isa_peak_bytes: int
    dense_peak_bytes: int
    isa_affinity_bytes: int
    dense_affinity_bytes: int
    isa_cuda_peak_bytes: int | None = None
    dense_cuda_peak_bytes: int | None = None

    @property
    def time_ratio(self) -> float | None:
        if self.isa_ms is None or self.dense_ms is None:
            return None
        return self.dense_ms / self.isa_ms

    @property
    def memory_ratio(self) -> float:
        return self.dense_peak_bytes / max(self.isa_peak_bytes, 1)


@dataclass(frozen=True, slots=True)
class AttentionBenchResult:
    environment: dict[str, Any]
    precision: str
    attention: str
    channels: int
    attn_channels: int
    group_size: tuple[int, int]
    batch_size: int
    warmup: int
    iters: int
    rows: tuple[AttentionRow, ...]
    memory_method: str = MEMORY_METHOD

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            record = {name: getattr(row, name) for name in row.__dataclass_fields__}
            record["feature_size"] = list(row.feature_size)
            rows.append(record | {"time_ratio": row.time_ratio, "memory_ratio": row.memory_ratio})
        return {
            "kind": "attention",
            **self.environment,
            "precision": self.precision,
            "attention": self.attention,
            "channels": self.channels,
            "attn_channels": self.attn_channels,
            "group_size": list(self.group_size),
            "batch_size": self.batch_size,
            "warmup": self.warmup,
            "iters": self.iters,
            "memory_method": self.memory_method,
            "rows": rows,
        }


def affinity_bytes(tokens_per_group: int, groups: int, element_bytes: int) -> int:
    """Bytes of the similarity matrices of ``groups`` groups of T tokens: groups * T^2 entries."""
    return groups * tokens_per_group**2 * element_bytes


def benchmark_attention(
    *,
    device: torch.device,
    feature_sizes: tuple[tuple[int, int], ...] = ((64, 64), (128, 128), (128, 256)),
    channels: int = 512,
    attn_channels: int = 256,
    group_size: tuple[int, int] = (8, 8),
    precision: str = "fp32",
    attention: str = "matmul",
    batch_size: int = 1,
    warmup: int = 1,
    iters: int = 3,
    max_dense_bytes: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> AttentionBenchResult:
    """Forward time and peak memory of ISA and of dense self-attention per feature size.

    Memory is counted by ``peak_tensor_bytes`` (and, on CUDA, also read from the allocator).
    Dense attention whose two T x T matrices would not fit in ``max_dense_bytes`` (default:
    half of the free device memory) is not run: its memory is then counted on the ``meta``
    device, where nothing is computed, and its time is reported as None.

    Raises:
        InputError: a bad size or option.
    """
    dtype = check_precision(precision, device)
    if any(h < 1 or w < 1 for h, w in feature_sizes):
        raise InputError("feature sizes must be positive (HxW)")
    torch.manual_seed(0)
    # ISA as the fast inference path runs it (with the copy-saving interlace).
    execution = inference_execution(attention)
    isa = ISAHead(
        channels,
        channels,
        attn_channels,
        1,
        group_size=group_size,
        attention=execution.attention,
        fast_interlace=execution.fast_interlace,
    ).eval()
    dense = SelfAttentionBlock(channels, attn_channels, attention=attention).eval()
    isa.to(device=device, dtype=dtype)
    dense.to(device=device, dtype=dtype)
    budget = max_dense_bytes if max_dense_bytes is not None else _free_bytes(device) // 2
    element = torch.finfo(dtype).bits // 8
    rows = []
    for index, (height, width) in enumerate(feature_sizes):
        group_h, group_w = group_size
        num_h, num_w = -(-height // group_h), -(-width // group_w)
        isa_affinity = batch_size * (
            affinity_bytes(num_h * num_w, group_h * group_w, element)
            + affinity_bytes(group_h * group_w, num_h * num_w, element)
        )
        dense_affinity = affinity_bytes(height * width, batch_size, element)
        shape = (batch_size, channels, height, width)
        isa_ms, isa_peak, isa_cuda = _run(
            isa.interlaced_attention, shape, dtype, device, warmup, iters
        )
        if 2 * dense_affinity <= budget:  # the similarity and its softmax
            dense_ms, dense_peak, dense_cuda = _run(dense, shape, dtype, device, warmup, iters)
        else:
            meta_dense = copy.deepcopy(dense).to("meta")
            dense_ms, dense_peak, dense_cuda = _run(
                meta_dense, shape, dtype, torch.device("meta"), 0, 0
            )
        rows.append(
            AttentionRow(
                feature_size=(height, width),
                tokens=height * width,
                isa_ms=isa_ms,
                dense_ms=dense_ms,
                isa_peak_bytes=isa_peak,
                dense_peak_bytes=dense_peak,
                isa_affinity_bytes=isa_affinity,
                dense_affinity_bytes=dense_affinity,
                isa_cuda_peak_bytes=isa_cuda,
                dense_cuda_peak_bytes=dense_cuda,
            )
        )
        if on_progress is not None:
            on_progress(ProgressEvent("attention", index + 1, len(feature_sizes)))
    return AttentionBenchResult(
        environment=environment(device),
        precision=precision,
        attention=attention,
        channels=channels,
        attn_channels=attn_channels,
        group_size=tuple(group_size),  # type: ignore[arg-type]
        batch_size=batch_size,
        warmup=warmup,
        iters=iters,
        rows=tuple(rows),
    )


def _run(
    fn: Callable[[Tensor], Tensor],
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    warmup: int,
    iters: int,
) -> tuple[float | None, int, int | None]:
    """(median ms, or None when ``iters`` is 0; tracked peak bytes; CUDA allocator peak bytes)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=generator).relu_().to(device=device, dtype=dtype)
    with torch.inference_mode():
        _, tracked = peak_tensor_bytes(lambda: fn(x))  # also the first (warm-up) call
        if iters == 0:
            return None, tracked, None
        timing = measure(lambda: fn(x), device, warmup=warmup, iters=iters, first_call=False)
    cuda_peak = None
    if device.type == "cuda":
        cuda_peak = timing.peak_memory_bytes - torch.cuda.memory_allocated(device)
    return timing.median_ms, tracked, cuda_peak


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30
