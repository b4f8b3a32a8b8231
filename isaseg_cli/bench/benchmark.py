"""Speed and memory of ISANet inference and training with random weights (nothing downloaded).

Timed runs are preceded by a first call (reported alone: it includes any compilation) and
warm-up calls, and every timed call ends with a device synchronisation.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from isaseg_cli.bench.memory import read_peak, reset_peak
from isaseg_cli.engine.device import check_precision
from isaseg_cli.engine.infer.cuda_graphs import graph_training_forward
from isaseg_cli.engine.infer.fast import (
    optimize_for_inference,
    prepare_for_training,
    recommended_window_batch,
    set_attention,
)
from isaseg_cli.engine.infer.pipeline import forward_logits
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.engine.train.fit import train_one_iter
from isaseg_cli.engine.train.loss import segmentation_losses
from isaseg_cli.engine.train.optim import build_optimizer
from isaseg_cli.errors import InputError
from isaseg_cli.models.backbone import BasicBlock, Bottleneck
from isaseg_cli.models.build import build_model
from isaseg_cli.models.fuse import ConvReLU
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ModelSpec, TestSpec, ZooEntry


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds of the first call, and milliseconds of each timed call."""

    first_call_s: float
    times_ms: tuple[float, ...]
    peak_memory_bytes: int
    peak_memory_kind: str
    peak_reserved_bytes: int | None = None  # CUDA: what the caching allocator held at most

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def p90_ms(self) -> float:
        ordered = sorted(self.times_ms)
        return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


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


def environment(device: torch.device) -> dict[str, Any]:
    """Where a figure was measured: device name, torch/CUDA versions, CPU threads."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        # CPU figures are only comparable on an otherwise idle machine: record how busy it was.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    step: Callable[[], object],
    device: torch.device,
    *,
    warmup: int,
    iters: int,
    on_progress: ProgressCallback | None = None,
    task: str = "benchmark",
    first_call: bool = True,
    reset_memory_peak: bool = True,
    profile_to: Path | None = None,
) -> Timing:
    """Times ``step``: a first call (timed alone; skipped if ``first_call`` is False, when the
    caller made it), ``warmup`` untimed calls, then ``iters`` timed calls.

    The peak memory is that of the timed calls, or, with ``reset_memory_peak`` False, since
    the caller's own ``reset_peak`` (CUDA graph replays allocate nothing: their memory is
    seen when they are captured). With ``profile_to``, a ``torch.profiler`` table of a few
    more calls is written there (``write_profile``)."""
    if iters < 1 or warmup < 0:
        raise InputError("--iters must be at least 1 and --warmup at least 0")
    total = 1 + warmup + iters
    first = 0.0
    if first_call:
        start = time.perf_counter()
        step()
        synchronize(device)
        first = time.perf_counter() - start
    for index in range(warmup):
        step()
        _report(on_progress, task, 2 + index, total)
    if reset_memory_peak:
        reset_peak(device)
    times = []
    for index in range(iters):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
        _report(on_progress, task, 2 + warmup + index, total, ms=times[-1])
    peak, kind = read_peak(device)
    reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None
    if profile_to is not None:
        write_profile(step, device, profile_to)
    return Timing(first, tuple(times), peak, kind, reserved)


def write_profile(
    step: Callable[[], object], device: torch.device, path: Path, *, steps: int = 3
) -> None:
    """Runs ``step`` ``steps`` times under ``torch.profiler`` and writes the operators and
    kernels that took the most device time (CPU time off CUDA) as a text table to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    synchronize(device)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=40, max_name_column_width=70)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{steps} steps, sorted by {sort_by}\n{table}\n", encoding="utf-8")


