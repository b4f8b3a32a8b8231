"""One process's training run: its parts (``TrainRun``), and the validation and checkpoint
steps that the loop takes every K iterations."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from isaseg_cli.data.datasets import Sample
from isaseg_cli.data.loader import SegmentationDataset, build_train_loader
from isaseg_cli.data.transforms import TrainTransform
from isaseg_cli.engine.checkpoint import model_state_dict, save_checkpoint
from isaseg_cli.engine.distributed import DistInfo
from isaseg_cli.engine.loading import entry_classes
from isaseg_cli.engine.progress import ProgressCallback
from isaseg_cli.engine.train import state as train_state
from isaseg_cli.engine.train import workdir as train_workdir
from isaseg_cli.engine.train.log import TrainLog
from isaseg_cli.engine.train.optim import build_optimizer, build_scheduler
from isaseg_cli.engine.train.workdir import BEST, LATEST
from isaseg_cli.errors import InputError
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
    loader = build_train_loader(dataset, per_process, spec.workers, seed, info.distributed, pin)
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
        latest = work_dir / LATEST
        if latest.is_file():
            where = f"{latest} ({latest.resolve().name}) is intact: make room, then add --resume"
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
