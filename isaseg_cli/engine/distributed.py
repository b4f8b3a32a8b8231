"""The process layout that torchrun describes in environment variables, and the process group."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from isaseg_cli.engine.ranks import DistInfo, dist_info
from isaseg_cli.zoo.spec import WeightsSpec

T = TypeVar("T")


def joined_info() -> DistInfo:
    """``dist_info()`` once this process has joined the process group, else a single process:
    work is sharded only among processes that can all-reduce their results."""
    if dist.is_available() and dist.is_initialized():
        return dist_info()
    return DistInfo()


def init_process_group(info: DistInfo, device: torch.device, timeout_s: float = 1800) -> bool:
    """Joins torchrun's process group (NCCL for CUDA, Gloo for the CPU) if there is one to join.

    Returns:
        True when this call created the group (so the caller should destroy it), False for a
        single process or a group that already exists.
    """
    if not info.distributed or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(seconds=timeout_s),
        device_id=device if device.type == "cuda" else None,
    )
    return True


@contextlib.contextmanager
def process_group(device: torch.device, info: DistInfo | None = None) -> Iterator[torch.device]:
    """Under torchrun: joins the process group for the block's length and yields this process's
    device (``cuda`` becomes ``cuda:LOCAL_RANK``); a single process just gets ``device``."""
    info = info or dist_info()
    if info.distributed and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    created = init_process_group(info, device)
    try:
        yield device
    finally:
        if created:
            destroy_process_group()


def destroy_process_group() -> None:
    """Leaves the process group, if any."""
    if dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(value: T) -> list[T]:
    """``value`` from every process, in rank order (``all_gather_object``); ``[value]`` alone
    without a process group."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_buffers(model: nn.Module) -> None:
    """Gives every process rank 0's buffers (BN statistics differ with per-process BatchNorm),
    as DDP itself does before each forward, so checkpoints and evaluation see one model."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def ranks_identical(model: nn.Module) -> bool:
    """Whether every process holds bit-identical weights and buffers (a DDP sanity check)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    digests: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    return len(set(digests)) == 1


def ensure_weights_once(
    weights: WeightsSpec,
    info: DistInfo | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> Path:
    """The cached path of published weights, downloaded by one process per machine.

    The cache's file lock would make concurrent fetches safe anyway; taking turns (rank 0,
    then the first process of every other machine, then everyone else) keeps one progress
    bar and one set of retry notes (``on_status``) per job.
    """
    from isaseg_cli.hub.fetch import ensure_weights

    info = info or dist_info()
    synchronised = info.distributed and dist.is_initialized()
    path = None
    for turn in (info.is_main, info.local_rank == 0, True):
        if turn and path is None:
            main = info.is_main
            path = ensure_weights(
                weights,
                on_progress=on_progress if main else None,
                on_status=on_status if main else None,
            )
        if synchronised:
            dist.barrier()
    assert path is not None
    return path
