"""`isaseg predict`: segment images, folders, glob patterns and videos."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._backend import check_exported_options, resolve_backend
from isaseg_cli.cli._options import (
    BackendOpt,
    CheckpointOpt,
    CropOpt,
    DeviceOpt,
    JsonOutOpt,
    ModelOpt,
    ModeOpt,
    MsFlipOpt,
    PrecisionOpt,
    ScalesOpt,
    StrideOpt,
    TrustOpt,
    default_model,
    parse_ratios,
    parse_scale,
    parse_size,
)
from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS
from isaseg_cli.errors import InputError

# With --tile the scores of a band, not of the image, are held: the default limit becomes OpenCV's.
TILED_MAX_PIXELS = 1 << 30

if TYPE_CHECKING:
    from isaseg_cli.engine.infer.predict_plan import PredictPlan
    from isaseg_cli.engine.infer.predict_result import PredictResult
    from isaseg_cli.engine.infer.segmenter import Segmenter


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
    model: ModelOpt = None,
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
    opacity: Annotated[
        float, typer.Option(metavar="F", help="Colour weight in overlays, in (0, 1].")
    ] = 0.5,
    probs: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Save class probabilities KxHxW: FILE.npy (float32) or .npz (float16, "
            "compressed) for one image, else a folder of .npz.",
        ),
    ] = None,
    confidence: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Save the top-1 probability per pixel (or --uncertainty): FILE.png (0..255) or "
            ".npy (float16) for one image, else a folder of .png.",
        ),
    ] = None,
    uncertainty: Annotated[
        Literal["top1", "margin", "entropy"],
        typer.Option(
            help="The --confidence map: top-1 probability, top-1 minus top-2, or entropy / log K."
        ),
    ] = "top1",
    min_confidence: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="P",
            help="Pixels whose top-1 probability is below P become 255 (ignore) in index and "
            "labelids masks, grey in colour and overlay.",
        ),
    ] = None,
    tile: Annotated[
        str | None,
        typer.Option(
            metavar="HxW",
            help="Tiled inference: slide's windows, in memory bounded by a band of rows "
            "(images of any size); --batch-size then counts windows.",
        ),
    ] = None,
    tile_stride: Annotated[
        str | None, typer.Option(metavar="HxW", help="Step between tiles (default: 2/3 of it).")
    ] = None,
    scale: Annotated[
        str | None,
        typer.Option(
            metavar="native|zoo|WxH",
            help="Test scale the image is fitted to (keep-ratio) before inference (default: "
            "the model's; native with --tile).",
        ),
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
    backend: BackendOpt = "auto",
    json_out: JsonOutOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace results that already exist.")
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Leave out inputs whose results exist, to continue a stopped run (off by "
            "default: an --out that holds results is refused, so none is lost by mistake).",
        ),
    ] = False,
    manifest: Annotated[
        bool,
        typer.Option(
            "--manifest",
            help="Keep OUT/manifest.jsonl: one JSON line per input (outputs, status, error, "
            "seconds, rank), continued by a rerun.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            help="Processes decoding and resizing images while the model runs, plus a writer "
            "thread (0: all in turn; default 4 on a GPU for over 32 images, else 0).",
        ),
    ] = None,
    max_pixels: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help=f"Refuse images whose header announces more pixels (never decoded); default "
            f"{DEFAULT_MAX_PIXELS:,}, or {TILED_MAX_PIXELS:,} (OpenCV's limit) with --tile.",
        ),
    ] = None,
) -> None:
    """Segment images, folders, glob patterns or videos; write masks, colours or overlays.

    Inputs, options and outputs are checked before the model is loaded or downloaded. One bad
    input is reported and the others go on (exit 1); Ctrl-C lists what was written. Under
    `torchrun --nproc-per-node N -m isaseg_cli predict ...` the inputs are shared out (input i to
    rank i % N), each process writes what it computed, and rank 0 prints the totals.
    """
    from isaseg_cli.data.mask_io import check_writable
    from isaseg_cli.engine.infer.predict_plan import (
        check_model_options,
        plan_predict,
        refuse_torch_only_options,
    )
    from isaseg_cli.engine.ranks import dist_info

    layout = dist_info()  # torchrun's variables; no torch needed to read them
    rank, world_size = layout.rank, layout.world_size

    options: dict[str, Any] = {
        "device": device,
        "precision": precision,
        "mode": mode,
        "crop": parse_size(crop, "--crop-size"),
        "stride": parse_size(stride, "--stride"),
        "ms_flip": ms_flip,
        "scales": parse_ratios(scales, ms_flip),
        "compile": compile_model,
        "on_warning": _render.warn,
    }
    extra = _tile_options(tile, tile_stride, scale, batch_size, uncertainty, min_confidence)
    backend = resolve_backend(backend, checkpoint)
    exported = backend != "torch"
    if exported:
        refuse_torch_only_options(extra, confidence)
    options.update({} if exported else extra)
    if tile is not None and probs is not None:
        raise InputError("--probs holds K x H x W, what --tile avoids: use --confidence")
    plan = plan_predict(
        inputs,
        out=out,
        fmt=fmt,
        overlay_out=overlay,
        opacity=opacity,
        probs_out=probs,
        overwrite=overwrite,
        skip_existing=skip_existing,
        manifest=manifest,
        rank=rank,
        world_size=world_size,
        confidence_out=confidence,
    )
    if json_out is not None:
        check_writable(json_out, "--json-out")
    name = model or (None if checkpoint else default_model())
    if exported:
        check_exported_options(backend, name, checkpoint, options)
    else:
        check_model_options(name, fmt, options)
    run = {
        "batch_size": 1 if tile else batch_size,  # with --tile, --batch-size counts windows
        "workers": workers,
        "max_pixels": max_pixels or (TILED_MAX_PIXELS if tile else DEFAULT_MAX_PIXELS),
    }
    with _joined(options, world_size) as device:
        result = _run(plan, name, checkpoint, trust_checkpoint, backend, {**options, **device}, run)
    if result is not None and rank == 0:
        _report(*result, json_out, out, probs, confidence)
    elif result is not None:
        raise typer.Exit(_exit_code(result[0]))


@contextlib.contextmanager
def _joined(options: dict[str, Any], world_size: int) -> Iterator[dict[str, Any]]:
    """Under torchrun, the process group for the run, and this process's device (its GPU)."""
    if world_size == 1:
        yield {}
        return
    from isaseg_cli.engine.device import resolve_device
    from isaseg_cli.engine.distributed import process_group

    with process_group(resolve_device(options["device"])) as device:
        yield {"device": device}


