"""``isaseg benchmark``'s one entry point: the checks across its options, the per-device call
counts, and the choice of the inference, training or attention benchmark."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from isaseg_cli.bench.attention import AttentionBenchResult, benchmark_attention
from isaseg_cli.bench.inference import benchmark_inference
from isaseg_cli.bench.result import BenchmarkResult
from isaseg_cli.bench.training import benchmark_train
from isaseg_cli.engine.infer.fast import AUTOMATIC, FastOptions
from isaseg_cli.engine.progress import ProgressCallback
from isaseg_cli.errors import InputError
from isaseg_cli.zoo.spec import ZooEntry

BENCHMARK_KINDS = ("inference", "train", "attention")
DEFAULT_INFERENCE_SIZE = (1024, 2048)


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchmarkRequest:
    """What ``isaseg benchmark`` was asked; ``None`` means the benchmark's own default.

    ``options`` are the fast inference path's (for ``train`` only the precision and the
    attention kernel apply); ``cuda_graphs`` and ``recompute`` are the training step's;
    ``backend`` other than ``torch`` times an exported file (``export.benchmark``).
    """

    kind: str = "inference"
    backend: str = "torch"
    options: FastOptions = AUTOMATIC
    size: tuple[int, int] | None = None
    batch_size: int | None = None
    mode: str = "whole"
    plain: bool = False
    check_masks: bool = False
    feature_sizes: tuple[tuple[int, int], ...] = field(default=((64, 64), (128, 128)))
    cuda_graphs: bool | None = None
    recompute: bool | None = None
    warmup: int | None = None
    iters: int | None = None
    profile_to: Path | None = None


def check_request(request: BenchmarkRequest, device: torch.device | None = None) -> None:
    """The checks across options, made before anything is built (``device``: where it runs,
    for the backend check).

    Raises:
        InputError: options of another benchmark (e.g. ``--recompute`` without ``--train``),
            or of the PyTorch path with another backend.
    """
    if request.kind not in BENCHMARK_KINDS:
        raise InputError(f"unknown benchmark {request.kind!r}: use {', '.join(BENCHMARK_KINDS)}")
    if request.kind != "train" and (
        request.cuda_graphs is not None or request.recompute is not None
    ):
        raise InputError("--cuda-graphs and --recompute apply to --train")
    if request.kind == "attention" and request.profile_to is not None:
        raise InputError("--profile applies to the inference and --train benchmarks")
    options = request.options
    if request.backend != "torch" and (
        request.kind != "inference"
        or options.compile
        or request.plain
        or options.precision != "fp32"
        or (device is not None and device.type != "cpu")
    ):
        raise InputError(
            f"--backend {request.backend} times float32 inference on the CPU: "
            "no --train, --compile, --plain, --precision or --device"
        )


def call_counts(request: BenchmarkRequest, device: torch.device) -> dict[str, int]:
    """Untimed and timed calls: as asked, else 5 and 20 on a GPU, 1 and 3 on a CPU."""
    gpu = device.type == "cuda"
    warmup = request.warmup if request.warmup is not None else (5 if gpu else 1)
    iters = request.iters if request.iters is not None else (20 if gpu else 3)
    return {"warmup": warmup, "iters": iters}


def run_benchmark(
    entry: ZooEntry | None,
    request: BenchmarkRequest,
    device: torch.device,
    on_progress: ProgressCallback | None = None,
) -> BenchmarkResult | AttentionBenchResult:
    """Runs the benchmark ``request`` names on ``device`` (``entry``: the architecture of the
    inference and training benchmarks; the attention one has its own widths).

    Raises:
        InputError: an option that does not apply (``check_request`` and each benchmark's).
    """
    check_request(request, device)
    if request.backend != "torch":
        raise InputError(f"--backend {request.backend}: run export.benchmark.benchmark_backend")
    calls = call_counts(request, device)
    options = request.options
    if request.kind == "attention":
        return benchmark_attention(
            device=device,
            feature_sizes=request.feature_sizes,
            precision=options.precision,
            attention=options.attention or ("sdpa" if device.type == "cuda" else "matmul"),
            batch_size=request.batch_size or 1,
            on_progress=on_progress,
            **calls,
        )
    if entry is None:
        raise InputError("the inference and training benchmarks need a model")
    if request.kind == "train":
        return benchmark_train(
            entry,
            device=device,
            size=request.size,
            batch_size=request.batch_size,
            precision=options.precision,
            plain=request.plain,
            attention=options.attention,
            compile=options.compile,
            cuda_graphs=request.cuda_graphs,
            recompute=request.recompute,
            profile_to=request.profile_to,
            on_progress=on_progress,
            **calls,
        )
    return benchmark_inference(
        entry,
        device=device,
        options=options,
        size=request.size or DEFAULT_INFERENCE_SIZE,
        batch_size=request.batch_size or 1,
        mode=request.mode,
        plain=request.plain,
        check_masks=request.check_masks,
        profile_to=request.profile_to,
        on_progress=on_progress,
        **calls,
    )
