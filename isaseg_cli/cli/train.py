"""`isaseg train`: the published recipe of a zoo entry, on one GPU or many (torchrun), resumable."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._options import (
    DEFAULT_MODEL,
    CudaGraphsOpt,
    DataRootOpt,
    DeviceOpt,
    JsonOutOpt,
    PrecisionOpt,
    RecomputeOpt,
    SetOpt,
    TrustOpt,
    complete_model_name,
    default_model,
    parse_size,
)
from isaseg_cli.errors import CheckpointError, InputError

if TYPE_CHECKING:
    from isaseg_cli.engine.loop import TrainResult
    from isaseg_cli.zoo.spec import WeightsSpec, ZooEntry


def train_cli(
    model: Annotated[
        str | None,
        typer.Argument(
            metavar="MODEL",
            autocompletion=complete_model_name,
            help="Zoo entry whose recipe gives the defaults (default: $ISASEG_MODEL, else "
            f"{DEFAULT_MODEL}; with --resume, the run's own).",
            show_default=False,
        ),
    ] = None,
    data_root: DataRootOpt = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Checkpoints and logs (default: work_dirs/MODEL)."),
    ] = None,
    max_iters: Annotated[int | None, typer.Option(min=1, metavar="N", help="Iterations.")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", help="Total batch over all processes (lr unchanged)."),
    ] = None,
    crop_size: Annotated[str | None, typer.Option(metavar="HxW", help="Training crop.")] = None,
    lr: Annotated[float | None, typer.Option(min=0, metavar="F", help="Initial lr.")] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            metavar="none|NAME|FILE|URL",
            help="ImageNet backbone (default: the entry's, downloaded); none: random init.",
        ),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="NAME|FILE",
            help="Fine-tune from a zoo model or checkpoint (new classifiers if classes differ).",
        ),
    ] = None,
    trust_checkpoint: TrustOpt = False,
    dataset: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="cityscapes, ade20k, voc12aug or custom."),
    ] = None,
    classes: Annotated[
        str | None, typer.Option(metavar="A,B,...", help="Class names (sets the class count).")
    ] = None,
    num_classes: Annotated[
        int | None, typer.Option(min=2, metavar="N", help="Class count (names class0...).")
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Seed (default 0, or the resumed run's).")
    ] = None,
    cudnn_benchmark: Annotated[
        bool, typer.Option("--cudnn-benchmark", help="Let cuDNN pick the fastest kernels.")
    ] = False,
    cuda_graphs: CudaGraphsOpt = None,
    recompute: RecomputeOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from WORK_DIR/latest.pth.")
    ] = False,
    val_interval: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Validate every N iterations (0: off).")
    ] = None,
    checkpoint_interval: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Save every N iterations.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Loader processes per process.")
    ] = None,
    settings: SetOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Train a zoo model with its published recipe, or adapt it to your data.

    Under `torchrun --nproc-per-node N -m isaseg_cli train ...` the batch is split over the
    processes (DDP, SyncBatchNorm on CUDA). Ctrl-C loses at most the work since the last
    checkpoint; --resume continues bit for bit from there, with the run's own settings unless
    options change them.
    """
    from isaseg_cli.data.datasets import default_data_root
    from isaseg_cli.engine.loop import fit
    from isaseg_cli.report.dataset_check import check_before_run
    from isaseg_cli.zoo.catalog import resolve_entry

    zoo_entry = resolve_entry(model or default_model())
    work = work_dir or Path("work_dirs") / zoo_entry.name
    base = _resumed_entry(work, model) if resume else zoo_entry
    entry = _entry(base, dataset, classes, num_classes, crop_size, lr, settings or [])
    root = data_root or default_data_root(entry.data.dataset)
    check_before_run(entry.data, root, "train")
    start = _starting_weights(entry, pretrained, init_from, resume)
    with _render.progress_bars() as update:

        def on_download(done: int, total: int | None) -> None:
            update("download (MB)", done >> 20, None if total is None else total >> 20)

        try:
            result = fit(
                entry,
                data_root=root,
                work_dir=work,
                device=device,
                precision=precision,
                seed=seed,
                resume=resume,
                trust=trust_checkpoint,
                max_iters=max_iters,
                batch_size=batch_size,
                workers=workers,
                val_interval=val_interval,
                checkpoint_interval=checkpoint_interval,
                cudnn_benchmark=cudnn_benchmark,
                cuda_graphs=cuda_graphs,
                recompute=recompute,
                on_progress=_render.event_sink(update),
                on_message=_render.info,
                on_download=on_download,
                **start,
            )
        except KeyboardInterrupt:
            _render.warn(f"stopped; add --resume to continue from the last checkpoint in {work}")
            raise
    if _render.is_main_process():
        _show(result)
        if json_out is not None:
            _render.write_json(json_out, result.to_dict())


def _resumed_entry(work: Path, model: str | None) -> ZooEntry:
    """The entry stored in the run's ``latest.pth``, so a resumed run keeps its recipe."""
    from isaseg_cli.engine.checkpoint import entry_from_meta, read_checkpoint
    from isaseg_cli.zoo.catalog import resolve_entry

    path = work / "latest.pth"
    if not path.is_file():
        raise InputError(f"nothing to resume: {path} does not exist (start without --resume)")
    meta = read_checkpoint(path).get("meta")
    entry = entry_from_meta(meta, str(path)) if isinstance(meta, dict) else None
    if entry is None:
        raise CheckpointError(f"{path} was not written by isaseg train, so it cannot be resumed")
    if model is not None and resolve_entry(model).name != entry.name:
        raise InputError(f"{work} holds a run of {entry.name}, not of {model}")
    return entry


