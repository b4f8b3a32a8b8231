"""Inference speed and memory of a zoo architecture with random weights (nothing downloaded):
the plain model, or the fast path a command would run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from isaseg_cli.bench.flops import inference_flops
from isaseg_cli.bench.memory import reset_peak
from isaseg_cli.bench.result import BenchmarkResult
from isaseg_cli.bench.timing import environment, measure
from isaseg_cli.engine.device import check_precision, inference_flags, process_flags
from isaseg_cli.engine.infer.fast import (
    AUTOMATIC,
    FastOptions,
    InferenceSegmentor,
    optimize_for_inference,
    recommended_window_batch,
    resolve_fast_settings,
)
from isaseg_cli.engine.infer.pipeline import forward_logits
from isaseg_cli.engine.infer.protocol import default_slide_stride
from isaseg_cli.engine.progress import ProgressCallback
from isaseg_cli.engine.random_weights import random_model
from isaseg_cli.errors import InputError
from isaseg_cli.models.fuse import ConvReLU
from isaseg_cli.zoo.spec import TestSpec, ZooEntry

INFERENCE_MODES = ("whole", "slide")


def mask_agreement(logits: Tensor, reference: Tensor) -> float:
    """Fraction of pixels whose argmax class is the same in both (N, K, H, W) logits."""
    return (logits.argmax(1) == reference.argmax(1)).float().mean().item()


def slide_test(entry: ZooEntry) -> TestSpec:
    """The entry's slide settings, or slide windows of its training crop at the default
    stride (``default_slide_stride``)."""
    if entry.test.mode == "slide":
        return entry.test
    crop = entry.data.crop_size
    return TestSpec(mode="slide", crop_size=crop, stride=default_slide_stride(crop))


def benchmark_inference(
    entry: ZooEntry,
    *,
    device: torch.device,
    options: FastOptions = AUTOMATIC,
    size: tuple[int, int] = (1024, 2048),
    batch_size: int = 1,
    mode: str = "whole",
    plain: bool = False,
    warmup: int = 3,
    iters: int = 10,
    check_masks: bool = False,
    profile_to: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> BenchmarkResult:
    """Inference speed of ``entry``'s architecture on random images of ``size`` (h, w), with
    the inference commands' process flags (``engine.device.inference_flags``) for its duration.

    Args:
        options: the fast path asked for (``resolve_fast_settings`` fills the rest).
        plain: time the model as built (no fast path): float32 only, the reference code path.
        mode: ``whole`` (one forward) or ``slide`` (windows batched as
            ``recommended_window_batch`` says).
        check_masks: also run the plain float32 model on the same images and report the
            fraction of pixels whose class agrees (``settings["mask_agreement"]``).
        profile_to: also write a ``torch.profiler`` table of the costliest kernels there.

    Raises:
        InputError: an option value that does not apply (e.g. ``plain`` with bf16).
    """
    check_precision(options.precision, device)
    if plain and (options.precision != "fp32" or options.compile):
        raise InputError("--plain times the reference float32 path: no --precision or --compile")
    if mode not in INFERENCE_MODES:
        raise InputError(f"unknown mode {mode!r}: use whole or slide")
    settings = None if plain else resolve_fast_settings(device, options)
    with process_flags(inference_flags(device)):
        model = random_model(entry.model, device)
        runner = model
        if settings is not None:
            runner = optimize_for_inference(model, entry.model, settings)
        test = slide_test(entry) if mode == "slide" else TestSpec()
        window_batch = recommended_window_batch(device, test, size)
        images = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(2))
        images = images.to(device)

        def step() -> Tensor:
            with torch.inference_mode():
                return forward_logits(runner, images, test, window_batch=window_batch)

        graphed = isinstance(runner, InferenceSegmentor) and runner.graphed is not None
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
    record = {"plain": plain, "fast": runner is not model, "mode": mode}
    record |= {"window_batch": window_batch, "mask_agreement": agreement}
    if isinstance(runner, InferenceSegmentor):
        record |= _applied(runner)
    return BenchmarkResult(
        kind="inference",
        model=entry.name,
        environment=environment(device),
        precision=options.precision,
        size=size,
        batch_size=batch_size,
        warmup=warmup,
        iters=iters,
        timing=timing,
        flops_per_iter=inference_flops(entry, images.shape, test),
        settings=record,
    )


def _applied(runner: InferenceSegmentor) -> dict[str, Any]:
    """What the fast path applied, as the JSON record lists it."""
    applied = dataclasses.asdict(runner.settings)
    applied["fast_interlace"] = runner.decode_head.fast_interlace
    fused = [m.fused for m in runner.modules() if isinstance(m, ConvReLU)]
    if fused:  # how many layers cuDNN ran fused (the others fell back, with a warning)
        applied["fused_conv_relu"] = f"{sum(fused)}/{len(fused)}"
    return applied
