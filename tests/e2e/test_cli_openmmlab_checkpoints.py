"""mmseg 1.x (mmengine) and 0.x (mmcv 1.x) training checkpoints through the real CLI, without
mmengine/mmcv and without --trust-checkpoint: the same masks, scores and fine-tuned weights as the
plain state dict inside them."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.engine.checkpoint import read_checkpoint
from isaseg_cli.zoo.spec import to_dict
from tests.helpers import TINY, TINY_TRAIN_OPTIONS, make_tiny_entry
from tests.openmmlab_checkpoints import write_mmcv_checkpoint, write_mmengine_checkpoint

runner = CliRunner()
# Names unlike the tiny entry's c0..c4, so the test sees where the class names come from.
CLASSES = ("road", "wall", "tree", "sky", "car")
PALETTE = [[128, 64, 128], [102, 102, 156], [107, 142, 35], [70, 130, 180], [0, 0, 142]]

Writer = Callable[..., Path]
VARIANTS: dict[str, Writer] = {
    "mmengine": write_mmengine_checkpoint,
    "mmengine-early": lambda *a, **k: write_mmengine_checkpoint(*a, old_format=True, **k),
    "mmcv": write_mmcv_checkpoint,
    "mmcv-numpy-palette": lambda *a, **k: write_mmcv_checkpoint(*a, numpy_palette=True, **k),
}


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def files(state, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each format, plus "plain": the bare state dict. The tiny model is not in the zoo, so the
    files for predict/eval also carry our entry; the OpenMMLab objects around it are real."""
    folder = tmp_path_factory.mktemp("openmmlab")
    ours = {"isaseg": {"entry": to_dict(make_tiny_entry())}}
    made = {"plain": folder / "plain.pth"}
    torch.save({"meta": ours, "state_dict": state}, made["plain"])
    for name, write in VARIANTS.items():
        made[name] = write(folder / f"{name}.pth", state, CLASSES, PALETTE, extra_meta=ours)
    return made


def test_the_files_hold_what_the_runners_write(files) -> None:
    """They name the OpenMMLab classes, which a plain weights-only load refuses."""
    for name, needed in (
        ("mmengine", b"mmengine.logging.history_buffer\nHistoryBuffer"),
        ("mmengine-early", b"mmengine.logging.message_hub\nMessageHub"),
        ("mmengine-early", b"mmengine.config.config\nConfigDict"),
        ("mmcv", b"mmcv.utils.config\nConfigDict"),
    ):
        with zipfile.ZipFile(files[name]) as archive:
            pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        assert needed in pickled, (name, needed)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(files[name], weights_only=True)
    loaded = read_checkpoint(files["mmengine"])
    assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"} <= set(loaded)
    assert loaded["message_hub"]["log_scalars"]["train/loss"].state["_log_history"].tolist() == [
        2.31,
        2.05,
    ]


def _predict(checkpoint: Path, image: Path, out: Path) -> np.ndarray:
    argv = ["predict", str(image), "--checkpoint", str(checkpoint), "--device", "cpu"]
    result = runner.invoke(app, [*argv, "--out", str(out), "--format", "color"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        return np.array(written.convert("RGB"))


@pytest.fixture(scope="module")
def plain_colors(files, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return _predict(files["plain"], TINY / "image.png", tmp_path_factory.mktemp("p") / "p.png")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_predict_gives_the_plain_state_dicts_masks(
    files, plain_colors, variant, tmp_path: Path
) -> None:
    plain = plain_colors
    colors = _predict(files[variant], TINY / "image.png", tmp_path / f"{variant}.png")
    # Same classes everywhere, drawn in the file's own palette (dataset_meta / PALETTE).
    plain_ids = {tuple(c): i for i, c in enumerate(np.unique(plain.reshape(-1, 3), axis=0))}
    assert len(plain_ids) > 1
    ids = {tuple(color): index for index, color in enumerate(PALETTE)}
    mapped = np.vectorize(lambda r, g, b: ids.get((r, g, b), -1))(*np.moveaxis(colors, 2, 0))
    assert (mapped >= 0).all()
    pairs = {(tuple(p), m) for p, m in zip(plain.reshape(-1, 3), mapped.reshape(-1), strict=True)}
    assert len(pairs) == len(plain_ids)  # one-to-one: the masks are equal up to the colours


@pytest.mark.parametrize("variant", ["mmengine", "mmcv"])
def test_eval_gives_the_plain_state_dicts_scores(files, variant, tmp_path: Path) -> None:
    root = write_synthetic_dataset("custom", tmp_path / "data", num_classes=5, num_images=2)
    scores = {}
    for name in ("plain", variant):
        out = tmp_path / f"{name}.json"
        args = ["eval", "--checkpoint", str(files[name]), "--data-root", str(root)]
        args += ["--device", "cpu", "--workers", "0", "--json-out", str(out)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        scores[name] = json.loads(out.read_text())
    assert scores[variant]["mIoU"] == scores["plain"]["mIoU"]
    assert [row["class"] for row in scores[variant]["per_class"]] == list(CLASSES)


@pytest.mark.usefixtures("one_thread")
def test_train_from_takes_the_weights_of_each_format(state, city_root, tmp_path: Path) -> None:
    """``train --from`` on files exactly as the runners write them (no isaseg meta at all)."""
    sources = {"plain": tmp_path / "plain.pth"}
    torch.save({"state_dict": state}, sources["plain"])
    for name in ("mmengine", "mmcv"):
        sources[name] = VARIANTS[name](tmp_path / f"{name}.pth", state, CLASSES, PALETTE)
    trained = {}
    for name, source in sources.items():
        work = tmp_path / f"work-{name}"
        args = ["train", "--data-root", str(city_root), "--work-dir", str(work)]
        args += ["--max-iters", "1", "--batch-size", "2", "--from", str(source)]
        args += ["--val-interval", "100", *TINY_TRAIN_OPTIONS]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        trained[name] = read_checkpoint(work / "latest.pth")["state_dict"]
    for name in ("mmengine", "mmcv"):
        assert trained[name].keys() == trained["plain"].keys()
        assert all(torch.equal(trained[name][k], v) for k, v in trained["plain"].items())