def _entry(
    base: ZooEntry,
    dataset: str | None,
    classes: str | None,
    num_classes: int | None,
    crop_size: str | None,
    lr: float | None,
    settings: list[str],
) -> ZooEntry:
    """``base`` with the data, class, crop and lr options, then the --set overrides."""
    from isaseg_cli.zoo.spec import override

    entry = _with_classes(base, dataset, classes, num_classes)
    size = parse_size(crop_size, "--crop-size")
    if size is not None:
        entry = dataclasses.replace(entry, data=dataclasses.replace(entry.data, crop_size=size))
    if lr is not None:
        entry = override(entry, "train.lr", str(lr))
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set takes KEY=VALUE, e.g. train.lr=0.02, not {item!r}")
        entry = override(entry, key.strip(), value)
    if (entry.model, entry.data, entry.test) != (base.model, base.data, base.test):
        entry = dataclasses.replace(entry, published=None)  # its published figures do not apply
    return entry


def _with_classes(
    entry: ZooEntry, dataset: str | None, classes: str | None, num_classes: int | None
) -> ZooEntry:
    """Another dataset resets the file suffixes to its layout's; classes set the class count."""
    from isaseg_cli.zoo.classes import DATASETS

    data, names = entry.data, None
    if dataset is not None and dataset != data.dataset:
        if dataset not in (*DATASETS, "custom"):
            raise InputError(f"unknown dataset {dataset!r}: use {', '.join(DATASETS)} or custom")
        data = dataclasses.replace(
            data,
            dataset=dataset,
            img_suffix="",
            seg_map_suffix="",
            classes=(),
            reduce_zero_label=dataset == "ade20k",
        )
        names = DATASETS[dataset].classes if dataset in DATASETS else None
    if classes is not None:
        names = tuple(name.strip() for name in classes.split(",") if name.strip())
        if num_classes is not None and num_classes != len(names):
            raise InputError(f"--num-classes {num_classes} but --classes names {len(names)}")
    elif num_classes is not None:
        names = tuple(f"class{i}" for i in range(num_classes))
    if names is None and data.dataset == "custom" and not data.classes:
        raise InputError("a custom dataset needs --classes a,b,c or --num-classes N")
    if names is not None:
        known = DATASETS.get(data.dataset)
        data = dataclasses.replace(data, classes=() if known and known.classes == names else names)
        model = dataclasses.replace(entry.model, num_classes=len(names))
        entry = dataclasses.replace(entry, model=model)
    return dataclasses.replace(entry, data=data)


def _starting_weights(
    entry: ZooEntry, pretrained: str | None, init_from: str | None, resume: bool
) -> dict[str, Path | WeightsSpec | None]:
    """``pretrained``/``init_from`` for fit: none when resuming, the entry's backbone by default."""
    if init_from is not None and pretrained is not None:
        raise InputError("--from and --pretrained exclude each other (--from sets every weight)")
    if resume:
        return {}
    if init_from is not None:
        return {"init_from": _source(init_from, "--from", checkpoint=True)}
    if pretrained is None:
        pretrained = entry.train.pretrained or "none"
    return {"pretrained": None if pretrained == "none" else _source(pretrained, "--pretrained")}


def _source(text: str, flag: str, *, checkpoint: bool = False) -> Path | WeightsSpec:
    """A local file, a URL, or a name: a zoo model (``checkpoint``) or a pretrained backbone."""
    from isaseg_cli.hub.cache import url_filename
    from isaseg_cli.hub.fetch import expected_sha256_prefix
    from isaseg_cli.zoo.catalog import load_zoo
    from isaseg_cli.zoo.spec import WeightsSpec

    if "://" in text:
        return WeightsSpec(url=text, sha256=expected_sha256_prefix(url_filename(text)) or "")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if os.sep in text or path.suffix == ".pth":
        raise InputError(f"{flag}: file {text} not found")
    zoo = load_zoo()
    if not checkpoint:
        return zoo.resolve_pretrained(text)
    weights = zoo.resolve(text).weights
    if weights is None:
        raise InputError(f"{flag}: {text} has no published checkpoint")
    return weights


def _show(result: TrainResult) -> None:
    loss = result.losses.get("loss")
    figures = f"; loss {loss:.4f}" if loss is not None else ""
    _render.info(
        f"Trained {result.entry.name}: iterations {result.start_iter}..{result.iterations} in "
        f"{result.seconds:.1f} s on {result.device} ({result.world_size} process(es), batch "
        f"{result.batch_size}){figures}"
    )
    if result.checkpoint is not None:
        _render.info(f"Checkpoint: {result.checkpoint} (and latest.pth)")
    if result.best_miou is not None:
        _render.info(
            f"Best mIoU {result.best_miou:.2f} at iteration {result.best_iter}: {result.best}"
        )
    _render.info(f"Log: {result.work_dir / 'log.jsonl'}")
    if result.ranks_identical is False:
        _render.warn("the processes ended with different weights; the checkpoint is rank 0's")
