"""The training fast path: how ``isaseg train`` (and ``isaseg benchmark --train``) build the
model for speed on a device, decided once before the model is built."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from isaseg_cli.engine.infer.fast import check_attention
from isaseg_cli.errors import InputError
from isaseg_cli.models.execution import REFERENCE, ExecutionSpec


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainingPath:
    """The execution choices of a training model (``build_model(..., execution=...)``) and
    its memory format (``channels_last``: NHWC parameters, set when it moves to the device)."""

    execution: ExecutionSpec = REFERENCE
    channels_last: bool = False

    def applied(self) -> dict[str, object]:
        """The choices as the benchmark records them."""
        execution = self.execution
        return {
            "recompute": execution.recompute_tail,
            "channels_last": self.channels_last,
            "attention": execution.attention,
            "fast_interlace": execution.fast_interlace,
            "matmul_resize": execution.matmul_resize,
        }


def resolve_training_path(
    device: torch.device,
    *,
    sync_bn: bool = False,
    recompute: bool | None = None,
    attention: str | None = None,
) -> TrainingPath:
    """The training fast path on ``device``.

    On CUDA: channels-last parameters, SDPA for both ISA relations, the copy-saving interlace
    and the logits resized for the loss by matrix products, which keep the maths and the state
    dict (keys and values) of the reference model; and ``recompute`` (``None``: on CUDA without
    SyncBatchNorm) has every bottleneck recompute its tail in the backward pass instead of
    keeping it (the same gradients, less activation memory for a little time:
    docs/PERFORMANCE.md). Elsewhere, unless ``recompute`` or ``attention`` asks for it,
    nothing changes: CPU training stays the reference code path. ``attention`` (a benchmark
    choice) picks the kernel, with the copy-saving interlace the fast path runs it with.

    Raises:
        InputError: ``recompute`` with SyncBatchNorm, or an unknown attention kernel.
    """
    check_attention(attention)
    cuda = device.type == "cuda"
    if recompute is None:
        recompute = cuda and not sync_bn
    elif recompute and sync_bn:  # its recomputation would all-reduce the statistics again
        raise InputError("--recompute does not combine with SyncBatchNorm (multi-GPU training)")
    execution = ExecutionSpec(
        attention=attention or ("sdpa" if cuda else "matmul"),
        fast_interlace=cuda or attention is not None,
        matmul_resize=cuda,
        recompute_tail=recompute,
    )
    return TrainingPath(execution=execution, channels_last=cuda)


def reference_training_path(attention: str | None = None) -> TrainingPath:
    """The reference code path (``--plain``), with ``attention`` as its kernel if given."""
    check_attention(attention)
    return TrainingPath(execution=ExecutionSpec(attention=attention or "matmul"))
