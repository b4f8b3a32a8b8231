"""Training checkpoints: mmseg's ``state_dict`` + ``meta`` plus our resume state, atomically.

Keys beside mmseg's: ``optimizer``, ``scheduler``, ``scaler`` (fp16 only), ``iter``, ``rng``
(torch, CUDA, numpy and Python generators) and ``run`` (seed, batch, world size, best mIoU and
the run's ``settings``: data root, device, precision...).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from isaseg_cli.engine.checkpoint import (
    build_meta,
    entry_from_meta,
    model_state_dict,
    read_checkpoint,
    save_checkpoint,
)
from isaseg_cli.engine.train.workdir import LATEST, iter_name, latest_checkpoint, run_files
from isaseg_cli.errors import CheckpointError, InputError
from isaseg_cli.zoo.spec import ZooEntry

RESUME_KEYS = ("optimizer", "scheduler", "iter", "rng", "run")


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every generator a training step may draw from (dropout uses torch's or CUDA's).

    numpy's state is stored as a tensor so that a weights-only load can read it back.
    """
    name, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restores what ``rng_state`` captured (CUDA only when both sides used it)."""
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def checkpoint_meta(
    entry: ZooEntry,
    classes: tuple[str, ...],
    palette: tuple[tuple[int, int, int], ...],
    iteration: int,
    epoch: int,
    **extra: Any,
) -> dict[str, Any]:
    """``build_meta`` plus the top-level ``iter``/``epoch`` that mmcv and mmengine runners read."""
    meta = build_meta(entry, classes, palette, **extra)
    meta["iter"] = iteration
    meta["epoch"] = epoch
    return meta


def save_training_checkpoint(
    work_dir: Path, model: nn.Module, meta: dict[str, Any], resume_state: dict[str, Any]
) -> Path:
    """Writes ``iter_<k>.pth`` atomically, then points ``latest.pth`` at it (a symlink, or a copy
    where the filesystem has none); either file is complete or absent, never half-written."""
    payload = {"meta": meta, "state_dict": model_state_dict(model), **resume_state}
    path = save_checkpoint(work_dir / iter_name(resume_state["iter"]), payload)
    latest = work_dir / LATEST
    tmp = work_dir / f".{LATEST}.tmp"
    try:
        tmp.unlink(missing_ok=True)
        try:
            tmp.symlink_to(path.name)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, latest)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"cannot point {latest} at {path.name}: {reason}") from None
    finally:
        tmp.unlink(missing_ok=True)  # left only when this failed or was interrupted
    return path


KEEP_CHECKPOINTS = 3
# The option that sets each field of ``RunSettings``, for the notes on a resumed run.
_FLAGS = {
    "data_root": "--data-root",
    "device": "--device",
    "precision": "--precision",
    "cudnn_benchmark": "--cudnn-benchmark",
    "cuda_graphs": "--cuda-graphs",
    "recompute": "--recompute",
    "keep_checkpoints": "--keep-checkpoints",
}


@dataclass(frozen=True, slots=True)
class RunSettings:
    """The options of a run that its entry (the recipe) does not hold. Every checkpoint stores
    them (``run.settings``), so a resumed run uses them unless told otherwise."""

    data_root: str
    device: str = "auto"
    precision: str = "fp32"
    cudnn_benchmark: bool = False
    cuda_graphs: bool | None = None  # None: decided by the device
    recompute: bool | None = None
    keep_checkpoints: int = KEEP_CHECKPOINTS  # iter_<k>.pth files kept; 0: all

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FLAGS}


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """A run's ``latest.pth``, read once: its entry, its settings and the resume state."""

    path: Path
    entry: ZooEntry
    settings: dict[str, Any]
    payload: dict[str, Any]


def read_resume_point(work_dir: Path) -> ResumePoint:
    """Reads ``work_dir/latest.pth`` for ``fit(resume=...)``.

    Raises:
        InputError: there is no ``latest.pth``.
        CheckpointError: it is unreadable, holds weights only, or was not written by isaseg.
    """
    path = work_dir / LATEST
    if latest_checkpoint(work_dir) is None:
        hint = "start without --resume"
        if run_files(work_dir):
            hint = "the run stopped before its first checkpoint: start again with --overwrite"
        raise InputError(f"nothing to resume: {path} does not exist ({hint})")
    payload = read_checkpoint(path)
    check_resume_payload(payload, path)
    meta = payload.get("meta")
    entry = entry_from_meta(meta) if isinstance(meta, dict) else None
    if entry is None:
        raise CheckpointError(f"{path} was not written by isaseg train, so it cannot be resumed")
    stored = payload["run"].get("settings")
    return ResumePoint(path, entry, dict(stored) if isinstance(stored, dict) else {}, payload)


def resolve_settings(
    given: dict[str, Any], stored: dict[str, Any], default_data_root: Path
) -> tuple[RunSettings, list[str]]:
    """Each setting: the ``given`` value (None: not given), else the run's ``stored`` one, else
    the default; plus a note for every given value that changes a stored one.

    Checkpoints from before settings were stored have none: the defaults apply then.
    """
    if given.get("data_root") is not None:
        given = {**given, "data_root": str(Path(given["data_root"]).absolute())}
    values: dict[str, Any] = {"data_root": str(default_data_root.absolute())}
    values.update({k: v for k, v in stored.items() if k in _FLAGS})
    notes = [
        f"{_FLAGS[k]} {_shown(v)} instead of the run's {_shown(values[k])}"
        for k, v in given.items()
        if v is not None and k in stored and values[k] != v
    ]
    values.update({k: v for k, v in given.items() if v is not None})
    return RunSettings(**values), notes


def _shown(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def resume_state(
    iteration: int,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    run: dict[str, Any],
) -> dict[str, Any]:
    """The keys that let ``restore`` continue at ``iteration`` exactly; ``run`` holds the seed,
    batch size, world size and best mIoU so far."""
    state = {
        "iter": iteration,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(device),
        "run": run,
    }
    if scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    return state


def restore(
    payload: dict[str, Any],
    optimizer: Optimizer,
    scheduler: LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    max_iters: int,
) -> int:
    """Loads the optimizer, schedule, scaler and RNG states; returns the iteration reached.

    The schedule follows ``max_iters`` (a run may be extended).

    Raises:
        InputError: the checkpoint is already past ``max_iters``.
    """
    start_iter = int(payload["iter"])
    if start_iter > max_iters:
        raise InputError(
            f"the checkpoint is at iteration {start_iter}, past --max-iters {max_iters}"
        )
    # The implementation choice (fused on CUDA, foreach elsewhere) is this machine's, not the
    # saved run's: a run saved on a GPU may resume on a CPU.
    chosen = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    optimizer.load_state_dict(payload["optimizer"])
    for group, choice in zip(optimizer.param_groups, chosen, strict=True):
        group.update(choice)
    scheduler.load_state_dict(payload["scheduler"])
    scheduler.max_iters = max_iters  # type: ignore[attr-defined]
    if scaler.is_enabled() and "scaler" in payload:
        scaler.load_state_dict(payload["scaler"])
    set_rng_state(payload["rng"], device)
    return start_iter


def check_resume_payload(payload: dict[str, Any], path: Path) -> None:
    """Raises CheckpointError if ``payload`` lacks the resume state (best.pth, a published file)."""
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CheckpointError(
            f"{path} has weights but no resume state ({', '.join(missing)} missing); "
            "start a new run (with --from to fine-tune from it) instead of --resume"
        )
