"""`isaseg eval`: score a model on a dataset split, next to the figures mmsegmentation published."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._options import (
    DEFAULT_MODEL,
    CheckpointOpt,
    CropOpt,
    DataRootOpt,
    DeviceOpt,
    JsonOutOpt,
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
from isaseg_cli.errors import CheckpointError, InputError

if TYPE_CHECKING:
    import torch

    from isaseg_cli.engine.evaluate import EvalResult
    from isaseg_cli.zoo.spec import ZooEntry


def eval_cli(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL",
            help=f"Zoo model (default: $ISASEG_MODEL, else {DEFAULT_MODEL}; with only "
            "--checkpoint, the entry stored in the file).",
            show_default=False,
        ),
    ] = None,
    checkpoint: CheckpointOpt = None,
    trust_checkpoint: TrustOpt = False,
    data_root: DataRootOpt = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "val",
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
    settings: SetOpt = None,
) -> None:
    """Evaluate a model on a dataset split: per-class IoU and accuracy, aAcc, mIoU and mAcc.

    Files are checked before the model loads. torchrun processes share the images; Ctrl-C
    prints the partial result.
    """
    from isaseg_cli.data.datasets import default_data_root, list_samples
    from isaseg_cli.engine.device import check_precision, resolve_device
    from isaseg_cli.engine.evaluate import check_save_format, evaluate

    ratios = parse_ratios(scales)
    if ratios is not None and not ms_flip:
        raise InputError("--scales sets the --ms-flip ratios; add --ms-flip")
    entry = _resolve(model, checkpoint, trust_checkpoint, settings or [], mode, crop, stride)
    root = data_root or default_data_root(entry.data.dataset)
    samples = list_samples(entry.data, root, split)
    whole_split = limit is None or limit >= len(samples)
    samples = samples[:limit]
    check_save_format(save_format, entry)
    target = resolve_device(device)
    check_precision(precision, target)
    with _process_group(target) as target:
        loaded = _load(entry, checkpoint, trust_checkpoint, target)
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
                on_progress=_render.event_sink(update),
            )
    comparable = split == "val" and whole_split and not result.interrupted
    published = _published(entry, ms_flip, comparable)
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
    payload = _payload(entry, result, published, settings_used)
    if _render.is_main_process():
        _show(payload, ms_flip)
        if json_out is not None:
            _render.write_json(json_out, payload)
    if result.interrupted:
        raise typer.Exit(130)


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
    from isaseg_cli.engine.segmenter import resolve_test_spec
    from isaseg_cli.zoo.catalog import resolve_entry
    from isaseg_cli.zoo.spec import override

    name = model or (None if checkpoint else default_model())
    entry = resolve_entry(name) if name is not None else _entry_in(checkpoint, trust)
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes KEY=VALUE, e.g. test.mode=slide, not {item!r}")
        entry = override(entry, key.strip(), value)
    test = resolve_test_spec(
        entry, mode=mode, crop=parse_size(crop, "--crop"), stride=parse_size(stride, "--stride")
    )
    return dataclasses.replace(entry, test=test)


def _entry_in(checkpoint: Path | None, trust: bool) -> ZooEntry:
    from isaseg_cli.engine.checkpoint import entry_from_meta, read_checkpoint

    assert checkpoint is not None
    meta = read_checkpoint(checkpoint, trust=trust).get("meta")
    entry = entry_from_meta(meta, str(checkpoint)) if isinstance(meta, dict) else None
    if entry is None:
        raise CheckpointError(
            f"{checkpoint} does not say which architecture it is: name the zoo MODEL it belongs to"
        )
    return entry


def _load(entry: ZooEntry, checkpoint: Path | None, trust: bool, device: torch.device) -> Any:
    """The model on ``device``; a download bar appears only if the weights are fetched."""
    from isaseg_cli.engine.loading import load_model

    with contextlib.ExitStack() as stack:
        bars: list[Any] = []

        def on_download(done: int, total: int | None) -> None:
            if not bars:
                bars.append(stack.enter_context(_render.progress_bars(transfer=True)))
            bars[0]("download weights", done, total)

        return load_model(entry, checkpoint, device=device, trust=trust, on_download=on_download)


@contextlib.contextmanager
def _process_group(device: torch.device) -> Iterator[torch.device]:
    """Under torchrun: joins the process group (one GPU per process) for the run's length."""
    import torch

    from isaseg_cli.engine.distributed import destroy_process_group, dist_info, init_process_group

    info = dist_info()
    if info.distributed and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    created = init_process_group(info, device)
    try:
        yield device
    finally:
        if created:
            destroy_process_group()


def _published(entry: ZooEntry, ms_flip: bool, comparable: bool) -> float | None:
    if not comparable or entry.published is None:
        return None
    return entry.published.miou_ms_flip if ms_flip else entry.published.miou


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
    seconds = payload["seconds"]
    rate = payload["images"] / seconds if seconds > 0 else 0.0
    _render.info(f"{_images(payload['images'])} in {seconds:.1f} s ({rate:.2f} images/s)")


def _images(count: int) -> str:
    return f"{count} image" + ("" if count == 1 else "s")
