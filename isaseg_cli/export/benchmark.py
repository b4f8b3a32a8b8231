"""``isaseg benchmark --backend onnxruntime|openvino``: the exported network's speed, beside
the PyTorch plain path on the same random images (random weights, CPU)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path

import torch

from isaseg_cli.bench.flops import inference_flops
from isaseg_cli.bench.inference import mask_agreement, slide_test
from isaseg_cli.bench.result import BenchmarkResult
from isaseg_cli.bench.timing import Timing, environment, measure
from isaseg_cli.engine.infer.backends import check_backend_options, load_exported
from isaseg_cli.engine.infer.pipeline import forward_logits
from isaseg_cli.engine.loading import LoadedModel, entry_classes
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.engine.random_weights import random_model
from isaseg_cli.errors import ExportError
from isaseg_cli.export.cache import export_dir, export_key, one_exporter, optimized_dir
from isaseg_cli.export.onnx import export_onnx
from isaseg_cli.export.verify import verification_sizes
from isaseg_cli.zoo.spec import TestSpec, ZooEntry


def _state_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _exported_random_model(entry: ZooEntry, model: torch.nn.Module) -> Path:
    """The random model's dynamic export, cached like ``export.cache.cached_export``."""
    weights_sha256 = _state_sha256(model)
    path = export_dir() / f"bench-{export_key(weights_sha256, entry.name)[:24]}.onnx"
    if path.is_file():
        return path
    with one_exporter(path, None):
        if path.is_file():  # another process exported it while this one waited
            return path
        classes, palette = entry_classes(entry)
        loaded = LoadedModel(model, entry, classes, palette, Path(""))  # type: ignore[arg-type]
        size = entry.data.crop_size
        result = export_onnx(
            loaded,
            path,
            size=size,
            verify_sizes=verification_sizes(size, True, entry.model)[1:2],
            weights_sha256=weights_sha256,
        )
    if not result.passed:
        raise ExportError(f"the ONNX export of {entry.name} disagrees with PyTorch")
    return path


def benchmark_backend(
    entry: ZooEntry,
    *,
    backend: str,
    size: tuple[int, int] = (1024, 2048),
    batch_size: int = 1,
    mode: str = "whole",
    warmup: int = 1,
    iters: int = 3,
    check_masks: bool = False,
    on_progress: ProgressCallback | None = None,
) -> BenchmarkResult:
    """Times ``entry``'s architecture (random weights) exported and run on ``backend``; with
    ``check_masks`` also times the PyTorch plain float32 path on the same images, alternating
    with the backend call by call (``settings["torch_median_ms"]``, ``settings["speedup"]`` of
    the medians, ``settings["speedup_of_minimums"]``), and reports their mask agreement.

    Raises:
        InputError: an unknown backend.
        ExportError: the export failed or disagrees with PyTorch.
        MissingExtraError: the backend's extra is not installed.
    """
    check_backend_options(backend, "cpu", "fp32", False)
    device = torch.device("cpu")
    model = random_model(entry.model, device)
    path = _exported_random_model(entry, model)
    runner = load_exported(path, backend, optimized_dir=optimized_dir()).model
    test = slide_test(entry) if mode == "slide" else TestSpec()
    images = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(2))

    def step() -> torch.Tensor:
        return forward_logits(runner, images, test)

    settings: dict[str, object] = {"plain": False, "fast": False, "mode": mode}
    settings |= {"backend": backend, "export_file": str(path), "window_batch": 1}
    if not check_masks:
        timing = measure(step, device, warmup=warmup, iters=iters, on_progress=on_progress)
    else:
        with torch.inference_mode():

            def torch_step() -> torch.Tensor:
                return forward_logits(model, images, test)

            timing, reference = _interleaved(step, torch_step, device, warmup, iters, on_progress)
            settings["mask_agreement"] = mask_agreement(step(), torch_step())
        settings["torch_median_ms"] = reference.median_ms
        settings["torch_min_ms"] = min(reference.times_ms)
        settings["torch_all_ms"] = list(reference.times_ms)
        settings["speedup"] = reference.median_ms / timing.median_ms
        settings["speedup_of_minimums"] = min(reference.times_ms) / min(timing.times_ms)
    flops = inference_flops(entry, images.shape, test)
    return BenchmarkResult(
        kind="inference",
        model=entry.name,
        environment=environment(device),
        precision="fp32",
        size=size,
        batch_size=batch_size,
        warmup=warmup,
        iters=iters,
        timing=timing,
        flops_per_iter=flops,
        settings=settings,
    )


def _interleaved(
    step: Callable[[], object],
    torch_step: Callable[[], object],
    device: torch.device,
    warmup: int,
    iters: int,
    on_progress: ProgressCallback | None,
) -> tuple[Timing, Timing]:
    """Both steps timed in alternation (backend, torch, backend, ...), so that load from other
    processes on a shared machine falls on both alike rather than on whichever ran second."""
    timings: dict[str, list[Timing]] = {"backend": [], "torch": []}
    for index in range(iters):
        for name, run in (("backend", step), ("torch", torch_step)):
            first = index == 0
            timings[name].append(
                measure(
                    run,
                    device,
                    warmup=warmup if first else 0,
                    iters=1,
                    first_call=first,
                )
            )
        if on_progress is not None:
            on_progress(ProgressEvent(task="benchmark", completed=index + 1, total=iters))
    return _joined(timings["backend"]), _joined(timings["torch"])


def _joined(timings: list[Timing]) -> Timing:
    return dataclasses.replace(
        timings[0],
        times_ms=tuple(time for timing in timings for time in timing.times_ms),
        peak_memory_bytes=max(timing.peak_memory_bytes for timing in timings),
    )
