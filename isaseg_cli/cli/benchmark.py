"""`isaseg benchmark`: inference or training speed and memory, or ISA against dense attention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._backend import resolve_backend
from isaseg_cli.cli._options import (
    DEFAULT_MODEL,
    CudaGraphsOpt,
    DeviceOpt,
    JsonOutOpt,
    PrecisionOpt,
    RecomputeOpt,
    complete_model_name,
    default_model,
    parse_size,
)
from isaseg_cli.errors import InputError

GIB = 1024**3
# benchmark has random weights and no --checkpoint, so auto always means torch here
BenchBackendOpt = Annotated[
    Literal["auto", "torch", "onnxruntime", "openvino"],
    typer.Option(
        help="Run the network in PyTorch (auto), or exported to ONNX (cached) in ONNX Runtime "
        "or OpenVINO; add --check-masks to time PyTorch beside it."
    ),
]


def benchmark_cli(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL",
            autocompletion=complete_model_name,
            help="Zoo name or alias; random weights (default: $ISASEG_MODEL, else "
            f"{DEFAULT_MODEL}).",
            show_default=False,
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(metavar="HxW", help="Input size (default 1024x2048; --train: the crop)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Images per call (--train: the recipe's per GPU)."),
    ] = None,
    precision: PrecisionOpt = "fp32",
    mode: Annotated[Literal["whole", "slide"], typer.Option(help="Inference mode.")] = "whole",
    device: DeviceOpt = "auto",
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (compile time reported).")
    ] = False,
    compile_mode: Annotated[
        Literal["default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"],
        typer.Option(help="Inductor mode for --compile."),
    ] = "default",
    plain: Annotated[
        bool, typer.Option("--plain", help="Time the reference float32 path (no fast path).")
    ] = False,
    kernel: Annotated[
        Literal["auto", "matmul", "sdpa"],
        typer.Option(help="Attention kernel (auto: sdpa on CUDA, else matmul)."),
    ] = "auto",
    channels_last: Annotated[
        bool | None,
        typer.Option("--channels-last/--no-channels-last", help="Memory format (auto: CUDA)."),
    ] = None,
    fuse_bn: Annotated[
        bool | None,
        typer.Option("--fuse-bn/--no-fuse-bn", help="Fold BatchNorm (auto: CUDA or bf16/fp16)."),
    ] = None,
    fuse_relu: Annotated[
        bool | None,
        typer.Option(
            "--fuse-relu/--no-fuse-relu",
            help="One cuDNN call per conv+bias(+residual)+ReLU (auto: CUDA, unless --compile).",
        ),
    ] = None,
    warmup: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Untimed calls (default 5 GPU, 1 CPU).")
    ] = None,
    iters: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Timed calls (default 20 GPU, 3 CPU).")
    ] = None,
    check_masks: Annotated[
        bool,
        typer.Option("--check-masks", help="Report mask agreement with the plain fp32 path."),
    ] = False,
    train: Annotated[
        bool, typer.Option("--train", help="Time a training step (forward, backward, SGD).")
    ] = False,
    attention: Annotated[
        bool, typer.Option("--attention", help="ISA against dense self-attention, 512 channels.")
    ] = False,
    feature_sizes: Annotated[
        str,
        typer.Option(metavar="HxW,...", help="Feature maps for --attention."),
    ] = "64x64,128x128,128x256",
    cuda_graphs: CudaGraphsOpt = None,
    recompute: RecomputeOpt = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE", help="Also write a torch.profiler table of the costliest kernels."
        ),
    ] = None,
    backend: BenchBackendOpt = "auto",
    json_out: JsonOutOpt = None,
) -> None:
    """Measure images/s, latency, peak memory and FLOP/s with random weights (no download)."""
    if train and attention:
        raise InputError("--train and --attention are separate benchmarks: pick one")
    backend = resolve_backend(backend, None)  # random weights: never an exported file
    from isaseg_cli.bench.run import BenchmarkRequest, call_counts, check_request, run_benchmark
    from isaseg_cli.engine.device import resolve_device
    from isaseg_cli.engine.infer.fast import FastOptions
    from isaseg_cli.zoo.catalog import resolve_entry

    options = FastOptions(
        precision=precision,
        fuse_bn=fuse_bn,
        fuse_relu=fuse_relu,
        channels_last=channels_last,
        attention=None if kernel == "auto" else kernel,
        compile=compile,
        compile_mode=compile_mode,
    )
    request = BenchmarkRequest(
        kind="train" if train else "attention" if attention else "inference",
        backend=backend,
        options=options,
        size=parse_size(size, "--size"),
        batch_size=batch_size,
        mode=mode,
        plain=plain,
        check_masks=check_masks,
        feature_sizes=tuple(parse_size(s, "--feature-sizes") for s in feature_sizes.split(",")),
        cuda_graphs=cuda_graphs,
        recompute=recompute,
        warmup=warmup,
        iters=iters,
        profile_to=profile,
    )
    entry = None if attention else resolve_entry(model or default_model())
    target = resolve_device(device)
    check_request(request, target)
    with _render.progress_bars() as update:
        sink = _render.event_sink(update)
        if backend != "torch":
            from isaseg_cli.export.benchmark import benchmark_backend

            assert entry is not None

            result: Any = benchmark_backend(
                entry,
                backend=backend,
                size=request.size or (1024, 2048),
                batch_size=batch_size or 1,
                mode=mode,
                check_masks=check_masks,
                on_progress=sink,
                **call_counts(request, target),
            )
        else:
            result = run_benchmark(entry, request, target, sink)
    record = result.to_dict()
    if attention:
        _render_attention(record)
    else:
        _render_speed(record)
    if json_out is not None:
        _render.write_json(json_out, record)


def _render_speed(record: dict[str, Any]) -> None:
    settings = record["settings"]
    applied = ", ".join(
        f"{k}={v}"
        for k, v in settings.items()
        if k not in ("plain", "fast", "mode", "backend", "export_file", "torch_all_ms")
        and k not in ("mask_agreement", "torch_median_ms", "speedup")
    )
    path = "fast" if settings["fast"] else "reference"
    if settings.get("backend"):
        path = f"{settings['backend']} (exported ONNX file)"
    elif not settings["fast"] and not settings["plain"]:
        path += " (the fast path changes nothing for fp32 on this device)"
    rows = [
        ["model", record["model"]],
        ["device", f"{record['device_name']} ({record['device']}, torch {record['torch']})"],
        [
            "precision / size / batch",
            f"{record['precision']} / {record['size']} / {record['batch_size']}",
        ],
        ["path", f"{path}: {applied}"],
        ["first call s (incl. compile)", record["first_call_s"]],
        ["compile s (first - median)", record["compile_s"]],
        ["latency median ms", record["latency_median_ms"]],
        ["latency p90 ms", record["latency_p90_ms"]],
        ["images/s", record["images_per_s"]],
        [
            "peak memory GiB",
            f"{record['peak_memory_bytes'] / GIB:.2f} ({record['peak_memory_kind']})",
        ],
        ["TFLOP per iteration", f"{record['flops_per_iter'] / 1e12:.3f}"],
        ["achieved TFLOP/s", f"{record['achieved_tflops_per_s']:.3f}"],
    ]
    if settings.get("torch_median_ms") is not None:
        rows.append(["PyTorch plain latency median ms", settings["torch_median_ms"]])
        rows.append(["speed-up over PyTorch plain", settings["speedup"]])
    if settings.get("mask_agreement") is not None:
        rows.append(["mask agreement %", 100 * settings["mask_agreement"]])
    title = "training step" if record["kind"] == "train" else f"inference ({settings['mode']})"
    _render.table(f"isaseg benchmark: {title}", ["", "value"], rows)


def _render_attention(record: dict[str, Any]) -> None:
    mib = 1024**2
    rows = []
    for row in record["rows"]:
        rows.append(
            [
                "x".join(map(str, row["feature_size"])),
                row["tokens"],
                row["isa_ms"],
                row["dense_ms"],
                row["time_ratio"],
                row["isa_peak_bytes"] / mib,
                row["dense_peak_bytes"] / mib,
                row["memory_ratio"],
            ]
        )
    columns = ["feature", "tokens", "ISA ms", "dense ms", "time x", "ISA MiB", "dense MiB", "mem x"]
    title = (
        f"ISA vs dense self-attention ({record['channels']} channels, {record['precision']}, "
        f"{record['attention']}, {record['device_name']})"
    )
    _render.table(title, columns, rows)
    _render.info(f"memory: {record['memory_method']}")
    if any(row["dense_ms"] is None for row in record["rows"]):
        _render.info("dense ms '-': its T x T matrices would not fit in memory; not run")
