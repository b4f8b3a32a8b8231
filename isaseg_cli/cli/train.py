"""`isaseg train`: the published recipe of a zoo entry, on one GPU or many (torchrun), resumable."""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from isaseg_cli.cli import _render
from isaseg_cli.cli._options import (
    DEFAULT_MODEL,
    CudaGraphsOpt,
    DataRootOpt,
    JsonOutOpt,
    RecomputeOpt,
    SetOpt,
    TrustOpt,
    complete_model_name,
    default_model,
    parse_size,
)
from isaseg_cli.errors import InputError

if TYPE_CHECKING:
    from isaseg_cli.engine.train.fit import TrainResult
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
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="DEVICE",
            help="auto, cpu, cuda, cuda:N or mps (under torchrun cuda means each rank's GPU).",
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        Literal["fp32", "bf16", "fp16"] | None,
        typer.Option(help="fp32 (default) as published; bf16/fp16 autocast (fp16: GPU only)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Seed (default 0, or the resumed run's).")
    ] = None,
    cudnn_benchmark: Annotated[
        bool | None,
        typer.Option(
            "--cudnn-benchmark/--no-cudnn-benchmark",
            help="Let cuDNN pick the fastest kernels (default: off).",
            show_default=False,
        ),
    ] = None,
    cuda_graphs: CudaGraphsOpt = None,
    recompute: RecomputeOpt = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue WORK_DIR's run (latest.pth) with all its settings; options given "
            "override them with a note, except those of the recipe and weights (--dataset, "
            "--classes, --num-classes, --crop-size, --lr, --set, --pretrained, --from): refused.",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Delete an earlier run's files in the work dir, then start anew."
        ),
    ] = False,
    val_interval: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Validate every N iterations (0: off).")
    ] = None,
    checkpoint_interval: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Save every N iterations.")
    ] = None,
    keep_checkpoints: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            help="Keep the newest N iter_K.pth (default 3; 0: all); best.pth and latest.pth "
            "always stay.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, metavar="N", help="Loader processes per process.")
    ] = None,
    settings: SetOpt = None,
    json_out: JsonOutOpt = None,
) -> None:
    """Train a zoo model with its published recipe, or adapt it to your data.

    Under `torchrun --nproc-per-node N -m isaseg_cli train ...` the batch is split over the
    processes (DDP, SyncBatchNorm on CUDA). A new run refuses a work dir that holds an earlier
    one (--resume or --overwrite). Ctrl-C or SIGTERM loses at most the work since the last
    checkpoint (exit 130, or 143 after SIGTERM); --resume continues bit for bit from there.
    """
    from isaseg_cli.data.datasets import default_data_root
    from isaseg_cli.engine.train.fit import fit
    from isaseg_cli.engine.train.state import read_resume_point
    from isaseg_cli.report.dataset_check import check_before_run
    from isaseg_cli.zoo.catalog import resolve_entry

    _check_json_out(json_out)
    if resume:
        recipe = {"--dataset": dataset, "--classes": classes, "--num-classes": num_classes}
        recipe |= {"--crop-size": crop_size, "--lr": lr, "--set": settings}
        recipe |= {"--pretrained": pretrained, "--from": init_from, "--overwrite": overwrite}
        _refuse_with_resume(recipe)
        work = work_dir or Path("work_dirs") / resolve_entry(model or default_model()).name
        point = read_resume_point(work)
        if model is not None and resolve_entry(model).name != point.entry.name:
            raise InputError(f"{work} holds a run of {point.entry.name}, not of {model}")
        entry, start, resume_from = point.entry, {}, point
    else:
        zoo_entry = resolve_entry(model or default_model())
        work = work_dir or Path("work_dirs") / zoo_entry.name
        entry = _entry(zoo_entry, dataset, classes, num_classes, crop_size, lr, settings or [])
        start, resume_from = _starting_weights(entry, pretrained, init_from), None
    saved_root = resume_from.settings.get("data_root") if resume_from is not None else None
    root = data_root or (Path(saved_root) if saved_root else default_data_root(entry.data.dataset))
    check_before_run(entry.data, root, "train")
    with _sigterm_as_interrupt() as terminated, _render.progress_bars() as update:

        def on_download(done: int, total: int | None) -> None:
            update("download (MB)", done >> 20, None if total is None else total >> 20)

        try:
            result = fit(
                entry,
                data_root=data_root,
                work_dir=work,
                device=device,
                precision=precision,
                seed=seed,
                resume=resume_from or False,
                overwrite=overwrite,
                trust=trust_checkpoint,
                max_iters=max_iters,
                batch_size=batch_size,
                workers=workers,
                val_interval=val_interval,
                checkpoint_interval=checkpoint_interval,
                keep_checkpoints=keep_checkpoints,
                cudnn_benchmark=cudnn_benchmark,
                cuda_graphs=cuda_graphs,
                recompute=recompute,
                on_progress=_render.event_sink(update),
                on_message=_render.info,
                on_download=on_download,
                **start,
            )
        except KeyboardInterrupt:
            if _render.is_main_process():
                _render.warn(_stopped(work))
            if terminated():
                _render.error("terminated (SIGTERM)")
                raise typer.Exit(143) from None
            raise
    if _render.is_main_process():
        _show(result)
        if json_out is not None:
            _render.write_json(json_out, result.to_dict())


