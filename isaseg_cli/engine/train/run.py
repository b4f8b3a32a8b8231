"""One process's training run: its parts (``TrainRun``), how they start from a ``TrainPlan``, and
the validation and checkpoint steps that the loop takes every K iterations."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from isaseg_cli.data.datasets import Sample
from isaseg_cli.data.loader import SegmentationDataset, build_train_loader
from isaseg_cli.data.transforms import TrainTransform
from isaseg_cli.engine.checkpoint import apply_weights, model_state_dict, save_checkpoint
from isaseg_cli.engine.device import ProcessFlags, set_process_flags
from isaseg_cli.engine.loading import entry_classes
from isaseg_cli.engine.progress import ProgressCallback
from isaseg_cli.engine.ranks import DistInfo
from isaseg_cli.engine.train import state as train_state
from isaseg_cli.engine.train import workdir as train_workdir
from isaseg_cli.engine.train.log import TrainLog
from isaseg_cli.engine.train.optim import build_optimizer, build_scheduler
from isaseg_cli.engine.train.plan import TrainPlan
from isaseg_cli.engine.train.pretrained import WeightsReport, initialise
from isaseg_cli.engine.train.workdir import BEST, LATEST
from isaseg_cli.errors import InputError
from isaseg_cli.models.build import build_model
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.spec import ZooEntry


@dataclass(slots=True)
class TrainRun:
    """Everything one process's training loop works with."""

    entry: ZooEntry
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    work_dir: Path
    device: torch.device
    precision: str
    seed: int
    info: DistInfo
    model: Segmentor
    net: nn.Module  # the model, or its DDP wrapper
    optimizer: Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    loader: DataLoader
    val_samples: list[Sample]
    log: TrainLog | None = None
    best_miou: float | None = None
    best_iter: int | None = None
    start_iter: int = 0  # the iteration reached before this process started (resume)
    cuda_graphs: bool = False  # the training forward/backward replay CUDA graphs
    settings: train_state.RunSettings | None = None  # stored in each checkpoint for --resume


def build_run(
    entry: ZooEntry,
    model: Segmentor,
    train_samples: list[Sample],
    val_samples: list[Sample],
    work_dir: Path,
    device: torch.device,
    precision: str,
    seed: int,
    info: DistInfo,
    *,
    channels_last: bool = False,
) -> TrainRun:
    """Moves ``model`` to ``device`` (NHWC parameters with ``channels_last``, as the training
    fast path says; DDP-wrapped when distributed), and builds the optimizer,
    the poly schedule, the gradient scaler (enabled for fp16) and the seeded train loader."""
    spec = entry.train
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    net: nn.Module = model
    if info.distributed:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build_optimizer(model, spec)
    data = entry.data
    dataset = SegmentationDataset(
        train_samples, TrainTransform(data), data.reduce_zero_label, entry.model.num_classes
    )
    per_process, pin = spec.batch_size // info.world_size, device.type == "cuda"
    loader = build_train_loader(
        dataset,
        per_process,
        spec.workers,
        seed,
        rank=info.rank,
        world_size=info.world_size,
        pin_memory=pin,
    )
    # Its own generator keeps the loader's per-epoch draw off the global RNG that dropout uses,
    # so a run resumed mid-epoch replays the same dropout masks.
    loader.generator = torch.Generator().manual_seed(seed)
    classes, palette = entry_classes(entry)
    return TrainRun(
        entry=entry,
        classes=classes,
        palette=palette,
        work_dir=work_dir,
        device=device,
        precision=precision,
        seed=seed,
        info=info,
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, spec, spec.iters),
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        loader=loader,
        val_samples=val_samples,
    )


def start_run(
    plan: TrainPlan,
    say: Callable[[str], None],
    on_download: Callable[[int, int | None], None] | None,
) -> tuple[TrainRun, WeightsReport | None]:
    """Inside the process group: the work dir made ready, the model built with its starting
    weights (or the resumed run's, with its optimizer, schedule and RNG) and the log opened."""
    info, entry, payload = plan.info, plan.entry, plan.payload
    if info.is_main:
        _prepare(plan.work_dir, plan.clear, say)
    for note in plan.notes:
        say(f"resume: {note}")
    torch.manual_seed(plan.seed)
    set_process_flags(ProcessFlags(cudnn_benchmark=plan.settings.cudnn_benchmark))
    model = build_model(entry.model, sync_bn=plan.sync_bn, execution=plan.path.execution)
    report = None
    if payload is None:
        report = initialise(
            model,
            pretrained=plan.pretrained,
            init_from=plan.init_from,
            info=info,
            trust=plan.trust,
            on_download=on_download,
            on_status=say,
        )
        if report is not None:
            say(f"weights: {report.summary()}")
    else:
        apply_weights(model, payload, str(plan.work_dir / LATEST))
    run = build_run(
        entry,
        model,
        plan.train_samples,
        plan.val_samples,
        plan.work_dir,
        plan.device,
        plan.settings.precision,
        plan.seed,
        info,
        channels_last=plan.path.channels_last,
    )
    run.cuda_graphs, run.settings = plan.cuda_graphs, plan.settings
    spec = entry.train
    if payload is not None:
        run.start_iter = train_state.restore(
            payload, run.optimizer, run.scheduler, run.scaler, plan.device, spec.iters
        )
        run.best_miou, run.best_iter = payload["run"]["best_mIoU"], payload["run"]["best_iter"]
        _note_resume(payload, run, say)
    norm = "SyncBatchNorm" if plan.sync_bn else "BatchNorm per process"
    say(
        f"batch {spec.batch_size} = {info.world_size} process(es) x "
        f"{spec.batch_size // info.world_size} ({norm}), lr {spec.lr}, "
        f"iterations {run.start_iter}..{spec.iters}, on {plan.device}"
    )
    if info.is_main:
        run.log = TrainLog(plan.work_dir, append=payload is not None)
    return run, report


