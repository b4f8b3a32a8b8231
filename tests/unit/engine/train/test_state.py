"""Training checkpoints: the resume state beside mmseg's keys, written atomically, read back once
and restored exactly."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from isaseg_cli.engine.checkpoint import build_meta, read_checkpoint
from isaseg_cli.engine.train import state as train_state
from isaseg_cli.engine.train.optim import build_optimizer, build_scheduler
from isaseg_cli.errors import CheckpointError, InputError
from isaseg_cli.models.build import build_model
from tests.helpers import TINY_CLASSES, make_tiny_entry

CPU = torch.device("cpu")


def draws() -> tuple[float, float, int]:
    return torch.rand(1).item(), float(np.random.rand()), random.randrange(10**9)


def test_rng_state_round_trip_replays_every_generator() -> None:
    state = train_state.rng_state(CPU)
    first = draws()
    train_state.set_rng_state(state, CPU)
    assert draws() == first
    assert isinstance(state["numpy"][1], torch.Tensor)  # loadable with weights_only


def parts(iters: int = 10):
    entry = make_tiny_entry()
    model = build_model(entry.model)
    optimizer = build_optimizer(model, entry.train)
    scheduler = build_scheduler(optimizer, entry.train, iters)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return entry, model, optimizer, scheduler, scaler


def test_a_training_checkpoint_is_written_then_pointed_at_and_restores_the_schedule(
    tmp_path: Path,
) -> None:
    entry, model, optimizer, scheduler, scaler = parts()
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    lr = optimizer.param_groups[0]["lr"]
    palette = tuple((i, i, i) for i in range(len(TINY_CLASSES)))
    meta = train_state.checkpoint_meta(entry, TINY_CLASSES, palette, 3, 1, seed=4)
    assert (meta["iter"], meta["epoch"], meta["isaseg"]["seed"]) == (3, 1, 4)
    resume = train_state.resume_state(3, optimizer, scheduler, scaler, CPU, {"seed": 4})
    assert "scaler" not in resume  # only fp16 runs keep one
    path = train_state.save_training_checkpoint(tmp_path, model, meta, resume)
    assert path == tmp_path / "iter_3.pth" and os.readlink(tmp_path / "latest.pth") == "iter_3.pth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_3.pth", "latest.pth"]

    payload = read_checkpoint(tmp_path / "latest.pth")
    _, _, fresh_optimizer, fresh_scheduler, fresh_scaler = parts()
    reached = train_state.restore(payload, fresh_optimizer, fresh_scheduler, fresh_scaler, CPU, 20)
    assert reached == 3 and fresh_optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert fresh_scheduler.max_iters == 20  # the schedule follows the extended run
    with pytest.raises(InputError, match="at iteration 3, past --max-iters 2"):
        train_state.restore(payload, fresh_optimizer, fresh_scheduler, fresh_scaler, CPU, 2)


def test_the_resume_point_is_read_once_with_its_entry_and_settings(tmp_path: Path) -> None:
    entry, model, optimizer, scheduler, scaler = parts()
    meta = build_meta(entry, TINY_CLASSES, tuple((i, i, i) for i in range(5)))
    run = {"seed": 0, "settings": {"precision": "bf16"}}
    resume = train_state.resume_state(2, optimizer, scheduler, scaler, CPU, run)
    train_state.save_training_checkpoint(tmp_path, model, meta, resume)
    point = train_state.read_resume_point(tmp_path)
    assert point.path == tmp_path / "latest.pth" and point.entry == entry
    assert point.settings == {"precision": "bf16"} and point.payload["iter"] == 2


def test_files_that_cannot_be_resumed_say_why(tmp_path: Path) -> None:
    torch.save({"state_dict": {}, "meta": {}}, tmp_path / "latest.pth")
    with pytest.raises(CheckpointError, match=r"no resume state \(optimizer, scheduler, iter"):
        train_state.read_resume_point(tmp_path)
    state = {key: {} for key in train_state.RESUME_KEYS}
    torch.save({"state_dict": {}, "meta": {}, **state}, tmp_path / "latest.pth")
    with pytest.raises(CheckpointError, match="not written by isaseg train"):
        train_state.read_resume_point(tmp_path)


def test_run_settings_default_and_round_trip(tmp_path: Path) -> None:
    settings = train_state.RunSettings(data_root="/data")
    assert settings.to_dict() == {
        "data_root": "/data",
        "device": "auto",
        "precision": "fp32",
        "cudnn_benchmark": False,
        "cuda_graphs": None,
        "recompute": None,
        "keep_checkpoints": 3,
    }
    again, notes = train_state.resolve_settings({}, settings.to_dict(), tmp_path)
    assert again == settings and notes == []
    changed, notes = train_state.resolve_settings(
        {"cuda_graphs": False}, settings.to_dict(), tmp_path
    )
    assert changed.cuda_graphs is False and notes == ["--cuda-graphs off instead of the run's auto"]