@contextmanager
def _sigterm_as_interrupt() -> Iterator[Callable[[], bool]]:
    """Turns SIGTERM (what batch schedulers send before they kill a job) into a
    KeyboardInterrupt, so it stops like Ctrl-C: no partial checkpoint, a hint to resume.

    Yields a function that says whether SIGTERM came.
    """
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        del frame
        received.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedding program): its handler stays
        yield lambda: False
        return
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(work: Path) -> str:
    """Where the stopped run left its files, and how to go on."""
    from isaseg_cli.engine.train.workdir import run_files

    latest, log = work / "latest.pth", work / "log.jsonl"
    if not latest.is_file():
        if not run_files(work):
            return "stopped before training began; nothing was written"
        return f"stopped before the first checkpoint (log: {log}); start again with --overwrite"
    command = f"isaseg train --resume --work-dir {shlex.quote(str(work))}"
    return (
        f"stopped; checkpoints in {work} (latest.pth -> {latest.resolve().name}), log {log}; "
        f"continue with: {command}"
    )


def _refuse_with_resume(recipe: dict[str, object]) -> None:
    """The options that would change a resumed run's recipe or weights are refused."""
    given = [flag for flag, value in recipe.items() if value not in (None, False, [])]
    if given:
        raise InputError(
            f"--resume continues the run's own recipe and weights, so {', '.join(given)} "
            "cannot be given with it (to change them, start a new run: --from WORK_DIR/latest.pth)"
        )


def _check_json_out(path: Path | None) -> None:
    """Fails now, not after hours of training, when the summary could not be written."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"--json-out {path} is a folder; name a file")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise InputError(f"--json-out {path}: cannot write into {folder}")


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
    entry: ZooEntry, pretrained: str | None, init_from: str | None
) -> dict[str, Path | WeightsSpec | None]:
    """``pretrained``/``init_from`` for fit: the entry's backbone by default."""
    if init_from is not None and pretrained is not None:
        raise InputError("--from and --pretrained exclude each other (--from sets every weight)")
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
        _render.info(f"Checkpoint: {result.checkpoint} (also {result.work_dir / 'latest.pth'})")
    if result.checkpoints:
        names = ", ".join(path.name for path in result.checkpoints)
        _render.info(f"Checkpoints kept in {result.work_dir}: {names}")
    if result.best_miou is not None:
        _render.info(
            f"Best mIoU {result.best_miou:.2f} at iteration {result.best_iter}: {result.best}"
        )
    _render.info(f"Log: {result.work_dir / 'log.jsonl'}")
    if result.ranks_identical is False:
        _render.warn("the processes ended with different weights; the checkpoint is rank 0's")
