"""The training fast path: decided per device before the model is built, refused with
SyncBatchNorm where it would be wrong."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.engine.train.fast_path import reference_training_path, resolve_training_path
from isaseg_cli.errors import InputError
from isaseg_cli.models.execution import REFERENCE, ExecutionSpec

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_cuda_gets_every_choice() -> None:
    path = resolve_training_path(CUDA)
    assert path.channels_last
    assert path.execution == ExecutionSpec(
        attention="sdpa", fast_interlace=True, matmul_resize=True, recompute_tail=True
    )
    assert path.applied() == {
        "recompute": True,
        "channels_last": True,
        "attention": "sdpa",
        "fast_interlace": True,
        "matmul_resize": True,
    }


def test_the_cpu_keeps_the_reference_path_unless_asked() -> None:
    assert resolve_training_path(CPU).execution == REFERENCE
    assert not resolve_training_path(CPU).channels_last
    assert resolve_training_path(CPU, recompute=True).execution.recompute_tail
    asked = resolve_training_path(CPU, attention="sdpa").execution
    assert asked.attention == "sdpa" and asked.fast_interlace and not asked.matmul_resize


def test_sync_batchnorm_turns_recomputation_off_or_refuses_it() -> None:
    assert not resolve_training_path(CUDA, sync_bn=True).execution.recompute_tail
    assert not resolve_training_path(CUDA, recompute=False).execution.recompute_tail
    with pytest.raises(InputError, match="SyncBatchNorm"):
        resolve_training_path(CUDA, sync_bn=True, recompute=True)


def test_the_reference_path_with_a_kernel() -> None:
    assert reference_training_path().execution == REFERENCE
    sdpa = reference_training_path("sdpa").execution
    assert sdpa.attention == "sdpa" and not sdpa.fast_interlace
    for resolve in (reference_training_path, lambda a: resolve_training_path(CPU, attention=a)):
        with pytest.raises(InputError, match="unknown attention"):
            resolve("flash")
