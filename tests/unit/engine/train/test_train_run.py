"""engine/train/run.py (named apart from bench/run.py's test: basenames must be unique): one
process's run started from a plan (new or resumed), saved, pruned, and a failed save that
says which checkpoint is intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from isaseg_cli.engine.checkpoint import read_checkpoint
from isaseg_cli.engine.ranks import DistInfo
from isaseg_cli.engine.train import state as train_state
from isaseg_cli.engine.train.plan import TrainOverrides, TrainPlan, plan_run
from isaseg_cli.engine.train.run import prune, save, save_errors_hint, start_run
from isaseg_cli.errors import InputError
from tests.helpers import make_tiny_cityscapes_entry

pytestmark = pytest.mark.usefixtures("one_thread")


def plan(root: Path, work: Path, **options: object) -> TrainPlan:
    given = {"data_root": root, "device": "cpu", "keep_checkpoints": 1}
    arguments: dict = {"seed": None, "resume": False, "overwrite": False, "trust": False}
    arguments |= {"pretrained": None, "init_from": None, "overrides": TrainOverrides()}
    arguments |= options
    return plan_run(
        make_tiny_cityscapes_entry(), work_dir=work, info=DistInfo(), given=given, **arguments
    )


def test_a_new_run_starts_at_zero_with_its_parts_and_says_so(
    city_root: Path, tmp_path: Path
) -> None:
    notes: list[str] = []
    work = tmp_path / "w"
    (work / "log.jsonl").parent.mkdir()
    (work / ".iter_7.pth.tmp").write_bytes(b"half")  # a killed run's partial file
    run, report = start_run(plan(city_root, work), notes.append, None)
    try:
        assert report is None and run.start_iter == 0 and run.net is run.model
        assert run.model.training is True and run.best_iter is None
        assert (run.cuda_graphs, run.settings.keep_checkpoints) == (False, 1)
        assert run.scaler.is_enabled() is False  # fp32
        assert run.optimizer.param_groups[0]["lr"] == run.entry.train.lr
        images, labels = next(iter(run.loader))
        assert images.shape == (2, 3, 64, 64) and labels.shape == (2, 64, 64)
        assert run.log is not None and run.log.path == work / "log.jsonl"
    finally:
        run.log.close()
    assert notes == [
        "deleted .iter_7.pth.tmp: partial checkpoint file(s) of an interrupted run",
        "batch 2 = 1 process(es) x 2 (BatchNorm per process), lr 0.01, iterations 0..4, on cpu",
    ]


def test_save_prune_then_resume_from_the_saved_state(city_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    notes: list[str] = []
    run, _ = start_run(plan(city_root, work, seed=3), notes.append, None)
    for iteration in (1, 2):
        run.optimizer.step()
        run.scheduler.step()
        assert save(run, iteration) == work / f"iter_{iteration}.pth"
        prune(run, iteration, notes.append)
    run.log.close()
    assert sorted(p.name for p in work.iterdir() if p.suffix == ".pth") == [
        "iter_2.pth", "latest.pth"
    ]  # fmt: skip
    assert notes[-1] == "deleted iter_1.pth (--keep-checkpoints 1)"
    lines = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert lines == [{"iter": 2, "mode": "checkpoint", "deleted": ["iter_1.pth"]}]
    saved = read_checkpoint(work / "latest.pth")
    assert saved["run"]["seed"] == 3 and saved["run"]["settings"]["keep_checkpoints"] == 1

    point = train_state.read_resume_point(work)
    said: list[str] = []
    resumed, report = start_run(plan(city_root, work, resume=point), said.append, None)
    resumed.log.close()
    assert report is None and resumed.start_iter == 2 and resumed.seed == 3
    assert resumed.scheduler.last_epoch == run.scheduler.last_epoch
    for key, value in run.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert "resumed from iteration 2 of 4" in said
    assert said[-1].endswith("iterations 2..4, on cpu")


def test_a_failed_save_says_which_checkpoint_is_intact(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="disk full; no checkpoint was saved yet"):
        with save_errors_hint(tmp_path):
            raise InputError("disk full")
    (tmp_path / "iter_4.pth").write_bytes(b"weights")
    (tmp_path / "latest.pth").symlink_to("iter_4.pth")
    with pytest.raises(InputError) as caught:
        with save_errors_hint(tmp_path):
            raise InputError("disk full")
    assert str(caught.value) == (
        f"disk full; {tmp_path / 'latest.pth'} (iter_4.pth) is intact: make room, then add --resume"
    )