def _total(plan: PredictPlan, count: int) -> int:
    """``count`` summed over the processes (every process must call it)."""
    if plan.world_size == 1:
        return count
    from isaseg_cli.engine.distributed import gather_objects

    return sum(gather_objects(count))


def _run(
    plan: PredictPlan,
    name: str | None,
    checkpoint: Path | None,
    trust: bool,
    backend: str,
    options: dict[str, Any],
    run: dict[str, Any],
) -> tuple[PredictResult, Segmenter] | None:
    """Loads the model and runs the plan; None when no process has anything left to do. The
    count is gathered before any process writes, so all of them see the same existing files."""
    from isaseg_cli.engine.infer.manifest import finish_skipped
    from isaseg_cli.engine.infer.predict import run_plan

    if not _total(plan, len(plan.jobs)):
        finish_skipped(plan)
        total = _total(plan, plan.skipped)
        if plan.rank == 0:
            _render.info(f"skipped {total} input(s) whose results exist: nothing to do")
        return None
    segmenter = _load(name, checkpoint, trust, backend, options)
    if run["workers"] is None:  # starting workers costs seconds: worth it for many images
        many = sum(not job.source.is_video for job in plan.jobs) > 32
        cuda = str(segmenter.device).startswith("cuda")
        run = {**run, "workers": 4 if cuda and many else 0}
    with _render.progress_bars() as update:
        result = run_plan(segmenter, plan, **run, on_progress=_render.event_sink(update))
    return result, segmenter


