"""``fit``: the iteration-based training recipe, on one process or many (torchrun + DDP). It
reads top to bottom: plan (every check), start, loop, result.

See docs/FAITHFULNESS.md#training-schedule.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from isaseg_cli.data.loader import iterate_forever
from isaseg_cli.engine.device import autocast
from isaseg_cli.engine.distributed import (
    DistInfo,
    broadcast_buffers,
    destroy_process_group,
    dist_info,
    init_process_group,
    ranks_identical,
)
from isaseg_cli.engine.infer.cuda_graphs import GraphedTraining
from isaseg_cli.engine.progress import ProgressCallback, ProgressEvent
from isaseg_cli.engine.train import workdir as train_workdir
from isaseg_cli.engine.train.log import LOG_NAME
from isaseg_cli.engine.train.loss import segmentation_losses
from isaseg_cli.engine.train.plan import TrainOverrides, TrainPlan, plan_run
from isaseg_cli.engine.train.pretrained import WeightsReport, WeightsSource
from isaseg_cli.engine.train.run import (
    TrainRun,
    prune,
    save,
    save_errors_hint,
    start_run,
    validate,
)
from isaseg_cli.engine.train.state import ResumePoint
from isaseg_cli.engine.train.workdir import BEST
from isaseg_cli.zoo.spec import ZooEntry

LOG_INTERVAL = 10


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a training run did. ``model`` is this process's trained model (not serialised)."""

    entry: ZooEntry
    work_dir: Path
    start_iter: int
    iterations: int
    seconds: float
    device: str
    precision: str
    seed: int
    world_size: int
    batch_size: int
    losses: dict[str, float]
    checkpoint: Path | None
    best: Path | None
    best_miou: float | None
    best_iter: int | None
    weights: WeightsReport | None
    ranks_identical: bool | None
    checkpoints: tuple[Path, ...]  # the iter_<k>.pth files left in work_dir (rank 0)
    model: nn.Module = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (paths as strings, no model)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("work_dir", "checkpoint", "best"):
            data[name] = None if data[name] is None else str(data[name])
        data["checkpoints"] = [str(path) for path in self.checkpoints]
        data["log"] = str(self.work_dir / LOG_NAME)
        data["weights"] = self.weights.to_dict() if self.weights else None
        del data["entry"], data["model"]
        return {"model": self.entry.name, **data}


