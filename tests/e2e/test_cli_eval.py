"""`isaseg eval` and `isaseg convert-cityscapes` end to end: tiny checkpoint, synthetic data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.engine import evaluate as evaluate_module
from isaseg_cli.engine.checkpoint import build_meta, save_checkpoint
from isaseg_cli.zoo.spec import PublishedSpec, WeightsSpec
from tests.helpers import TINY, TINY_CLASSES, make_tiny_entry
from tests.hostile import counting_server, tmpfs, write_png_bomb

runner = CliRunner()
ROW = re.compile(r"│ (c\d)\s+│\s+([\d.]+|-)\s+│\s+([\d.]+|-)\s+│")
PALETTE = tuple((40 * i, 255 - 40 * i, 90) for i in range(len(TINY_CLASSES)))
SUMMARY = re.compile(r"│ ([\d.]+)\s+│\s+([\d.]+)\s+│\s+([\d.]+)\s+│\s+(\S+)\s+│\s+(\S+)\s+│")


@pytest.fixture(scope="module")
def custom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset("custom", tmp_path_factory.mktemp("custom"), num_classes=5)


@pytest.fixture
def fresh_root(tmp_path: Path) -> Path:
    """A dataset a test may damage."""
    return write_synthetic_dataset("custom", tmp_path / "custom", num_classes=5)


PUBLISHED = PublishedSpec(miou=50.0, miou_ms_flip=55.5, train_mem_gb=1.0, inference_ms=1.0, fps=1.0)


@pytest.fixture
def published_checkpoint(tmp_path: Path, tiny_zoo) -> Path:
    """The tiny weights as a zoo entry's published file: the (patched) zoo entry carries its
    figures and the SHA-256 prefix of this very file, as a real entry's file name does."""
    entry = dataclasses.replace(
        make_tiny_entry(),
        test=dataclasses.replace(make_tiny_entry().test, scale=(96, 64), ms_ratios=(1.0,)),
        published=PUBLISHED,
    )
    state = torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]
    path = save_checkpoint(
        tmp_path / "tiny.pth",
        {"meta": build_meta(entry, TINY_CLASSES, PALETTE), "state_dict": state},
    )
    prefix = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    weights = WeightsSpec(url=f"http://127.0.0.1:9/tiny-{prefix}.pth", sha256=prefix)
    tiny_zoo(dataclasses.replace(entry, weights=weights))
    return path


def run_eval(checkpoint: Path, root: Path, *extra: str):
    args = ["eval", "--checkpoint", str(checkpoint), "--data-root", str(root)]
    return runner.invoke(app, [*args, "--device", "cpu", "--workers", "0", *extra])


def number(text: str) -> float | None:
    return None if text in ("-", "n/a") else float(text)


def test_json_holds_the_numbers_of_the_printed_tables(
    tiny_checkpoint, custom_root, tmp_path
) -> None:
    out = tmp_path / "eval.json"
    result = run_eval(tiny_checkpoint, custom_root, "--json-out", str(out))
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["images"] == 4 and payload["model"] == "tiny-test" and not payload["partial"]
    assert payload["settings"]["split"] == "val" and payload["settings"]["test"]["mode"] == "whole"
    rows = ROW.findall(result.output)
    assert [name for name, _, _ in rows] == list(TINY_CLASSES)
    for (name, iou, acc), record in zip(rows, payload["per_class"], strict=True):
        assert record == {"class": name, "IoU": number(iou), "Acc": number(acc)}
    aacc, miou, macc, published, diff = SUMMARY.search(result.output).groups()
    assert [float(aacc), float(miou), float(macc)] == [
        payload["aAcc"],
        payload["mIoU"],
        payload["mAcc"],
    ]
    assert (published, diff) == ("n/a", "n/a") and payload["published_mIoU"] is None
    assert "4 images" in result.output


def test_published_comparison_only_on_the_whole_val_split(
    published_checkpoint, custom_root, tmp_path
):
    out = tmp_path / "eval.json"
    full = run_eval(published_checkpoint, custom_root, "--json-out", str(out))
    payload = json.loads(out.read_text())
    _, miou, _, published, diff = SUMMARY.search(full.output).groups()
    assert payload["published_mIoU"] == float(published) == 50.0
    assert payload["difference"] == float(diff) == round(float(miou) - 50.0, 2)
    assert payload["published_note"] is None and "not compared" not in full.output
    limited = run_eval(published_checkpoint, custom_root, "--limit", "3", "--json-out", str(out))
    assert limited.exit_code == 0, limited.output
    assert SUMMARY.search(limited.output).groups()[3:] == ("n/a", "n/a")
    assert json.loads(out.read_text())["images"] == 3
    assert "not compared: 3 of 4 val images (--limit)" in limited.output
    ms = run_eval(published_checkpoint, custom_root, "--ms-flip", "--scales", "1.0")
    assert ms.exit_code == 0, ms.output
    assert "published mIoU (ms+flip)" in ms.output and "55.50" in ms.output
    alone = run_eval(published_checkpoint, custom_root, "--scales", "1.0")
    assert alone.exit_code == 2
    assert alone.output.strip() == "error: --scales sets the --ms-flip ratios; add --ms-flip"


