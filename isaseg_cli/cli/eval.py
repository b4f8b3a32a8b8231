"""`isaseg eval`: score a model on a dataset split, next to the figures mmsegmentation published."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._backend import resolve_backend
from isaseg_cli.cli._options import (
    BackendOpt,
    CheckpointOpt,
    CropOpt,
    DataRootOpt,
    DeviceOpt,
    JsonOutOpt,
    MaxPixelsOpt,
    ModelArg,
    ModeOpt,
    MsFlipOpt,
    PrecisionOpt,
    ScalesOpt,
    SetOpt,
    StrideOpt,
    TrustOpt,
    default_model,
    parse_ratios,
    parse_size,
)
from isaseg_cli.data.image_header import DEFAULT_MAX_PIXELS
from isaseg_cli.errors import CheckpointError, InputError
from isaseg_cli.export.files import is_exported_file

if TYPE_CHECKING:
    import torch

    from isaseg_cli.engine.evaluate import EvalResult
    from isaseg_cli.report.eval_report import ReportCollector
    from isaseg_cli.zoo.spec import ZooEntry


def eval_cli(
    model: ModelArg = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    data_root: DataRootOpt = None,
    split: Annotated[str, typer.Option(metavar="NAME", help="Split to evaluate.")] = "val",
    ms_flip: MsFlipOpt = False,
    scales: ScalesOpt = None,
    mode: ModeOpt = None,
    crop: CropOpt = None,
    stride: StrideOpt = None,
    limit: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Evaluate only the first N images.")
    ] = None,
    json_out: JsonOutOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    workers: Annotated[
        int, typer.Option(min=0, metavar="N", help="Processes decoding images (0: none).")
    ] = 2,
    save_dir: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Also write every prediction here.")
    ] = None,
    save_format: Annotated[
        Literal["index", "labelids"],
        typer.Option(help="Class-index PNG with palette, or Cityscapes labelIds for its scripts."),
    ] = "index",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace predictions already in --save-dir.")
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Also write an HTML report there: plots, per-image metrics, worst images "
            "(needs isaseg[report]).",
        ),
    ] = None,
    settings: SetOpt = None,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    backend: BackendOpt = "auto",
) -> None:
    """Evaluate a model on a dataset split: per-class IoU and accuracy, aAcc, mIoU and mAcc.

    Files, options and output paths are checked before the model loads. An image that cannot
    be read or segmented stops the run (exit 2): the metrics would be wrong without it.
    torchrun processes share the images; Ctrl-C prints the partial result.
    """
    from isaseg_cli.data.base import duplicate_samples
    from isaseg_cli.data.datasets import default_data_root, list_samples
    from isaseg_cli.data.mask_io import check_writable
    from isaseg_cli.engine.device import check_precision, resolve_device
    from isaseg_cli.engine.distributed import process_group
    from isaseg_cli.engine.evaluate import check_save_format, evaluate, prediction_paths
    from isaseg_cli.engine.published import compare_with_published
    from isaseg_cli.report.dataset_check import check_before_run

    ratios = parse_ratios(scales, ms_flip)
    backend = resolve_backend(backend, checkpoint)
    entry = _resolve(model, checkpoint, trust_checkpoint, settings or [], mode, crop, stride)
    root = data_root or default_data_root(entry.data.dataset)
    check_before_run(entry.data, root, split, max_pixels)
    samples = list_samples(entry.data, root, split)
    _warn_duplicates(duplicate_samples(samples))
    split_images = len(samples)
    samples = samples[:limit]
    check_save_format(save_format, entry)
    if save_dir is not None:
        check_writable(save_dir, "--save-dir", folder=True)
        if not overwrite:
            _refuse_earlier_predictions(prediction_paths(samples, save_dir, save_format))
    if json_out is not None:
        check_writable(json_out, "--json-out")
    on_cpu = backend != "torch" and device == "auto"  # the backends run there
    target = resolve_device("cpu" if on_cpu else device)
    check_precision(precision, target)
    collector = _start_report(report, entry) if report is not None else None
    with process_group(target) as target:
        loaded = _load(entry, checkpoint, trust_checkpoint, target, backend, precision)
        with _render.progress_bars() as update:
            result = evaluate(
                loaded.model,
                entry,
                samples,
                device=target,
                ms_flip=ms_flip,
                ratios=ratios,
                precision=precision,
                workers=workers,
                classes=loaded.classes,
                save_dir=save_dir,
                save_format=save_format,
                palette=loaded.palette,
                max_pixels=max_pixels,
                on_progress=_render.event_sink(update),
                on_image=None if collector is None else collector.add,
            )
    comparison = compare_with_published(
        entry,
        loaded.checkpoint,
        ms_flip=ms_flip,
        ratios=ratios,
        split=split,
        images=len(samples),
        split_images=split_images,
        interrupted=result.interrupted,
    )
    settings_used = {
        "split": split,
        "data_root": str(root),
        "ms_flip": ms_flip,
        "ratios": list(ratios or entry.test.ms_ratios) if ms_flip else None,
        "test": dataclasses.asdict(entry.test),
        "limit": limit,
        "device": str(target),
        "precision": precision,
        "checkpoint": str(loaded.checkpoint),
    }
    payload = _payload(entry, result, comparison.published, settings_used)
    payload["published_note"] = comparison.reason
    if _render.is_main_process():
        _show(payload, ms_flip)
        if save_dir is not None:
            _render.info(f"predictions: {result.saved} file(s) in {save_dir}")
        if json_out is not None:
            _render.write_json(json_out, payload)
            _render.info(f"JSON: {json_out}")
        if report is not None and collector is not None:
            _write_report(report, collector, payload, loaded)
    if result.interrupted:
        _render.error(
            f"interrupted after {result.images} of {len(samples)} image(s): the metrics above "
            "cover those only; run the command again to evaluate the whole split"
        )
        raise typer.Exit(130)


def _refuse_earlier_predictions(paths: list[Path]) -> None:
    """An earlier run's predictions are kept unless --overwrite, as predict keeps its results."""
    existing = [path for path in paths if path.exists() or path.is_symlink()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(
            f"{existing[0]} already exists{more}: add --overwrite to replace the predictions in "
            "--save-dir, or choose another folder"
        )


def _warn_duplicates(duplicates: list[Any]) -> None:
    """Duplicates count once per listing, as in mmsegmentation, so the figures stay comparable."""
    if duplicates:
        _render.warn(
            f"{len(duplicates)} image(s) are listed more than once in the split, e.g. "
            f"{duplicates[0].image_path}; each listing is counted, as mmsegmentation does "
            "(remove the repeated lines to count each image once)"
        )


def _resolve(
    model: str | None,
    checkpoint: Path | None,
    trust: bool,
    settings: list[str],
    mode: str | None,
    crop: str | None,
    stride: str | None,
) -> ZooEntry:
    """The zoo entry (or the one stored in the checkpoint) with --set and test overrides."""
    from isaseg_cli.engine.infer.protocol import resolve_test_spec
    from isaseg_cli.zoo.catalog import resolve_entry
    from isaseg_cli.zoo.spec import override_all

    name = model or (None if checkpoint else default_model())
    entry = resolve_entry(name) if name is not None else _entry_in(checkpoint, trust)
    entry = override_all(entry, settings, example="test.mode=slide")
    test = resolve_test_spec(
        entry,
        mode=mode,
        crop=parse_size(crop, "--crop-size"),
        stride=parse_size(stride, "--stride"),
    )
    return dataclasses.replace(entry, test=test)


def _entry_in(checkpoint: Path | None, trust: bool) -> ZooEntry:
    from isaseg_cli.engine.checkpoint import entry_from_meta, read_checkpoint

    assert checkpoint is not None
    if is_exported_file(checkpoint):  # an exported file: the entry is in its metadata
        from isaseg_cli.engine.infer.backends import describe_exported

        return describe_exported(checkpoint).entry
    meta = read_checkpoint(checkpoint, trust=trust).get("meta")
    entry = entry_from_meta(meta, str(checkpoint)) if isinstance(meta, dict) else None
    if entry is None:
        raise CheckpointError(
            f"{checkpoint} does not say which architecture it is: name the zoo MODEL it belongs to"
        )
    return entry


def _load(
    entry: ZooEntry,
    checkpoint: Path | None,
    trust: bool,
    device: torch.device,
    backend: str = "torch",
    precision: str = "fp32",
) -> Any:
    """The model on ``device``; a download bar appears only if the weights are fetched. A
    ``backend`` other than torch (see ``resolve_backend``) gives the exported network on the
    CPU."""
    from isaseg_cli.engine.loading import load_model

    if backend != "torch":
        from isaseg_cli.engine.infer.backends import check_backend_options
        from isaseg_cli.export.cache import load_backend

        check_backend_options(backend, device.type, precision, False)
        with _render.progress_bars(transfer=True) as update:
            return load_backend(
                backend,
                entry,
                checkpoint,
                trust=trust,
                on_download=_render.download_sink(update),
                on_stage=_render.stage_status,
            )

    with _render.progress_bars(transfer=True) as update:
        return load_model(
            entry,
            checkpoint,
            device=device,
            trust=trust,
            on_download=_render.download_sink(update),
            on_status=_render.status,
        )


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 2)