def fit(
    entry: ZooEntry,
    *,
    work_dir: Path,
    data_root: Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    seed: int | None = None,
    resume: bool | ResumePoint = False,
    overwrite: bool = False,
    pretrained: WeightsSource | None = None,
    init_from: WeightsSource | None = None,
    trust: bool = False,
    max_iters: int | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    val_interval: int | None = None,
    checkpoint_interval: int | None = None,
    keep_checkpoints: int | None = None,
    cudnn_benchmark: bool | None = None,
    cuda_graphs: bool | None = None,
    recompute: bool | None = None,
    log_interval: int = LOG_INTERVAL,
    on_progress: ProgressCallback | None = None,
    on_message: Callable[[str], None] | None = None,
    on_download: Callable[[int, int | None], None] | None = None,
) -> TrainResult:
    """Trains ``entry``'s model on the train split under ``data_root``, writing into ``work_dir``.

    Under torchrun every process calls this: the total batch is split over the processes (the
    lr is not scaled), DDP averages gradients and SyncBatchNorm (CUDA) shares batch statistics.
    Only rank 0 writes files and reports. ``iter_<k>.pth`` and ``latest.pth`` are written every
    ``checkpoint_interval`` iterations and at the end; validation (mIoU) runs every
    ``val_interval`` iterations and at the end, keeping ``best.pth``. Ctrl-C stops at once and
    loses the work since the last checkpoint (files are written atomically). Every option is
    checked before the model is built or any weights are downloaded.

    Options left at None take the entry's value, or when resuming the run's own (stored in its
    checkpoints); a given one that changes the run's is reported through ``on_message``.

    Args:
        entry: the recipe; ``train.batch_size`` is the total over all processes. When
            resuming, the run's own entry is used and ``entry`` must be of the same model.
        work_dir: checkpoints, ``log.jsonl`` and TensorBoard events. A new run refuses a
            folder that holds an earlier run's files, unless ``overwrite``.
        data_root: the dataset root (train split, and val split when validating); default
            ``default_data_root`` of the entry's dataset.
        device: ``auto`` (default), ``cpu``, ``cuda`` (each process takes
            ``cuda:LOCAL_RANK``) or ``mps``.
        precision: ``fp32`` (default), ``bf16`` (autocast) or ``fp16`` (autocast and a
            gradient scaler).
        seed: seeds model init, dropout and the data order; default 0, or the resumed run's.
        resume: continue from ``work_dir/latest.pth`` (weights, optimizer, schedule, RNG and
            data position), ending with the weights an uninterrupted run would have; a
            ``ResumePoint`` already read (``read_resume_point``) saves reading it again.
        overwrite: delete an earlier run's files in ``work_dir`` (``run_files``) first.
        pretrained: an ImageNet ResNetV1c (file, or a spec downloaded to the cache).
        init_from: a segmentation checkpoint to fine-tune from; its classifiers are
            re-initialised when the number of classes differs.
        trust: allow full unpickling of a local ``pretrained``/``init_from`` file (trusted
            files only; checksum-verified downloads are allowed it anyway).
        max_iters, batch_size, workers, val_interval, checkpoint_interval: override the
            entry's ``train`` values (``val_interval`` 0: no validation); the checkpoints'
            meta records the result.
        keep_checkpoints: how many ``iter_<k>.pth`` to keep, newest first (default 3; 0: all);
            ``best.pth`` and ``latest.pth`` always stay. Deletions go to the log.
        cudnn_benchmark: let cuDNN pick the fastest kernels (fixed crop sizes make it pay).
        cuda_graphs: replay the forward and backward as CUDA graphs (``None``: on CUDA in a
            single process); ``engine.infer.cuda_graphs`` says why.
        recompute: recompute the bottleneck tails in the backward pass to save activation
            memory (``None``: on CUDA without SyncBatchNorm); ``resolve_training_path``.
        log_interval: iterations per ``log.jsonl`` line (losses averaged over them and ranks).
        on_progress: ``ProgressEvent("train", iteration, max_iters, {...})`` after each
            iteration, and validation's ``"eval"`` events (rank 0 only).
        on_message: one-line notes: batch split, weights loaded, resume (rank 0 only).
        on_download: byte progress of a weights download (rank 0 only).

    Raises:
        DatasetNotFoundError: a missing data root or split, or an empty split.
        InputError: an unwritable or used work dir, nothing to resume, a bad batch size or
            device, a full disk while saving.
        CheckpointError: unfitting or unreadable starting weights or resume checkpoint.
    """
    overrides = TrainOverrides(
        iters=max_iters,
        batch_size=batch_size,
        workers=workers,
        eval_interval=val_interval,
        checkpoint_interval=checkpoint_interval,
    )
    given = {
        "data_root": data_root,
        "device": device,
        "precision": precision,
        "cudnn_benchmark": cudnn_benchmark,
        "cuda_graphs": cuda_graphs,
        "recompute": recompute,
        "keep_checkpoints": keep_checkpoints,
    }
    plan = plan_run(
        entry,
        work_dir=work_dir,
        info=dist_info(),
        overrides=overrides,
        given=given,
        seed=seed,
        resume=resume,
        overwrite=overwrite,
        pretrained=pretrained,
        init_from=init_from,
        trust=trust,
    )
    say = on_message if on_message is not None and plan.info.is_main else _ignore
    created = init_process_group(plan.info, plan.device)
    run: TrainRun | None = None
    try:
        run, report = start_run(plan, say, on_download)
        started = time.perf_counter()
        losses, checkpoint = _train(
            run, log_interval, on_progress if plan.info.is_main else None, say
        )
        seconds = time.perf_counter() - started
        if checkpoint is None and run.start_iter == plan.entry.train.iters:
            say(f"the run in {work_dir} had already finished at iteration {run.start_iter}")
        identical = ranks_identical(run.model) if plan.info.distributed else None
        if run.log is not None and identical is not None:
            end = {"iter": plan.entry.train.iters, "mode": "end", "ranks_identical": identical}
            run.log.write(end)
        return _result(plan, run, report, losses, checkpoint, seconds, identical)
    finally:
        if run is not None and run.log is not None:
            run.log.close()
        if created:
            destroy_process_group()


def _result(
    plan: TrainPlan,
    run: TrainRun,
    report: WeightsReport | None,
    losses: dict[str, float],
    checkpoint: Path | None,
    seconds: float,
    identical: bool | None,
) -> TrainResult:
    work_dir = plan.work_dir
    return TrainResult(
        entry=plan.entry,
        work_dir=work_dir,
        start_iter=run.start_iter,
        iterations=plan.entry.train.iters,
        seconds=seconds,
        device=str(plan.device),
        precision=plan.settings.precision,
        seed=plan.seed,
        world_size=plan.info.world_size,
        batch_size=plan.entry.train.batch_size,
        losses=losses,
        checkpoint=checkpoint,
        best=work_dir / BEST if run.best_iter is not None else None,
        best_miou=run.best_miou,
        best_iter=run.best_iter,
        weights=report,
        ranks_identical=identical,
        checkpoints=tuple(train_workdir.iter_checkpoints(work_dir)) if plan.info.is_main else (),
        model=run.model,
    )