def _report(
    callback: ProgressCallback | None, task: str, done: int, total: int, **info: Any
) -> None:
    if callback is not None:
        callback(ProgressEvent(task, done, total, info))


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: Tensor) -> None:
    """Sets every BN's running statistics to those of ``images`` (one forward in training
    mode, cumulative averages), so a random-weight model has unit-scale activations and
    meaningful logits instead of vanishing or exploding ones. Leaves the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    model(images)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def random_model(
    spec: ModelSpec, device: torch.device, *, residual_gain: float = 0.1, with_aux: bool = False
) -> Segmentor:
    """A seeded random-weight model that behaves like a trained one, in eval mode on ``device``.

    BN statistics are calibrated on random images; the last BN of each residual branch gets
    weight ``residual_gain`` (mmseg's own random init, ``zero_init_residual``, sets it to 0);
    and the classifier bias centres every class's mean logit, so no class wins everywhere.
    Without the small gain, random BN networks are chaotic: bf16 rounding alone flips about
    half the pixels of an R-50 (measured; docs/PERFORMANCE.md), which says nothing about the
    implementation. Speed does not depend on any of this.
    """
    torch.manual_seed(0)
    model = build_model(spec, with_aux=with_aux).to(device)
    with torch.no_grad():
        for block in model.backbone.modules():
            if isinstance(block, Bottleneck):
                block.bn3.weight.fill_(residual_gain)
            elif isinstance(block, BasicBlock):
                block.bn2.weight.fill_(residual_gain)
    calibration = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    calibration = calibration.to(device)
    calibrate_batchnorm(model, calibration)
    with torch.no_grad():
        logits = model.decode_head(model.backbone(calibration))
        model.decode_head.conv_seg.bias -= logits.mean(dim=(0, 2, 3))
    return model


def mask_agreement(logits: Tensor, reference: Tensor) -> float:
    """Fraction of pixels whose argmax class is the same in both (N, K, H, W) logits."""
    return (logits.argmax(1) == reference.argmax(1)).float().mean().item()


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs (2 per multiply-add) of convolutions and matrix products in ``run``."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def inference_flops(entry: ZooEntry, shape: torch.Size, test: TestSpec) -> int:
    """FLOPs of one inference forward of ``entry``'s network on ``shape`` images, counted on
    the meta device (no weights, no memory; windows one at a time, as the reference runs them)."""
    with torch.device("meta"):
        meta_model = build_model(entry.model, with_aux=False).eval()
    meta_images = torch.empty(shape, device="meta")
    return count_flops(lambda: forward_logits(meta_model, meta_images, test, window_batch=1))


def slide_test(entry: ZooEntry) -> TestSpec:
    """The entry's slide settings, or mmseg's 769/513 ratio applied to its training crop."""
    if entry.test.mode == "slide":
        return entry.test
    crop = entry.data.crop_size
    return TestSpec(mode="slide", crop_size=crop, stride=tuple(-(-2 * c // 3) for c in crop))


def benchmark_inference(
    entry: ZooEntry,
    *,
    device: torch.device,
    size: tuple[int, int] = (1024, 2048),
    batch_size: int = 1,
    precision: str = "fp32",
    mode: str = "whole",
    plain: bool = False,
    compile: bool = False,
    compile_mode: str = "default",
    attention: str | None = None,
    channels_last: bool | None = None,
    fuse_bn: bool | None = None,
    fuse_relu: bool | None = None,
    cuda_graphs: bool | None = None,
    warmup: int = 3,
    iters: int = 10,
    check_masks: bool = False,
    profile_to: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> BenchmarkResult:
    """Inference speed of ``entry``'s architecture on random images of ``size`` (h, w).

    Args:
        plain: time the model as built (no fast path): float32 only, the reference code path.
        mode: ``whole`` (one forward) or ``slide`` (windows batched as
            ``recommended_window_batch`` says).
        check_masks: also run the plain float32 model on the same images and report the
            fraction of pixels whose class agrees (``settings["mask_agreement"]``).
        profile_to: also write a ``torch.profiler`` table of the costliest kernels there.
        Other arguments are those of ``optimize_for_inference``.

    Raises:
        InputError: an option value that does not apply (e.g. ``plain`` with bf16).
    """
    check_precision(precision, device)
    if plain and (precision != "fp32" or compile):
        raise InputError("--plain times the reference float32 path: no --precision or --compile")
    if mode not in ("whole", "slide"):
        raise InputError(f"unknown mode {mode!r}: use whole or slide")
    model = random_model(entry.model, device)
    runner = model
    if not plain:
        runner = optimize_for_inference(
            model,
            device=device,
            precision=precision,
            attention=attention,
            channels_last=channels_last,
            fuse_bn=fuse_bn,
            fuse_relu=fuse_relu,
            cuda_graphs=cuda_graphs,
            compile=compile,
            compile_mode=compile_mode,
        )
    test = slide_test(entry) if mode == "slide" else TestSpec()
    window_batch = recommended_window_batch(device, test, size)
    images = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(2))
    images = images.to(device)

    def step() -> Tensor:
        with torch.inference_mode():
            return forward_logits(runner, images, test, window_batch=window_batch)

    graphed = getattr(getattr(runner, "settings", None), "cuda_graphs", False)
    if graphed:
        # The first call of a shape runs eagerly (cuDNN autotunes there, with large
        # workspaces); the next one captures the graph, where its memory is allocated.
        step()
        reset_peak(device)
    timing = measure(
        step,
        device,
        warmup=warmup,
        iters=iters,
        on_progress=on_progress,
        reset_memory_peak=not graphed,
        profile_to=profile_to,
    )
    agreement = None
    if check_masks and runner is not model:
        with torch.inference_mode():
            reference = forward_logits(model, images, test, window_batch=window_batch)
            agreement = mask_agreement(step(), reference)
    flops = inference_flops(entry, images.shape, test)
    # ``fast`` False: the path is the reference one (asked with ``plain``, or nothing to change).
    settings = {"plain": plain, "fast": runner is not model, "mode": mode}
    settings["window_batch"] = window_batch
    settings["mask_agreement"] = agreement
    if runner is not model:
        settings |= dataclasses.asdict(runner.settings)  # type: ignore[arg-type]
        fused = [m.fused for m in runner.modules() if isinstance(m, ConvReLU)]
        if fused:  # how many layers cuDNN ran fused (the others fell back, with a warning)
            settings["fused_conv_relu"] = f"{sum(fused)}/{len(fused)}"
    return BenchmarkResult(
        kind="inference",
        model=entry.name,
        environment=environment(device),
        precision=precision,
        size=size,
        batch_size=batch_size,
        warmup=warmup,
        iters=iters,
        timing=timing,
        flops_per_iter=flops,
        settings=settings,
    )


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
    set up as ``isaseg train`` sets it up (``prepare_for_training``: on CUDA channels-last,
    SDPA, the copy-saving interlace, the matrix-product loss resize and recomputed bottleneck
    tails) and, on CUDA without ``compile``, the forward and backward replay CUDA graphs
    (``cuda_graphs``, ``None``: automatic). ``compile`` compiles the model instead (inductor
    may recompute cheap ops rather than save them). ``profile_to``: also write a
    ``torch.profiler`` kernel table there.
    """
    check_precision(precision, device)
    if plain and (compile or cuda_graphs or recompute):
        raise InputError("--plain times the reference step: no --compile, graphs or recompute")
    size = size or entry.data.crop_size
    batch_size = batch_size or max(1, entry.train.batch_size // entry.train.gpus)
    torch.manual_seed(0)
    model = build_model(entry.model).to(device).train()
    if plain:
        applied: dict[str, object] = {"channels_last": False, "attention": "matmul"}
        applied |= {"fast_interlace": False, "recompute": False, "matmul_resize": False}
    else:
        if compile and recompute is None:
            recompute = False  # inductor plans its own recomputation
        applied = prepare_for_training(model, device, recompute=recompute)
    if attention is not None:
        set_attention(model, attention, fast_interlace=not plain)
        applied["attention"] = attention
    if cuda_graphs is None:
        cuda_graphs = not plain and not compile and device.type == "cuda"
    if cuda_graphs and (compile or device.type != "cuda"):
        raise InputError("CUDA graphs need a CUDA device and no --compile")
    if compile:
        model.compile(dynamic=False)
    optimizer = build_optimizer(model, entry.train)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(batch_size, 3, *size, generator=generator).to(device)
    labels = torch.randint(0, entry.model.num_classes, (batch_size, *size), generator=generator)
    labels = labels.to(device)
    if cuda_graphs:
        # One eager step first: cuDNN's autotuning tries kernels with large workspaces, which
        # would otherwise count as the step's memory. Then the capture, where the graphs'
        # memory is allocated (replays allocate nothing).
        train_one_iter(model, images, labels, optimizer, scaler, entry, device, precision)
        reset_peak(device)
        graph_training_forward(model, images, precision)

    def step() -> Tensor:
        losses = train_one_iter(model, images, labels, optimizer, scaler, entry, device, precision)
        return losses["total"]

    timing = measure(
        step,
        device,
        warmup=warmup,
        iters=iters,
        on_progress=on_progress,
        reset_memory_peak=not cuda_graphs,
        profile_to=profile_to,
    )
    with torch.device("meta"):
        meta_model = build_model(entry.model).train()
        meta_images = torch.empty(images.shape)
        meta_labels = torch.zeros(labels.shape, dtype=torch.int64)

    aux_weight = entry.model.aux_head.loss_weight if entry.model.aux_head else 0.0

    def meta_step() -> None:
        losses = segmentation_losses(meta_model(meta_images), meta_labels, aux_weight=aux_weight)
        losses["total"].backward()

    flops = count_flops(meta_step)
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
        flops_per_iter=flops,
        settings={
            "plain": plain,
            "fast": not plain,
            **applied,
            "compile": compile,
            "cuda_graphs": cuda_graphs,
        },
    )