def validate(run: TrainRun, iteration: int, on_progress: ProgressCallback | None) -> None:
    """mIoU on the val split (every rank takes a shard); rank 0 logs it and keeps ``best.pth``.

    Leaves the model in eval mode.
    """
    from isaseg_cli.engine.evaluate import evaluate

    result = evaluate(
        run.model,
        run.entry,
        run.val_samples,
        device=run.device,
        workers=run.entry.train.workers,
        classes=run.classes,
        on_progress=on_progress,
    )
    if result.interrupted:  # evaluate keeps Ctrl-C for its partial result; training stops too
        raise KeyboardInterrupt
    miou = result.metrics.miou
    improved = math.isfinite(miou) and (run.best_miou is None or miou > run.best_miou)
    if improved:
        run.best_miou, run.best_iter = miou, iteration
    if run.log is not None:
        figures = {"mIoU": miou, "mAcc": result.metrics.macc, "aAcc": result.metrics.aacc}
        run.log.write({"iter": iteration, "mode": "val", **figures, "best": improved})
    if improved and run.info.is_main:
        meta = train_state.checkpoint_meta(
            run.entry,
            run.classes,
            run.palette,
            iteration,
            iteration // len(run.loader),
            mIoU=miou,
            seed=run.seed,
        )
        payload = {"meta": meta, "state_dict": model_state_dict(run.model)}
        save_checkpoint(run.work_dir / BEST, payload)


def save(run: TrainRun, iteration: int) -> Path:
    """Writes ``iter_<iteration>.pth`` and ``latest.pth`` with the resume state (rank 0 only)."""
    epoch = iteration // len(run.loader)
    meta = train_state.checkpoint_meta(
        run.entry, run.classes, run.palette, iteration, epoch, seed=run.seed
    )
    about = {
        "seed": run.seed,
        "batch_size": run.entry.train.batch_size,
        "world_size": run.info.world_size,
        "best_mIoU": run.best_miou,
        "best_iter": run.best_iter,
        "settings": run.settings.to_dict() if run.settings is not None else {},
    }
    state = train_state.resume_state(
        iteration, run.optimizer, run.scheduler, run.scaler, run.device, about
    )
    return train_state.save_training_checkpoint(run.work_dir, run.model, meta, state)


@contextmanager
def save_errors_hint(work_dir: Path) -> Iterator[None]:
    """Adds to a failed save (a full disk) which checkpoint is intact and how to go on."""
    try:
        yield
    except InputError as exc:
        latest = train_workdir.latest_checkpoint(work_dir)
        if latest is not None:
            where = f"{work_dir / LATEST} ({latest.name}) is intact: make room, then add --resume"
        else:
            where = "no checkpoint was saved yet"
        raise InputError(f"{exc}; {where}") from None


def prune(run: TrainRun, iteration: int, say: Callable[[str], None]) -> None:
    """Deletes the ``iter_<k>.pth`` beyond ``--keep-checkpoints`` and says which, in the log too."""
    keep = run.settings.keep_checkpoints if run.settings else train_state.KEEP_CHECKPOINTS
    deleted = [path.name for path in train_workdir.prune_checkpoints(run.work_dir, keep)]
    if deleted:
        if run.log is not None:
            run.log.write({"iter": iteration, "mode": "checkpoint", "deleted": deleted})
        say(f"deleted {', '.join(deleted)} (--keep-checkpoints {keep})")


def _note_resume(payload: dict[str, Any], run: TrainRun, say: Callable[[str], None]) -> None:
    before = payload["run"]
    then = (before["seed"], before["batch_size"], before["world_size"])
    now = (run.seed, run.entry.train.batch_size, run.info.world_size)
    if then != now:
        say(
            f"the checkpoint ran with seed {then[0]}, batch {then[1]} on {then[2]} process(es); "
            f"seed {now[0]}, batch {now[1]} on {now[2]} changes the data order from here on"
        )
    say(f"resumed from iteration {payload['iter']} of {run.entry.train.iters}")


def _prepare(work_dir: Path, overwrite: bool, say: Callable[[str], None]) -> None:
    """Creates the work dir; deletes the earlier run's files (``overwrite``) and the partial
    checkpoints of a killed one."""
    train_workdir.create(work_dir)
    if overwrite:
        deleted = train_workdir.clear_run(work_dir)
        if deleted:
            say(f"--overwrite: deleted the earlier run in {work_dir} ({len(deleted)} file(s))")
    stale = train_workdir.remove_partial_files(work_dir)
    if stale:
        names = ", ".join(path.name for path in stale)
        say(f"deleted {names}: partial checkpoint file(s) of an interrupted run")
