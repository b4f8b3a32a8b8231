"""`isaseg predict`: segment images, folders, glob patterns and videos."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._options import (
    DEFAULT_MODEL,
    BackendOpt,
    CheckpointOpt,
    CropOpt,
    DeviceOpt,
    JsonOutOpt,
    ModeOpt,
    MsFlipOpt,
    PrecisionOpt,
    ScalesOpt,
    StrideOpt,
    TrustOpt,
    default_model,
    parse_ratios,
    parse_size,
)
from isaseg_cli.errors import InputError


def predict_cli(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT...", help="Images, folders (searched recursively), globs or videos."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Output file for one input, else a folder (default: runs/predictN).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help=f"Zoo model (default: $ISASEG_MODEL, else {DEFAULT_MODEL})."
        ),
    ] = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    fmt: Annotated[
        Literal["index", "color", "overlay", "labelids"],
        typer.Option("--format", help="Class-id PNG, colours, overlay or Cityscapes label ids."),
    ] = "index",
    overlay: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH", help="Also write overlays here (file for one input, or folder)."
        ),
    ] = None,
    opacity: Annotated[float, typer.Option(help="Colour weight in overlays, in (0, 1].")] = 0.5,
    probs: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Save one image's class probabilities (KxHxW .npy)."),
    ] = None,
    mode: ModeOpt = None,
    crop: CropOpt = None,
    stride: StrideOpt = None,
    ms_flip: MsFlipOpt = False,
    scales: ScalesOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    batch_size: Annotated[
        int, typer.Option(min=1, metavar="N", help="Images or video frames per forward pass.")
    ] = 1,
    compile_model: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="torch.compile the model (compiles per input shape; pays off on GPUs).",
        ),
    ] = False,
    backend: BackendOpt = "torch",
    json_out: JsonOutOpt = None,
) -> None:
    """Segment images, folders, glob patterns or videos; write masks, colours or overlays."""
    options: dict[str, Any] = {
        "device": device,
        "precision": precision,
        "mode": mode,
        "crop": parse_size(crop, "--crop"),
        "stride": parse_size(stride, "--stride"),
        "ms_flip": ms_flip,
        "scales": parse_ratios(scales),
        "compile": compile_model,
        "on_warning": _render.warn,
    }
    from isaseg_cli.engine.predict import expand_inputs, predict
    from isaseg_cli.engine.segmenter import Segmenter

    sources = expand_inputs(inputs)  # before loading the model: a typo fails fast

    name = model or (None if checkpoint else default_model())
    with contextlib.ExitStack() as stack:
        bars: list[Any] = []

        def on_download(done: int, total: int | None) -> None:
            if not bars:  # a bar only when the weights are really downloaded
                bars.append(stack.enter_context(_render.progress_bars(transfer=True)))
            bars[0]("download weights", done, total)

        if backend != "torch" or _exported(checkpoint):
            segmenter = _exported_segmenter(
                backend, name, checkpoint, trust_checkpoint, on_download, options
            )
        elif checkpoint is not None:
            segmenter = Segmenter.from_checkpoint(
                checkpoint, name, trust=trust_checkpoint, **options
            )
        else:
            assert name is not None
            segmenter = Segmenter.from_zoo(name, on_download=on_download, **options)
    with _render.progress_bars() as update:
        result = predict(
            segmenter,
            sources,
            out=out,
            fmt=fmt,
            overlay_out=overlay,
            opacity=opacity,
            probs_out=probs,
            batch_size=batch_size,
            on_progress=_render.event_sink(update),
        )
    for _, reason in result.failures:
        _render.error(reason)
    for message in result.warnings:
        _render.warn(message)
    where = result.outputs[0] if len(result.outputs) == 1 else result.output_dir
    _render.info(
        f"Segmented {result.images} image(s) in {result.seconds:.2f} s "
        f"({result.images_per_s:.2f} images/s); results in {where}"
    )
    if json_out is not None:
        _render.write_json(
            json_out,
            {
                "model": segmenter.loaded.entry.name,
                "device": str(segmenter.device),
                **result.to_dict(),
            },
        )
    if result.failures:
        _render.error(f"{len(result.failures)} of {result.inputs} input(s) failed")
        raise typer.Exit(1)


def _exported(checkpoint: Path | None) -> bool:
    return checkpoint is not None and checkpoint.suffix.lower() == ".onnx"


def _exported_segmenter(
    backend: str,
    name: str | None,
    checkpoint: Path | None,
    trust: bool,
    on_download: Any,
    options: dict[str, Any],
) -> Any:
    """A Segmenter on an exported file: the given .onnx, or the cached export of the weights."""
    from isaseg_cli.engine.backends import check_backend_options
    from isaseg_cli.engine.segmenter import Segmenter
    from isaseg_cli.export.cache import load_backend
    from isaseg_cli.zoo.catalog import resolve_entry

    backend = "onnxruntime" if backend == "torch" else backend  # a given .onnx file
    check_backend_options(backend, options["device"], options["precision"], options["compile"])
    if _exported(checkpoint) and name is not None:
        raise InputError("an exported .onnx file carries its model: drop the model name")
    entry = resolve_entry(name) if name is not None else None
    loaded = load_backend(backend, entry, checkpoint, trust=trust, on_download=on_download)
    return Segmenter(loaded, **{**options, "device": "cpu"})