def train_one_iter(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    optimizer: Optimizer,
    scaler: torch.amp.GradScaler,
    entry: ZooEntry,
    device: torch.device,
    precision: str,
) -> dict[str, Tensor]:
    """One SGD step on a batch; returns the detached ``decode``/``aux``/``total`` losses.

    The forward runs under autocast; the losses are computed in float32 (docs/FAITHFULNESS.md#loss).
    """
    with autocast(device, precision, cache=False):
        outputs = net(images)
    aux_weight = entry.model.aux_head.loss_weight if entry.model.aux_head else 0.0
    losses = segmentation_losses(
        outputs, labels, aux_weight=aux_weight, ignore_index=entry.data.ignore_index
    )
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["total"]).backward()
    scaler.step(optimizer)
    scaler.update()
    return {name: value.detach() for name, value in losses.items()}


def _train(
    run: TrainRun,
    log_interval: int,
    on_progress: ProgressCallback | None,
    say: Callable[[str], None],
) -> tuple[dict[str, float], Path | None]:
    spec = run.entry.train
    start_iter = run.start_iter
    batches = iterate_forever(run.loader, start_iter)
    sums: dict[str, Tensor] = {}
    figures: dict[str, float] = {}
    checkpoint, rate = None, None
    window_start, window_iters = time.perf_counter(), 0
    run.net.train()
    net = run.net
    for iteration in range(start_iter + 1, spec.iters + 1):
        images, labels = next(batches)
        images = images.to(run.device, non_blocking=True)  # (N, 3, h, w)
        if run.cuda_graphs and net is run.net:  # captured with the first batch's shape
            net = GraphedTraining(run.model, images, run.precision)
        labels = labels.to(run.device, non_blocking=True)  # (N, h, w)
        lr = run.optimizer.param_groups[0]["lr"]
        losses = train_one_iter(
            net,
            images,
            labels,
            run.optimizer,
            run.scaler,
            run.entry,
            run.device,
            run.precision,
        )
        run.scheduler.step()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0) + value
        window_iters += 1
        if iteration % log_interval == 0 or iteration == spec.iters:
            figures = _mean_over_ranks(sums, window_iters, run.info)
            rate = window_iters / max(time.perf_counter() - window_start, 1e-9)
            record = {"iter": iteration, "mode": "train", "lr": lr, **figures, "it_s": rate}
            record["eta_s"] = (spec.iters - iteration) / rate
            if run.device.type == "cuda":
                record["mem_mb"] = torch.cuda.max_memory_allocated(run.device) / 2**20
            if run.log is not None:
                run.log.write(record)
            sums, window_start, window_iters = {}, time.perf_counter(), 0
        if on_progress is not None:
            shown = _shown(run, lr, figures, rate)
            on_progress(ProgressEvent("train", iteration, spec.iters, shown))
        final = iteration == spec.iters
        due_val = spec.eval_interval > 0 and (iteration % spec.eval_interval == 0 or final)
        due_save = iteration % spec.checkpoint_interval == 0 or final
        if (due_val or due_save) and run.info.distributed:
            broadcast_buffers(run.model)
        with save_errors_hint(run.work_dir):
            if due_val:
                validate(run, iteration, on_progress)
                run.net.train()
            if due_save and run.info.is_main:
                checkpoint = save(run, iteration)
                prune(run, iteration, say)
        if due_val or due_save:  # keep the it/s figure to training alone
            window_start = time.perf_counter()
    return figures, checkpoint


def _shown(
    run: TrainRun, lr: float, figures: dict[str, float], rate: float | None
) -> dict[str, Any]:
    shown: dict[str, Any] = {"lr": lr}
    if figures:
        shown["loss"] = figures["loss"]
    if rate is not None:
        shown["it/s"] = rate
    if run.device.type == "cuda":
        shown["mem"] = f"{torch.cuda.max_memory_allocated(run.device) / 2**30:.1f}G"
    return shown


def _mean_over_ranks(sums: dict[str, Tensor], count: int, info: DistInfo) -> dict[str, float]:
    names = sorted(sums)
    values = torch.stack([sums[name].float() for name in names]) / count
    if info.distributed:
        dist.all_reduce(values)
        values /= info.world_size
    mean = dict(zip(names, values.tolist(), strict=True))
    mean["loss"] = mean.pop("total")
    return mean


def _ignore(message: str) -> None:
    del message