def test_published_comparison_needs_the_entrys_own_settings(published_checkpoint, custom_root):
    result = run_eval(published_checkpoint, custom_root, "--set", "test.scale=128,64")
    assert result.exit_code == 0, result.output
    assert SUMMARY.search(result.output).groups()[3:] == ("n/a", "n/a")
    assert "not compared: the test settings differ" in result.output


def test_published_comparison_needs_the_zoo_weights(published_checkpoint, custom_root, tmp_path):
    """Same entry, other weights (a retrained or random file): the checksum tells them apart."""
    payload = torch.load(published_checkpoint, weights_only=True)
    payload["state_dict"] = {k: v.clone() + 0 for k, v in payload["state_dict"].items()}
    payload["meta"]["isaseg"]["retrained"] = True
    other = save_checkpoint(tmp_path / "other.pth", payload)
    result = run_eval(other, custom_root)
    assert result.exit_code == 0, result.output
    assert SUMMARY.search(result.output).groups()[3:] == ("n/a", "n/a")
    assert "other.pth is not tiny-test's published weights" in result.output


def test_save_dir_writes_readable_index_pngs(tiny_checkpoint, custom_root, tmp_path) -> None:
    saved, report = tmp_path / "preds", tmp_path / "e.json"
    outputs = ["--save-dir", str(saved), "--json-out", str(report)]
    result = run_eval(tiny_checkpoint, custom_root, "--limit", "2", *outputs)
    assert result.exit_code == 0, result.output
    assert f"predictions: 2 file(s) in {saved}" in result.output
    assert f"JSON: {report}" in result.output and report.is_file()
    files = sorted(saved.glob("*.png"))
    assert [f.name for f in files] == ["img_000.png", "img_001.png"]
    for file in files:
        with Image.open(file) as mask:
            assert mask.mode == "P" and mask.size == (96, 64)
            assert np.array(mask).max() < len(TINY_CLASSES)


def test_save_dir_keeps_earlier_predictions_unless_overwrite(
    tiny_checkpoint, custom_root, tmp_path
) -> None:
    saved = tmp_path / "preds"
    first = run_eval(tiny_checkpoint, custom_root, "--limit", "2", "--save-dir", str(saved))
    assert first.exit_code == 0, first.output
    (saved / "img_000.png").write_bytes(b"earlier run")  # stands for another run's prediction
    before = {path.name: path.read_bytes() for path in saved.iterdir()}
    again = run_eval(tiny_checkpoint, custom_root, "--limit", "2", "--save-dir", str(saved))
    assert again.exit_code == 2
    assert again.output.strip().splitlines()[-1].startswith(f"error: {saved / 'img_000.png'}")
    assert "--overwrite" in again.output and "Traceback" not in again.output
    assert {path.name: path.read_bytes() for path in saved.iterdir()} == before
    args = ["--limit", "2", "--save-dir", str(saved), "--overwrite"]
    replaced = run_eval(tiny_checkpoint, custom_root, *args)
    assert replaced.exit_code == 0, replaced.output
    assert (saved / "img_000.png").read_bytes() != b"earlier run"


def test_ctrl_c_prints_the_partial_result(tiny_checkpoint, custom_root, tmp_path, monkeypatch):
    real = evaluate_module.infer_scores
    calls = []

    def interrupted_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "infer_scores", interrupted_on_third)
    out = tmp_path / "eval.json"
    result = run_eval(tiny_checkpoint, custom_root, "--json-out", str(out))
    assert result.exit_code == 130
    assert "2 images (partial: interrupted)" in result.output
    assert "interrupted after 2 of 4 image(s)" in result.output and f"JSON: {out}" in result.output
    payload = json.loads(out.read_text())
    assert payload["partial"] and payload["images"] == 2


def test_missing_data_root_fails_before_any_download(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ISASEG_HOME", str(cache))
    monkeypatch.setenv("ISASEG_MIRROR", "http://127.0.0.1:9")
    monkeypatch.setenv("ISASEG_DATA", str(tmp_path / "data"))
    result = runner.invoke(app, ["eval", "--device", "cpu"])  # default zoo model, Cityscapes
    assert result.exit_code == 2
    assert f"data root {tmp_path / 'data' / 'cityscapes'} not found" in result.output
    assert not cache.exists() or not any(cache.rglob("*.pth*"))


def test_unwritable_outputs_fail_before_any_download(tmp_path, city_root, monkeypatch) -> None:
    with counting_server() as server, tmpfs(tmp_path / "ro", "size=64k,ro") as read_only:
        monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("ISASEG_MIRROR", server.url)
        monkeypatch.delenv("ISASEG_MODEL", raising=False)
        base = ["eval", "--data-root", str(city_root), "--device", "cpu"]
        for flag, path in (
            ("--save-dir", read_only / "preds"),
            ("--json-out", read_only / "e.json"),
        ):
            result = runner.invoke(app, [*base, flag, str(path)])
            assert result.exit_code == 2
            line = f"error: {flag} {path} cannot be written ({read_only}): Read-only file system; "
            assert result.output.strip() == line + "choose a writable place"
        assert server.requests == 0


def test_an_image_too_large_to_decode_is_named(tiny_checkpoint, fresh_root) -> None:
    bomb = write_png_bomb(fresh_root / "images" / "val" / "img_001.png", 30_000, 30_000)
    result = run_eval(tiny_checkpoint, fresh_root, "--workers", "1")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        f"{bomb} is 30000x30000 (900,000,000 pixels), which exceeds --max-pixels" in result.output
    )


