"""`isaseg make-synthetic`: a dataset and a random-weight checkpoint that eval and train accept."""

from __future__ import annotations

import json

import cv2
import pytest
from typer.testing import CliRunner

from isaseg_cli.cli import app
from tests.helpers import make_tiny_cityscapes_entry

runner = CliRunner()


def test_writes_the_layout_a_dataset_reader_expects(tmp_path) -> None:
    root = tmp_path / "voc"
    result = runner.invoke(
        app,
        ["make-synthetic", str(root), "--dataset", "voc12aug", "--images", "3", "--size", "40x56"],
    )
    assert result.exit_code == 0, result.output
    assert f"Wrote 6 images with labels (voc12aug layout, 3 per split, 40x56) under {root}" in (
        " ".join(result.output.split())
    )
    images = sorted((root / "JPEGImages").glob("*.jpg"))
    assert len(images) == 9  # train, val and the SBD-only aug names
    assert cv2.imread(str(images[0])).shape == (40, 56, 3)
    assert (root / "ImageSets" / "Segmentation" / "val.txt").read_text().count("\n") == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "40"], "--size takes HEIGHTxWIDTH"),
        (["--model", "isanet_r50_cityscapes"], "add --checkpoint FILE"),
        (["--dataset", "custom", "--num-classes", "300"], "2..255 classes"),
        (["--checkpoint", "c.pth", "--model", "nope"], "unknown model 'nope'"),
        (["--checkpoint", "c.pth", "--dataset", "ade20k", "--model", "isanet_r50_cityscapes"],
         "is a cityscapes model"),
    ],
)  # fmt: skip
def test_bad_options_fail_before_writing(tmp_path, args, message) -> None:
    root = tmp_path / "new"
    result = runner.invoke(
        app,
        ["make-synthetic", str(root), *[str(tmp_path / a) if a == "c.pth" else a for a in args]],
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not root.exists() or not any(root.iterdir())
    assert not (tmp_path / "c.pth").exists()


def test_never_writes_into_a_used_folder_or_over_a_file(tmp_path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["make-synthetic", str(used)])
    assert result.exit_code == 2 and "is not an empty folder" in result.output
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    existing = tmp_path / "c.pth"
    existing.write_bytes(b"old")
    result = runner.invoke(
        app, ["make-synthetic", str(tmp_path / "d"), "--checkpoint", str(existing)]
    )
    assert result.exit_code == 2 and "exists" in result.output and existing.read_bytes() == b"old"


def test_a_custom_dataset_and_checkpoint_evaluate_offline(tmp_path, tiny_zoo) -> None:
    tiny_zoo(make_tiny_cityscapes_entry())  # a zoo architecture at test size
    root, checkpoint = tmp_path / "mine", tmp_path / "mine.pth"
    args = ["make-synthetic", str(root), "--dataset", "custom", "--num-classes", "3"]
    result = runner.invoke(app, [*args, "--size", "32x48", "--checkpoint", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert "tiny-cityscapes with random weights, tested at the images' 32x48" in result.output
    out = tmp_path / "eval.json"
    evaluated = runner.invoke(
        app,
        ["eval", "--checkpoint", str(checkpoint), "--data-root", str(root), "--workers", "0",
         "--device", "cpu", "--json-out", str(out)],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    payload = json.loads(out.read_text())
    assert payload["dataset"] == "custom" and payload["images"] == 4
    assert [row["class"] for row in payload["per_class"]] == ["class0", "class1", "class2"]
    assert payload["settings"]["test"]["scale"] == [48, 32]
    assert payload["published_mIoU"] is None and "not a zoo entry" not in evaluated.output