def _payload(
    entry: ZooEntry, result: EvalResult, published: float | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """The JSON record: exactly the (rounded) numbers the tables show, plus how they were made."""
    metrics = result.metrics.to_dict()
    miou = _round(result.metrics.miou)
    difference = None if published is None or miou is None else round(miou - published, 2)
    return {
        "model": entry.name,
        "dataset": entry.data.dataset,
        "images": result.images,
        "seconds": round(result.seconds, 2),
        "partial": result.interrupted,
        "aAcc": _round(result.metrics.aacc),
        "mIoU": miou,
        "mAcc": _round(result.metrics.macc),
        "published_mIoU": published,
        "difference": difference,
        "per_class": [
            {"class": row["class"], "IoU": _round(row["IoU"]), "Acc": _round(row["Acc"])}
            for row in metrics["per_class"]
        ],
        "settings": settings,
    }


def _show(payload: dict[str, Any], ms_flip: bool) -> None:
    partial = " (partial: interrupted)" if payload["partial"] else ""
    where = f"{payload['dataset']} {payload['settings']['split']}"
    _render.info(f"{payload['model']} on {where}: {_images(payload['images'])}{partial}")
    _render.table(
        "Per class",
        ["class", "IoU", "Acc"],
        [[row["class"], row["IoU"], row["Acc"]] for row in payload["per_class"]],
    )
    published, difference = payload["published_mIoU"], payload["difference"]
    _render.table(
        f"Summary{partial}",
        ["aAcc", "mIoU", "mAcc", "published mIoU" + (" (ms+flip)" if ms_flip else ""), "diff"],
        [
            [
                payload["aAcc"],
                payload["mIoU"],
                payload["mAcc"],
                "n/a" if published is None else published,
                "n/a" if difference is None else f"{difference:+.2f}",
            ]
        ],
    )
    if payload["published_note"]:
        _render.info(payload["published_note"])
    seconds = payload["seconds"]
    rate = payload["images"] / seconds if seconds > 0 else 0.0
    _render.info(f"{_images(payload['images'])} in {seconds:.1f} s ({rate:.2f} images/s)")


def _images(count: int) -> str:
    return f"{count} image" + ("" if count == 1 else "s")


def _start_report(report: Path, entry: ZooEntry) -> ReportCollector:
    """Checks the report folder and the extra before any work, and gathers per-image metrics."""
    from isaseg_cli.engine.ranks import dist_info
    from isaseg_cli.report.eval_report import ReportCollector, check_report_dir

    if dist_info().world_size > 1:
        raise InputError("--report runs in one process; evaluate without torchrun for a report")
    check_report_dir(report)
    return ReportCollector(entry.model.num_classes)


def _write_report(
    report: Path, collector: ReportCollector, payload: dict[str, Any], loaded: Any
) -> None:
    from isaseg_cli.report.eval_report import write_report

    index = write_report(report, collector, payload, classes=loaded.classes, palette=loaded.palette)
    _render.info(f"report: {index}")
