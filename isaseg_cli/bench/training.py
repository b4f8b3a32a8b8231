"""The speed and memory of one ``isaseg train`` step with random weights and labels."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from isaseg_cli.bench.flops import training_flops
from isaseg_cli.bench.memory import reset_peak
from isaseg_cli.bench.result import BenchmarkResult
from isaseg_cli.bench.timing import environment, measure
from isaseg_cli.engine.device import check_precision
from isaseg_cli.engine.infer.cuda_graphs import GraphedTraining, use_cuda_graphs
from isaseg_cli.engine.progress import ProgressCallback
from isaseg_cli.engine.train.fast_path import reference_training_path, resolve_training_path
from isaseg_cli.engine.train.fit import train_one_iter
from isaseg_cli.engine.train.optim import build_optimizer
from isaseg_cli.errors import InputError
from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.spec import ZooEntry


def benchmark_train(
    entry: ZooEntry,
    *,
    device: torch.device,
    size: tuple[int, int] | None = None,
    batch_size: int | None = None,
    precision: str = "fp32",
    plain: bool = False,
    attention: str | None = None,
    compile: bool = False,
    cuda_graphs: bool | None = None,
    recompute: bool | None = None,
    warmup: int = 3,
    iters: int = 10,
    profile_to: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> BenchmarkResult:
    """One training iteration of ``entry``: ``isaseg train``'s own step (``train_one_iter``:
    forward, decode + aux loss, backward, SGD step) on random images and labels.

    Defaults are the entry's recipe per GPU: its crop and ``train.batch_size // train.gpus``.
    Mixed precision through autocast (a grad scaler for fp16). Unless ``plain``, the model is
    built as ``isaseg train`` builds it (``resolve_training_path``: on CUDA channels-last,
    SDPA, the copy-saving interlace, the matrix-product loss resize and recomputed bottleneck
    tails) and, on CUDA without ``compile``, the forward and backward replay CUDA graphs
    (``cuda_graphs``, ``None``: automatic). ``compile`` compiles the model instead (inductor
    may recompute cheap ops rather than save them). ``profile_to``: also write a
    ``torch.profiler`` kernel table there.

    Raises:
        InputError: an option value that does not apply (e.g. ``plain`` with graphs).
    """
    check_precision(precision, device)
    if plain and (compile or cuda_graphs or recompute):
        raise InputError("--plain times the reference step: no --compile, graphs or recompute")
    size = size or entry.data.crop_size
    batch_size = batch_size or max(1, entry.train.batch_size // entry.train.gpus)
    if plain:
        path = reference_training_path(attention)
    else:
        if compile and recompute is None:
            recompute = False  # inductor plans its own recomputation
        path = resolve_training_path(device, recompute=recompute, attention=attention)
    graphs = use_cuda_graphs(False if plain else cuda_graphs, device, compile=compile)
    torch.manual_seed(0)
    model = build_model(entry.model, execution=path.execution)
    memory_format = torch.channels_last if path.channels_last else torch.preserve_format
    model = model.to(device, memory_format=memory_format).train()
    if compile:
        model.compile(dynamic=False)
    optimizer = build_optimizer(model, entry.train)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(batch_size, 3, *size, generator=generator).to(device)
    labels = torch.randint(0, entry.model.num_classes, (batch_size, *size), generator=generator)
    labels = labels.to(device)
    net: torch.nn.Module = model
    if graphs:
        # One eager step first: cuDNN's autotuning tries kernels with large workspaces, which
        # would otherwise count as the step's memory. Then the capture, where the graphs'
        # memory is allocated (replays allocate nothing).
        train_one_iter(model, images, labels, optimizer, scaler, entry, device, precision)
        reset_peak(device)
        net = GraphedTraining(model, images, precision)

    def step() -> Tensor:
        losses = train_one_iter(net, images, labels, optimizer, scaler, entry, device, precision)
        return losses["total"]

    timing = measure(
        step,
        device,
        warmup=warmup,
        iters=iters,
        on_progress=on_progress,
        reset_memory_peak=not graphs,
        profile_to=profile_to,
    )
    settings = {"plain": plain, "fast": not plain, **path.applied()}
    settings |= {"compile": compile, "cuda_graphs": graphs}
    return BenchmarkResult(
        kind="train",
        model=entry.name,
        environment=environment(device),
        precision=precision,
        size=tuple(size),  # type: ignore[arg-type]
        batch_size=batch_size,
        warmup=warmup,
        iters=iters,
        timing=timing,
        flops_per_iter=training_flops(entry, images.shape),
        settings=settings,
    )
