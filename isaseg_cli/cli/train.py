"""`isaseg train`: the published recipe of a zoo entry, on one GPU or many (torchrun), resumable."""

from __future__ import annotations

import os
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
    from isaseg_cli.engine.train.fit import fit
    from isaseg_cli.engine.train.recipe import RecipeChanges, resolve_recipe
    from isaseg_cli.engine.train.workdir import stop_hint
    from isaseg_cli.report.dataset_check import check_before_run

    _check_json_out(json_out)
    changes = RecipeChanges(
        dataset=dataset,
        classes=classes,
        num_classes=num_classes,
        crop_size=parse_size(crop_size, "--crop-size"),
        lr=lr,
        settings=tuple(settings or ()),
        pretrained=pretrained,
        init_from=init_from,
    )
    recipe = resolve_recipe(
        model,
        default_model=default_model,
        work_dir=work_dir,
        data_root=data_root,
        changes=changes,
        resume=resume,
        overwrite=overwrite,
    )
    check_before_run(recipe.entry.data, recipe.data_root, "train")
    with _render.progress_bars() as update:
        try:
            result = fit(
                recipe.entry,
                data_root=data_root,
                work_dir=recipe.work_dir,
                device=device,
                precision=precision,
                seed=seed,
                resume=recipe.resume or False,
                overwrite=overwrite,
                pretrained=recipe.pretrained,
                init_from=recipe.init_from,
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
                on_download=_render.download_sink(update, label="download (MB)", megabytes=True),
            )
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (cli._signals): exit 130 or 143
            if _render.is_main_process():
                _render.warn(stop_hint(recipe.work_dir))
            raise
    if _render.is_main_process():
        _show(result)
        if json_out is not None:
            _render.write_json(json_out, result.to_dict())


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