def test_an_inference_error_is_named(tiny_checkpoint, fresh_root, monkeypatch) -> None:
    real, calls = evaluate_module.infer_scores, []

    def out_of_memory_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "infer_scores", out_of_memory_on_second)
    result = run_eval(tiny_checkpoint, fresh_root)
    assert result.exit_code == 2
    image = fresh_root / "images" / "val" / "img_001.png"
    assert result.output.strip().splitlines()[-1] == f"error: {image}: MemoryError"


def test_duplicate_split_entries_are_warned_about(tmp_path) -> None:
    root = write_synthetic_dataset("voc12aug", tmp_path / "voc", num_images=2, num_classes=5)
    split = root / "ImageSets" / "Segmentation" / "val.txt"
    names = split.read_text().split()
    split.write_text("\n".join([*names, names[0]]) + "\n")
    tiny = make_tiny_entry()
    entry = dataclasses.replace(
        tiny, data=dataclasses.replace(tiny.data, dataset="voc12aug", img_suffix="")
    )
    state = torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]
    checkpoint = save_checkpoint(
        tmp_path / "voc.pth",
        {"meta": build_meta(entry, TINY_CLASSES, PALETTE), "state_dict": state},
    )
    result = run_eval(checkpoint, root)
    assert result.exit_code == 0, result.output
    assert "warning: 1 image(s) are listed more than once in the split" in result.output
    assert f"{len(names) + 1} images" in result.output  # counted as listed, as mmseg does


def test_missing_label_is_named(tiny_checkpoint, fresh_root) -> None:
    missing = fresh_root / "labels" / "val" / "img_001.png"
    missing.unlink()
    result = run_eval(tiny_checkpoint, fresh_root)
    assert result.exit_code == 2 and str(missing) in result.output


def test_unreadable_image_is_named(tiny_checkpoint, fresh_root) -> None:
    broken = fresh_root / "images" / "val" / "img_002.png"
    broken.write_bytes(b"\x89PNG not really")
    result = run_eval(tiny_checkpoint, fresh_root, "--workers", "1")
    assert result.exit_code == 2 and str(broken) in result.output
    assert "Traceback" not in result.output


def test_wrong_label_value_is_named(tiny_checkpoint, fresh_root) -> None:
    label = fresh_root / "labels" / "val" / "img_003.png"
    Image.fromarray(np.full((64, 96), 7, dtype=np.uint8)).save(label)
    result = run_eval(tiny_checkpoint, fresh_root)
    assert result.exit_code == 2
    assert f"label {label} holds value 7" in result.output


def test_label_ids_format_needs_a_cityscapes_model(tiny_checkpoint, custom_root, tmp_path) -> None:
    result = run_eval(tiny_checkpoint, custom_root, "--save-format", "labelids", "--save-dir", "x")
    assert result.exit_code == 2 and "labelids" in result.output


def test_convert_cityscapes_writes_train_ids(tmp_path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "cityscapes", num_images=2)
    originals = {p: np.array(Image.open(p)) for p in root.rglob("*_gtFine_labelTrainIds.png")}
    for path in originals:
        path.unlink()
    hint = runner.invoke(app, ["eval", "--data-root", str(root), "--device", "cpu"])
    assert hint.exit_code == 2 and "convert" in hint.output
    result = runner.invoke(app, ["convert-cityscapes", str(root)])
    assert result.exit_code == 0, result.output
    assert f"Wrote {len(originals)} " in result.output and len(originals) == 4
    for path, original in originals.items():
        np.testing.assert_array_equal(np.array(Image.open(path)), original)
    missing = runner.invoke(app, ["convert-cityscapes", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "nowhere" in missing.output


@pytest.mark.dist
def test_torchrun_two_processes_match_one(tiny_checkpoint, custom_root, tmp_path) -> None:
    single = tmp_path / "single.json"
    assert run_eval(tiny_checkpoint, custom_root, "--json-out", str(single)).exit_code == 0
    shared = tmp_path / "dist.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "isaseg_cli", "eval", "--checkpoint", str(tiny_checkpoint),
        "--data-root", str(custom_root), "--device", "cpu", "--workers", "0",
        "--json-out", str(shared),
    ]  # fmt: skip
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = json.loads(single.read_text()), json.loads(shared.read_text())
    assert two["images"] == one["images"] == 4
    for key in ("aAcc", "mIoU", "mAcc", "per_class"):
        assert two[key] == one[key]
