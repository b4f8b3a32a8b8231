"""plan_run: every option of fit checked and settled before the process group, the model or any
file exists; TrainOverrides: the train values given for a run, by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from isaseg_cli.engine.ranks import DistInfo
from isaseg_cli.engine.train.plan import TrainOverrides, plan_run
from isaseg_cli.engine.train.state import ResumePoint
from isaseg_cli.errors import InputError, SpecError
from tests.helpers import make_tiny_cityscapes_entry

TINY = make_tiny_cityscapes_entry()
FIVE_CLASSES = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, num_classes=5))


def plan(root: Path, work: Path, **options: Any):
    """``plan_run`` with fit's defaults, on the CPU, for one process."""
    settings = {"data_root": root, "device": "cpu"} | options.pop("given", {})
    arguments: dict[str, Any] = {
        "work_dir": work,
        "info": DistInfo(),
        "overrides": TrainOverrides(),
        "given": settings,
        "seed": None,
        "resume": False,
        "overwrite": False,
        "pretrained": None,
        "init_from": None,
        "trust": False,
    }
    arguments.update(options)
    entry = arguments.pop("entry", make_tiny_cityscapes_entry())
    return plan_run(entry, **arguments)


def test_overrides_apply_by_name_and_note_only_real_changes() -> None:
    entry = make_tiny_cityscapes_entry()  # iters 4, batch 2, eval 2, checkpoint 2, workers 0
    overrides = TrainOverrides(iters=8, batch_size=2, eval_interval=0)
    assert overrides.given() == {"iters": 8, "batch_size": 2, "eval_interval": 0}
    train = overrides.apply(entry).train
    assert (train.iters, train.batch_size, train.eval_interval) == (8, 2, 0)
    assert (train.checkpoint_interval, train.workers, train.lr) == (2, 0, entry.train.lr)
    assert overrides.notes(entry) == [
        "--max-iters 8 instead of the run's 4",
        "--val-interval 0 instead of the run's 2",
    ]
    assert TrainOverrides().apply(entry) == entry and TrainOverrides().notes(entry) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (TrainOverrides(iters=0), "train.iters must be at least 1, not 0"),
        (TrainOverrides(checkpoint_interval=0), "train.checkpoint_interval must be at least 1"),
        (TrainOverrides(workers=-1), "cannot be negative"),
        (TrainOverrides(eval_interval=-2), "cannot be negative"),
    ],
)
def test_overrides_out_of_range_are_refused(overrides: TrainOverrides, message: str) -> None:
    with pytest.raises(InputError, match=message):
        overrides.apply(make_tiny_cityscapes_entry())


def test_a_new_run_is_planned_without_writing_anything(city_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    planned = plan(city_root, work, overwrite=True, overrides=TrainOverrides(iters=6))
    assert planned.entry.train.iters == 6 and planned.device == torch.device("cpu")
    assert (planned.seed, planned.cuda_graphs, planned.sync_bn) == (0, False, False)
    assert planned.path.channels_last is False  # CPU training stays the reference path
    assert planned.path.execution.recompute_tail is False
    recomputed = plan(city_root, work, given={"recompute": True})
    assert recomputed.path.execution.recompute_tail is True
    assert (len(planned.train_samples), len(planned.val_samples)) == (4, 4)
    assert planned.settings.data_root == str(city_root.absolute())
    assert (planned.resume, planned.payload, planned.notes) == (None, None, ())
    assert planned.clear is True  # --overwrite of a new run deletes an earlier one first
    assert not work.exists()
    quiet = plan(city_root, work, seed=7, overrides=TrainOverrides(eval_interval=0))
    assert (quiet.seed, quiet.val_samples, quiet.clear) == (7, [], False)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"given": {"keep_checkpoints": -1}}, InputError, "0 \\(keep all\\) or more, not -1"),
        ({"pretrained": Path("a"), "init_from": Path("b")}, InputError, "not both"),
        ({"given": {"cuda_graphs": True}}, InputError, "CUDA graphs need a CUDA device"),
        ({"info": DistInfo(rank=0, world_size=3)}, InputError, "does not split over 3"),
        ({"overrides": TrainOverrides(batch_size=8)}, InputError, "too few for a batch of 8"),
        ({"entry": FIVE_CLASSES}, SpecError, "num_classes does not match the dataset's classes"),
    ],
)
def test_bad_options_fail_in_planning(
    city_root: Path, tmp_path: Path, options: dict, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        plan(city_root, tmp_path / "w", **options)
    assert not (tmp_path / "w").exists()


def test_a_resumed_run_plans_from_its_own_entry_and_notes_the_changes(
    city_root: Path, tmp_path: Path
) -> None:
    entry = make_tiny_cityscapes_entry()
    stored = {"data_root": str(city_root), "precision": "bf16"}
    payload = {"run": {"seed": 5}}
    point = ResumePoint(tmp_path / "latest.pth", entry, stored, payload)
    planned = plan(
        city_root,
        tmp_path,
        entry=entry,
        resume=point,
        overwrite=True,
        overrides=TrainOverrides(iters=9),
        given={"precision": "fp32"},
    )
    assert planned.resume is point and planned.payload is payload
    assert (planned.seed, planned.clear, planned.entry.train.iters) == (5, False, 9)
    assert planned.settings.precision == "fp32"
    assert planned.notes == (
        "--max-iters 9 instead of the run's 4",
        "--precision fp32 instead of the run's bf16",
    )
    other = make_tiny_cityscapes_entry(name="other")
    with pytest.raises(InputError, match="holds a run of tiny-cityscapes, not of other"):
        plan(city_root, tmp_path, entry=other, resume=point)
    with pytest.raises(InputError, match="continues from its own weights"):
        plan(city_root, tmp_path, entry=entry, resume=point, pretrained=Path("a.pth"))
