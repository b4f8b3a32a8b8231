"""fit() end to end on a tiny model and a synthetic Cityscapes-layout dataset (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.engine.checkpoint import apply_weights, entry_from_meta, read_checkpoint
from isaseg_cli.engine.loading import load_model
from isaseg_cli.engine.progress import ProgressEvent
from isaseg_cli.engine.train.fit import fit
from isaseg_cli.errors import DatasetNotFoundError, InputError
from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import DataSpec, TestSpec, TrainSpec, ZooEntry
from tests.helpers import tiny_model_spec

pytestmark = pytest.mark.usefixtures("one_thread")


def city_entry(**train: object) -> ZooEntry:
    """The tiny model with the 19 Cityscapes classes, 64x64 crops from a 128x64 train scale."""
    settings: dict[str, object] = {
        "iters": 4,
        "batch_size": 2,
        "eval_interval": 2,
        "checkpoint_interval": 2,
        "workers": 0,
    }
    settings.update(train)
    return ZooEntry(
        name="tiny-cityscapes",
        model=tiny_model_spec(19),
        data=DataSpec(dataset="cityscapes", crop_size=(64, 64), train_scale=(128, 64)),
        test=TestSpec(scale=(128, 64)),
        train=TrainSpec(**settings),  # type: ignore[arg-type]
    )


def log_lines(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "log.jsonl").read_text().splitlines()]


def test_trains_validates_logs_and_writes_mmseg_checkpoints(
    city_root: Path, tmp_path: Path
) -> None:
    events: list[ProgressEvent] = []
    notes: list[str] = []
    work = tmp_path / "work"
    result = fit(
        city_entry(),
        data_root=city_root,
        work_dir=work,
        device="cpu",
        log_interval=2,
        on_progress=events.append,
        on_message=notes.append,
    )

    assert (result.start_iter, result.iterations, result.world_size) == (0, 4, 1)
    assert result.checkpoint == work / "iter_4.pth"
    assert {p.name for p in work.iterdir()} >= {
        "iter_2.pth",
        "iter_4.pth",
        "latest.pth",
        "best.pth",
    }
    assert (work / "latest.pth").resolve() == (work / "iter_4.pth").resolve()
    assert [e.completed for e in events if e.task == "train"] == [1, 2, 3, 4]
    assert any(e.task == "eval" for e in events)
    assert any("batch 2 = 1 process(es) x 2" in note for note in notes)

    lines = log_lines(work)
    train_lines = [line for line in lines if line["mode"] == "train"]
    assert [line["iter"] for line in train_lines] == [2, 4]
    for line in train_lines:
        assert {"loss", "decode", "aux", "lr", "it_s", "eta_s"} <= set(line)
        assert line["loss"] == pytest.approx(line["decode"] + line["aux"], rel=1e-5)
    assert [line["iter"] for line in lines if line["mode"] == "val"] == [2, 4]
    assert result.best_iter in (2, 4) and result.best_miou is not None

    payload = read_checkpoint(work / "latest.pth")
    assert payload["iter"] == 4 and payload["meta"]["iter"] == 4
    assert {"optimizer", "scheduler", "rng", "run"} <= set(payload)
    assert payload["meta"]["CLASSES"] == DATASETS["cityscapes"].classes
    assert entry_from_meta(payload["meta"]) == result.entry
    fresh = build_model(tiny_model_spec(19))
    assert list(payload["state_dict"]) == list(fresh.state_dict())  # mmseg's names and order
    apply_weights(fresh, payload, "latest.pth")  # strict
    for key, value in result.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    best = load_model(checkpoint=work / "best.pth")  # rebuilt from its meta alone
    assert best.entry.name == "tiny-cityscapes" and len(best.classes) == 19


def test_overfitting_one_image_drives_the_loss_down(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "one", num_images=1)
    entry = city_entry(iters=30, batch_size=1, lr=0.05, eval_interval=0, checkpoint_interval=30)
    data = DataSpec(
        dataset="cityscapes", crop_size=(64, 96), train_scale=(96, 64), ratio_range=(1, 1)
    )
    entry = ZooEntry(
        name=entry.name, model=entry.model, data=data, test=entry.test, train=entry.train
    )
    fit(entry, data_root=root, work_dir=tmp_path / "work", device="cpu", log_interval=1)
    losses = [line["loss"] for line in log_lines(tmp_path / "work")]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]


def test_interrupted_then_resumed_run_ends_with_the_same_weights(
    city_root: Path, tmp_path: Path
) -> None:
    # 2 iterations per epoch: the checkpoint at 3 is mid-epoch, where resuming is hardest.
    entry = city_entry(iters=6, checkpoint_interval=3, eval_interval=2)
    options = {"data_root": city_root, "device": "cpu", "log_interval": 2}
    whole = fit(entry, work_dir=tmp_path / "whole", **options)

    def stop_after_iteration_5(event: ProgressEvent) -> None:
        if event.task == "train" and event.completed == 5:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        fit(entry, work_dir=cut, on_progress=stop_after_iteration_5, **options)
    assert (cut / "latest.pth").resolve().name == "iter_3.pth"
    assert not list(cut.glob(".*tmp"))  # nothing half-written left behind

    resumed = fit(entry, work_dir=cut, resume=True, **options)
    assert resumed.start_iter == 3 and resumed.seed == whole.seed
    assert resumed.best_miou == whole.best_miou and resumed.best_iter == whole.best_iter
    assert resumed.losses == whole.losses  # the mean over iterations 5 and 6
    resumed_state = resumed.model.state_dict()
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed_state[key], value), key
    a, b = read_checkpoint(cut / "latest.pth"), read_checkpoint(tmp_path / "whole" / "latest.pth")
    assert a["iter"] == b["iter"] == 6
    assert a["scheduler"] == b["scheduler"]


def test_fine_tuning_from_a_5_class_checkpoint_in_bf16(
    city_root: Path, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    notes: list[str] = []
    entry = city_entry(iters=1, eval_interval=0)
    result = fit(
        entry,
        data_root=city_root,
        work_dir=tmp_path / "w",
        device="cpu",
        precision="bf16",
        init_from=tiny_checkpoint,
        on_message=notes.append,
    )
    assert result.weights is not None
    assert set(result.weights.reinitialised) == {
        "decode_head.conv_seg.weight",
        "decode_head.conv_seg.bias",
        "auxiliary_head.conv_seg.weight",
        "auxiliary_head.conv_seg.bias",
    }
    assert any(note.startswith("weights: loaded") for note in notes)
    state = read_checkpoint(tmp_path / "w" / "latest.pth")["state_dict"]
    assert state["decode_head.conv_seg.weight"].shape[0] == 19
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # autocast only


def test_resuming_without_a_checkpoint_is_an_error(city_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing to resume"):
        fit(city_entry(), data_root=city_root, work_dir=tmp_path / "w", device="cpu", resume=True)


def test_missing_data_root_fails_before_anything_is_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(DatasetNotFoundError, match="not found"):
        fit(city_entry(), data_root=tmp_path / "nowhere", work_dir=work, device="cpu")
    assert not work.exists()


def test_empty_train_split_is_an_error(tmp_path: Path) -> None:
    for folder in ("leftImg8bit/train/aachen", "gtFine/train/aachen"):
        (tmp_path / "city" / folder).mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no images"):
        fit(city_entry(), data_root=tmp_path / "city", work_dir=tmp_path / "w", device="cpu")


def test_missing_val_split_names_the_way_out(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "city", num_images=2)
    for split in ("leftImg8bit", "gtFine"):
        for path in sorted((root / split / "val").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (root / split / "val").rmdir()
    with pytest.raises(DatasetNotFoundError, match="--val-interval 0"):
        fit(city_entry(), data_root=root, work_dir=tmp_path / "w", device="cpu")


def test_unwritable_work_dir_is_an_error(city_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write to the work dir"):
        fit(city_entry(), data_root=city_root, work_dir=blocker / "run", device="cpu")


def test_batch_must_split_over_the_processes(
    city_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(InputError, match="does not split over 3"):
        fit(city_entry(), data_root=city_root, work_dir=tmp_path / "w", device="cpu")


def test_pretrained_and_init_from_are_exclusive(city_root: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not both"):
        fit(
            city_entry(),
            data_root=city_root,
            work_dir=tmp_path / "w",
            device="cpu",
            pretrained=tmp_path / "a.pth",
            init_from=tmp_path / "b.pth",
        )