def _tile_options(
    tile: str | None,
    tile_stride: str | None,
    scale: str | None,
    batch_size: int,
    uncertainty: str,
    min_confidence: float | None,
) -> dict[str, Any]:
    """The Segmenter keywords of tiles, test scale and confidence (see ``Segmenter``)."""
    options: dict[str, Any] = {"uncertainty": uncertainty, "min_confidence": min_confidence}
    if tile is not None or tile_stride is not None:
        options["tile"] = parse_size(tile, "--tile")
        options["tile_stride"] = parse_size(tile_stride, "--tile-stride")
        options["window_batch"] = batch_size
    if scale is not None:
        options["scale"] = scale if scale in ("native", "zoo") else parse_scale(scale)
    return options


def _load(
    name: str | None,
    checkpoint: Path | None,
    trust: bool,
    backend: str,
    options: dict[str, Any],
) -> Segmenter:
    """The segmenter; a download bar appears only if the weights are really downloaded."""
    with _render.progress_bars(transfer=True) as update:
        on_download = _render.download_sink(update)
        if backend != "torch":
            from isaseg_cli.export.cache import exported_segmenter

            return exported_segmenter(
                backend,
                name,
                checkpoint,
                trust=trust,
                on_download=on_download,
                on_stage=_render.stage_status,
                options=options,
            )
        from isaseg_cli.engine.infer.segmenter import Segmenter  # imports torch: not on that path

        if checkpoint is not None:
            return Segmenter.from_checkpoint(checkpoint, name, trust=trust, **options)
        assert name is not None
        return Segmenter.from_zoo(
            name, on_download=on_download, on_status=_render.status, **options
        )


def _report(
    result: PredictResult,
    segmenter: Segmenter,
    json_out: Path | None,
    out: Path | None,
    probs: Path | None,
    confidence: Path | None = None,
) -> None:
    """Failures, then where each kind of output went; the exit code says how it ended."""
    for _, reason in result.failures:
        _render.error(reason)
    for message in result.warnings:
        _render.warn(message)
    processes = f" over {result.ranks} processes" if result.ranks > 1 else ""
    _render.info(
        f"Segmented {result.images} image(s) in {result.seconds:.2f} s{processes} "
        f"({result.images_per_s:.2f} images/s; the model waited for input or output "
        f"{result.input_wait:.0%} of the time)"
    )
    if result.skipped:
        _render.info(f"skipped {result.skipped} input(s) whose results exist")
    _render.written("masks", result.masks, result.output_dir)
    if result.overlay_dir is not None:
        _render.written("overlays", result.overlays, result.overlay_dir)
    if probs is not None:
        _render.written(
            "probabilities", result.probs, probs if len(result.probs) > 1 else probs.parent
        )
    if confidence is not None:
        where = confidence if len(result.confidences) > 1 else confidence.parent
        _render.written("confidence", result.confidences, where)
    if result.stopped is not None:
        _render.error(result.stopped)
        raise typer.Exit(_exit_code(result))
    if json_out is not None:
        _render.write_json(
            json_out,
            {
                "model": segmenter.loaded.entry.name,
                "device": str(segmenter.device),
                **result.to_dict(),
            },
        )
        _render.info(f"JSON: {json_out}")
    if result.interrupted:
        done = len(result.masks) + len(result.failures)
        _render.error(
            f"interrupted after {done} of {result.inputs - result.skipped} input(s); to continue, "
            f"run the same command with --out {out or result.output_dir} --skip-existing"
        )
        raise typer.Exit(_exit_code(result))
    if result.failures:
        _render.error(f"{len(result.failures)} of {result.inputs} input(s) failed")
        raise typer.Exit(_exit_code(result))


def _exit_code(result: PredictResult) -> int:
    """2: a write failed; 130: interrupted; 1: some inputs failed; 0: all done."""
    if result.stopped is not None:
        return 2
    if result.interrupted:
        return 130
    return 1 if result.failures else 0
