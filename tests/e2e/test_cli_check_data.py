"""`isaseg check-data` on synthetic datasets with planted defects, and the same checks stopping
`isaseg train` and `isaseg eval` before they start."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from isaseg_cli.cli import _render, app
from isaseg_cli.data.synthetic import write_synthetic_dataset

runner = CliRunner()
FINDING_ROW = re.compile(r"^│ ([a-z ]+?)\s+│ (.+?)\s+│$", re.MULTILINE)


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide console, so each finding is one table row as a person sees it in a wide terminal.

    Console.width's setter stores ``_width``; patching that restores the console's own
    sizing (None: the terminal's, or $COLUMNS) afterwards, where patching ``width`` would
    freeze every later test at the width read here."""
    monkeypatch.setattr(_render.console, "_width", 400)


def check(root: Path, *extra: str):
    return runner.invoke(app, ["check-data", "--data-root", str(root), "--workers", "0", *extra])


def findings_table(output: str) -> list[tuple[str, str]]:
    table = output.split("Findings (", 1)[1]
    return [(kind, message) for kind, message in FINDING_ROW.findall(table) if kind != "kind"]


@pytest.fixture
def damaged(tmp_path: Path) -> dict[str, Path]:
    """A custom dataset (4 classes, 64x96) with one planted defect per file of its train split."""
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_images=4)
    labels, images = root / "labels" / "train", root / "images" / "train"
    colour = labels / "img_000.png"
    index = np.array(Image.open(colour))
    palette = np.array([(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)] + [(9, 9, 9)] * 252)
    Image.fromarray(palette[index].astype(np.uint8), "RGB").save(colour)
    out_of_range = labels / "img_001.png"
    values = np.array(Image.open(out_of_range))
    values[:5, :5] = 9
    Image.fromarray(values).save(out_of_range)
    small = labels / "img_002.png"
    Image.open(small).resize((80, 48), Image.NEAREST).save(small)
    unlabelled = images / "img_007.png"
    cv2.imwrite(str(unlabelled), np.zeros((64, 96, 3), np.uint8))
    orphan = labels / "img_099.png"
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(orphan)
    return {
        "root": root,
        "channels": colour,
        "values": out_of_range,
        "size": small,
        "missing label": unlabelled,
        "orphan label": orphan,
    }


def test_a_clean_dataset_exits_0_with_its_statistics(tmp_path: Path) -> None:
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_images=4)
    out = tmp_path / "check.json"
    result = check(root, "--classes", "a,b,c,d", "--split", "train", "--split", "val",
                   "--json-out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Findings" not in result.output and "8 images, 0 findings" in result.output
    report = json.loads(out.read_text())
    assert report["clean"] and report["findings"] == [] and report["images"] == 8
    labels = [np.array(Image.open(p)) for p in sorted(root.glob("labels/*/*.png"))]
    counts = np.bincount(np.concatenate([label.ravel() for label in labels]), minlength=256)
    assert report["label_values"] == {str(v): int(n) for v, n in enumerate(counts) if n}
    assert [c["pixels"] for c in report["classes"]] == counts[:4].tolist()
    assert report["ignored_pixels"] == counts[255]
    assert report["ignored_share"] == pytest.approx(counts[255] / counts.sum())
    printed = re.findall(r"^│ ([abcd])\s+│\s+(\d+) │", result.output, re.MULTILINE)
    assert printed == [(c["class"], str(c["pixels"])) for c in report["classes"]]


def test_each_planted_defect_is_reported_with_its_file(damaged: dict[str, Path], tmp_path) -> None:
    out = tmp_path / "check.json"
    result = check(damaged["root"], "--classes", "4", "--json-out", str(out))
    assert result.exit_code == 1, result.output
    rows = findings_table(result.output)
    report = json.loads(out.read_text())
    assert len(rows) == len(report["findings"]) == 5
    for kind in ("channels", "values", "size", "missing label", "orphan label"):
        path = str(damaged[kind])
        assert any(k == kind and path in message for k, message in rows), (kind, rows)
        assert any(f["kind"] == kind and f["file"] == path for f in report["findings"])
    messages = dict(rows)
    assert "holds 5 colours ((0, 0, 0), (0, 0, 255)," in messages["channels"]  # 4 classes, ignore
    assert "value 9 (25 pixels)" in messages["values"]
    assert "0..3, 255 = ignore" in messages["values"]
    assert "80x48 but image" in messages["size"] and "96x64" in messages["size"]
    assert report["images"] == 5 and not report["clean"]


def test_more_workers_find_the_same(damaged: dict[str, Path], tmp_path: Path) -> None:
    reports = []
    for workers in ("0", "2"):
        out = tmp_path / f"check{workers}.json"
        args = ["check-data", "--data-root", str(damaged["root"]), "--classes", "4"]
        result = runner.invoke(app, [*args, "--workers", workers, "--json-out", str(out)])
        assert result.exit_code == 1, result.output
        reports.append({k: v for k, v in json.loads(out.read_text()).items() if k != "seconds"})
    assert reports[0] == reports[1]


def test_a_dataset_stored_as_1_to_k_asks_for_reduce_zero_label(tmp_path: Path) -> None:
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_images=4)
    shifted = []
    for path in sorted((root / "labels" / "train").glob("*.png")):
        label = np.array(Image.open(path))
        stored = np.where(label == 255, 0, label + 1).astype(np.uint8)  # 0 = unlabelled
        Image.fromarray(stored).save(path)
        if (stored == 4).any():
            shifted.append(str(path))
    assert shifted
    plain = check(root, "--classes", "4")
    assert plain.exit_code == 1
    assert "set reduce_zero_label" in plain.output
    flagged = [message for kind, message in findings_table(plain.output) if kind == "values"]
    assert sorted(m.split()[1] for m in flagged) == shifted
    reduced = check(root, "--classes", "4", "--reduce-zero-label")
    assert reduced.exit_code == 0, reduced.output
    clean = write_synthetic_dataset("custom", tmp_path / "clean", num_images=4)
    wrongly = check(clean, "--classes", "4", "--reduce-zero-label")
    assert wrongly.exit_code == 1 and "--no-reduce-zero-label" in wrongly.output


