"""`isaseg predict --tile`: the masks of the full-canvas slide, confidence maps and probabilities
for many images, --min-confidence, per-image JSON, GeoTIFF in and out, and bombs refused."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.engine.infer.confidence import IGNORE_GREY, IGNORE_INDEX
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import load_model
from tests.helpers import TINY, run_measured
from tests.hostile import write_png_bomb

runner = CliRunner()
PEAK_BOUND_MB = 1500  # torch and the tiny model; decoding the 60,000 x 60,000 PNG: 10.8 GB


def _image(path: Path, seed: int = 0) -> Path:
    image = cv2.imread(str(TINY / "image.png"))  # 97 x 141
    cv2.imwrite(str(path), np.ascontiguousarray(np.roll(image, 9 * seed, axis=1)))
    return path


def _predict(checkpoint: Path, *args: str | Path):
    argv = ["predict", *map(str, args), "--device", "cpu", "--checkpoint", str(checkpoint)]
    return runner.invoke(app, argv, env={"COLUMNS": "300"})


def _indices(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


@pytest.fixture(scope="module")
def loaded(tiny_checkpoint):
    return load_model(checkpoint=tiny_checkpoint)


def test_tile_equals_slide_and_writes_confidence(tmp_path, tiny_checkpoint, loaded) -> None:
    source = _image(tmp_path / "a.png")
    slide = _predict(
        tiny_checkpoint,
        source,
        "--out",
        tmp_path / "s.png",
        "--crop-size",
        "64x64",
        "--stride",
        "43x43",
    )
    assert slide.exit_code == 0, slide.output
    args = ["--out", tmp_path / "t.png", "--tile", "64x64", "--tile-stride", "43x43"]
    args += ["--confidence", tmp_path / "c.npy", "--json-out", tmp_path / "r.json"]
    tiled = _predict(tiny_checkpoint, source, *args)
    assert tiled.exit_code == 0, tiled.output
    assert np.array_equal(_indices(tmp_path / "t.png"), _indices(tmp_path / "s.png"))
    _, probs = Segmenter(loaded, device="cpu", crop=(64, 64), stride=(43, 43))(
        source, return_probs=True
    )
    confidence = np.load(tmp_path / "c.npy")
    assert confidence.dtype == np.float16 and confidence.shape == (97, 141)
    assert np.abs(confidence.astype(np.float32) - probs.max(0)).max() <= 1e-3
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["confidence"] == [str(tmp_path / "c.npy")]
    (entry,) = report["per_image"]
    assert entry["input"] == str(source)
    assert entry["mean_confidence"] == pytest.approx(float(probs.max(0).mean()), abs=1e-5)
    counts = np.bincount(probs.argmax(0).ravel(), minlength=5)
    assert entry["class_pixels"] == {loaded.classes[i]: int(n) for i, n in enumerate(counts) if n}


def test_many_images_probs_confidence_and_min_confidence(tmp_path, tiny_checkpoint, loaded) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sources = [_image(folder / "a.png"), _image(folder / "b.png", seed=1)]
    out, threshold = tmp_path / "out", "0.45"
    args = [folder, "--out", out, "--probs", tmp_path / "probs", "--confidence", tmp_path / "conf"]
    args += ["--uncertainty", "margin", "--min-confidence", threshold, "--overlay", tmp_path / "ov"]
    result = _predict(tiny_checkpoint, *args)
    assert result.exit_code == 0, result.output
    segmenter = Segmenter(loaded, device="cpu", uncertainty="margin")
    for source in sources:
        _, probs, margin = segmenter(source, return_probs=True, return_confidence=True)
        saved = np.load(
            tmp_path / "probs" / "a.npz" if source.stem == "a" else tmp_path / "probs" / "b.npz"
        )
        assert saved["probs"].dtype == np.float16
        np.testing.assert_allclose(saved["probs"].astype(np.float32), probs, atol=1e-3)
        png = _indices(tmp_path / "conf" / f"{source.stem}.png")
        assert png.dtype == np.uint8 and np.abs(png - np.rint(margin * 255)).max() <= 1
        below = probs.max(0) < float(threshold)
        assert below.any() and (~below).any()
        mask = _indices(out / f"{source.stem}.png")
        assert np.array_equal(mask == IGNORE_INDEX, below)
        assert np.array_equal(mask[~below], probs.argmax(0)[~below])
        overlay = cv2.imread(str(tmp_path / "ov" / f"{source.stem}.png"))[..., ::-1]
        original = cv2.imread(str(source))[..., ::-1]
        grey = (original * 0.5 + np.array(IGNORE_GREY) * 0.5).astype(np.uint8)
        assert np.array_equal(overlay[below], grey[below])


def test_geotiff_in_geotiff_mask_out(tmp_path, tiny_checkpoint) -> None:
    tifffile = pytest.importorskip("tifffile")
    folder = tmp_path / "tiles"
    folder.mkdir()
    rgb = cv2.imread(str(TINY / "image.png"))[..., ::-1]
    geo = [
        (33550, 12, 3, (0.5, 0.5, 0.0), True),
        (34735, 3, 8, (1, 1, 0, 1, 2048, 0, 1, 4326), True),
    ]
    tifffile.imwrite(folder / "scene.tif", rgb, photometric="rgb", extratags=geo)
    result = _predict(tiny_checkpoint, folder, "--out", tmp_path / "out", "--tile", "64x64")
    assert result.exit_code == 0, result.output
    png = tmp_path / "scene.png"
    cv2.imwrite(str(png), rgb[..., ::-1])
    assert (
        _predict(tiny_checkpoint, png, "--out", tmp_path / "ref.png", "--tile", "64x64").exit_code
        == 0
    )
    with tifffile.TiffFile(tmp_path / "out" / "scene.tif") as tif:
        page = tif.pages[0]
        assert np.array_equal(page.asarray(), _indices(tmp_path / "ref.png"))
        assert page.tags[33550].value == (0.5, 0.5, 0.0)
        assert page.tags[34735].value == geo[1][3]


def test_bad_tile_options_fail_in_one_line(tmp_path, tiny_checkpoint) -> None:
    source = _image(tmp_path / "a.png")
    second = _image(tmp_path / "b.png", seed=1)
    cases = {
        "--probs holds K x H x W": ["--tile", "64x64", "--probs", tmp_path / "p.npy"],
        "--tile replaces --mode": ["--tile", "64x64", "--mode", "slide"],
        "--tile-stride needs --tile": ["--tile-stride", "32x32"],
        "must not exceed --tile": ["--tile", "32x32", "--tile-stride", "40x40"],
        "--tile takes HEIGHTxWIDTH": ["--tile", "big"],
        "--scale takes native, zoo or WIDTHxHEIGHT": ["--scale", "large"],
        "is one image's file": [second, "--probs", tmp_path / "p.npz"],
        "--confidence": ["--confidence", tmp_path / "c.jpg"],
    }
    for expected, args in cases.items():
        result = _predict(tiny_checkpoint, source, "--out", tmp_path / "out", *args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (expected, lines)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("max_pixels", [None, "10000000000"])
def test_png_bomb_is_refused_through_tile(tmp_path, tiny_checkpoint, max_pixels) -> None:
    bomb = write_png_bomb(tmp_path / "bomb.png", 60_000, 60_000)
    argv = [
        sys.executable,
        "-m",
        "isaseg_cli",
        "predict",
        str(bomb),
        "--out",
        str(tmp_path / "m.png"),
    ]
    argv += ["--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--tile", "64x64"]
    argv += ["--max-pixels", max_pixels] if max_pixels else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
    code, output, peak_mb = run_measured(argv, env)
    assert code == 1, output
    assert "Traceback" not in output
    errors = [
        line for line in output.splitlines() if line.startswith("error: ") and str(bomb) in line
    ]
    assert len(errors) == 1, output
    limit = "exceeds --max-pixels 1,073,741,824" if max_pixels is None else "beyond OpenCV's limit"
    assert limit in errors[0] and "--tile" in errors[0], errors
    assert not (tmp_path / "m.png").exists()
    assert peak_mb < PEAK_BOUND_MB, f"peak RSS {peak_mb:.0f} MB"


def test_exported_networks_report_stats_and_refuse_torch_only_options(
    tmp_path, tiny_onnx, tiny_checkpoint
) -> None:
    source = _image(tmp_path / "a.png")
    onnx = tiny_onnx["path"]
    args = [
        "--out",
        tmp_path / "m.png",
        "--probs",
        tmp_path / "p.npy",
        "--json-out",
        tmp_path / "r.json",
    ]
    result = _predict(onnx, source, *args)
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((tmp_path / "r.json").read_text())["per_image"]
    probs = np.load(tmp_path / "p.npy")
    counts = np.bincount(_indices(tmp_path / "m.png").ravel(), minlength=5)
    assert entry["class_pixels"] == {f"c{i}": int(n) for i, n in enumerate(counts) if n}
    assert entry["mean_confidence"] == pytest.approx(float(probs.max(0).mean()), abs=1e-6)
    for extra in (
        ["--tile", "64x64"],
        ["--confidence", tmp_path / "c.png"],
        ["--min-confidence", "0.5"],
    ):
        refused = _predict(onnx, source, "--out", tmp_path / "n.png", *extra)
        assert refused.exit_code == 2 and "need the PyTorch backend" in refused.output, (
            refused.output
        )