def test_voc_split_file_names_without_files_are_named(tmp_path: Path) -> None:
    root = write_synthetic_dataset("voc12aug", tmp_path / "voc", num_images=3)
    image = root / "JPEGImages" / "2008_000001.jpg"
    label = root / "SegmentationClass" / "2008_000002.png"
    image.unlink()
    label.unlink()
    result = check(root, "--dataset", "voc", "--split", "val")
    assert result.exit_code == 1
    rows = findings_table(result.output)
    assert [(k, str(image) in m or str(label) in m) for k, m in rows] == [
        ("missing image", True),
        ("missing label", True),
    ]


def test_cannot_run_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = check(tmp_path / "nowhere", "--dataset", "cityscapes")
    assert missing.exit_code == 2
    assert "data root" in missing.output and "leftImg8bit" in missing.output
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_images=2)
    no_classes = check(root)
    assert no_classes.exit_code == 2 and "--classes" in no_classes.output
    empty = root / "images" / "empty"
    empty.mkdir()
    (root / "labels" / "empty").mkdir()
    nothing = check(root, "--classes", "4", "--split", "empty")
    assert nothing.exit_code == 2 and "no images found" in nothing.output
    assert "Traceback" not in missing.output + no_classes.output + nothing.output


def test_eval_and_train_stop_with_the_finding_check_data_reports(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Sizes and channel counts are checked from headers before a model is loaded or built."""
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_images=2, num_classes=5)
    label = root / "labels" / "val" / "img_001.png"
    Image.open(label).convert("RGB").save(label)
    out = tmp_path / "check.json"
    args = ["--classes", "5", "--split", "val", "--json-out", str(out)]
    assert check(root, *args).exit_code == 1
    message = json.loads(out.read_text())["findings"][0]["message"]
    assert message.startswith(f"label {label} has 3 channels (RGB)")
    eval_args = ["eval", "--checkpoint", str(tiny_checkpoint), "--data-root", str(root)]
    evaluated = runner.invoke(app, [*eval_args, "--device", "cpu"])
    assert evaluated.exit_code == 2 and message.split(";")[0] in evaluated.output
    train_label = root / "labels" / "train" / "img_000.png"
    Image.open(train_label).resize((10, 10)).save(train_label)
    trained = runner.invoke(
        app,
        ["train", "--dataset", "custom", "--classes", "a,b,c,d,e", "--data-root", str(root),
         "--work-dir", str(tmp_path / "work"), "--device", "cpu", "--pretrained", "none"],
    )  # fmt: skip
    assert trained.exit_code == 2
    assert f"label {train_label} is 10x10 but image" in trained.output
    assert not (tmp_path / "work").exists()
