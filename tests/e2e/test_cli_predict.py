"""`isaseg predict` end to end with the tiny checkpoint: files written, formats, robust inputs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.data.mask_io import colorize, overlay
from isaseg_cli.data.video import VideoReader
from isaseg_cli.engine.checkpoint import build_meta, save_checkpoint
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.classes import CITYSCAPES
from tests.helpers import TINY, make_tiny_entry, tiny_model_spec

runner = CliRunner()


def _image(height: int = 64, width: int = 96, flip: bool = False) -> np.ndarray:
    image = cv2.imread(str(TINY / "image.png"))[:height, :width]
    return np.ascontiguousarray(image[::-1] if flip else image)


def _invoke(checkpoint: Path, *args: str | Path):
    argv = ["predict", *map(str, args), "--checkpoint", str(checkpoint), "--device", "cpu"]
    return runner.invoke(app, argv, env={"COLUMNS": "200"})


def _indices(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def cityscapes_checkpoint(tmp_path_factory) -> Path:
    """A tiny, randomly initialised model with the 19 Cityscapes classes."""
    torch.manual_seed(0)
    model = build_model(tiny_model_spec(19))
    entry = dataclasses.replace(make_tiny_entry(19, CITYSCAPES.classes), name="tiny-cityscapes")
    meta = build_meta(entry, CITYSCAPES.classes, CITYSCAPES.palette)
    path = tmp_path_factory.mktemp("cs") / "tiny19.pth"
    return save_checkpoint(path, {"meta": meta, "state_dict": model.state_dict()})


def test_single_image_equals_the_python_api_and_infer_scores(tmp_path, tiny_checkpoint, segmenter):
    source = tmp_path / "street.png"
    cv2.imwrite(str(source), _image())
    result = _invoke(tiny_checkpoint, source, "--out", tmp_path / "mask.png")
    assert result.exit_code == 0, result.output
    written = _indices(tmp_path / "mask.png")
    assert np.array_equal(written, segmenter(source))
    scores = infer_scores(segmenter.model, _image(), segmenter.test)
    assert np.array_equal(written, scores[0].argmax(0).numpy())
    assert "Segmented 1 image(s)" in result.output and "mask.png" in result.output


def test_folder_is_mirrored_and_summarised_in_json(tmp_path, tiny_checkpoint, segmenter):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "in" / "a.png"), _image())
    cv2.imwrite(str(tmp_path / "in" / "sub" / "b.jpg"), _image(flip=True))
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out, report = tmp_path / "out", tmp_path / "report.json"
    args = ["--out", out, "--json-out", report, "--batch-size", "2"]
    result = _invoke(tiny_checkpoint, tmp_path / "in", *args)
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "a.png",
        "sub",
        "sub/b.png",
    ]
    assert (
        _indices(out / "sub" / "b.png") == segmenter(tmp_path / "in" / "sub" / "b.jpg")
    ).mean() > 0.999
    summary = json.loads(report.read_text())
    assert summary["images"] == 2 and summary["inputs"] == 2 and summary["failures"] == []
    assert summary["output_dir"] == str(out) and len(summary["outputs"]) == 2
    assert summary["model"] == "tiny-test" and summary["images_per_s"] > 0


def test_glob_input(tmp_path, tiny_checkpoint):
    for name in ("x.png", "y.png", "z.bmp"):
        cv2.imwrite(str(tmp_path / name), _image())
    result = _invoke(tiny_checkpoint, str(tmp_path / "*.png"), "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png", "y.png"]


def test_video_of_three_frames(tmp_path, tiny_checkpoint, segmenter):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 64))
    for shift in (0, 8, 16):
        writer.write(np.roll(_image(), shift, axis=1))
    writer.release()
    args = ["--out", tmp_path / "seg.avi", "--overlay", tmp_path / "blend.mp4", "--batch-size", "2"]
    result = _invoke(tiny_checkpoint, clip, *args)
    assert result.exit_code == 0, result.output
    # the expected colour frames, through the same (lossy, deterministic) MJPG encoder
    reference = tmp_path / "reference.avi"
    encoder = cv2.VideoWriter(str(reference), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (96, 64))
    with VideoReader(clip) as frames:
        decoded = list(frames)
    masks = segmenter.predict_batch(decoded[:2]) + segmenter.predict_batch(
        decoded[2:]
    )  # batches of 2
    for mask in masks:
        encoder.write(np.ascontiguousarray(colorize(mask, segmenter.palette)[..., ::-1]))
    encoder.release()
    with VideoReader(tmp_path / "seg.avi") as ours, VideoReader(reference) as expected:
        written, wanted = list(ours), list(expected)
    assert len(written) == 3 and written[0].shape == (64, 96, 3)
    for frame, reference_frame in zip(written, wanted, strict=True):
        assert np.array_equal(frame, reference_frame)
    with VideoReader(tmp_path / "blend.mp4") as frames:
        assert len(list(frames)) == 3
    assert "3 image(s)" in result.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize("fmt", ["index", "color", "overlay"])
def test_each_format(tmp_path, tiny_checkpoint, segmenter, fmt):
    source = tmp_path / "a.png"
    cv2.imwrite(str(source), _image())
    result = _invoke(
        tiny_checkpoint, source, "--out", tmp_path / "r.png", "--format", fmt, "--opacity", "0.3"
    )
    assert result.exit_code == 0, result.output
    mask = segmenter(source)
    if fmt == "index":
        assert np.array_equal(_indices(tmp_path / "r.png"), mask)
        return
    written = cv2.imread(str(tmp_path / "r.png"))
    if fmt == "color":
        assert np.array_equal(written[..., ::-1], colorize(mask, segmenter.palette))
    else:
        assert np.array_equal(written, overlay(_image(), mask, segmenter.palette, 0.3))


def test_overlay_beside_the_mask_and_probs(tmp_path, tiny_checkpoint, segmenter):
    source = tmp_path / "a.png"
    cv2.imwrite(str(source), _image())
    args = [
        "--out",
        tmp_path / "m.png",
        "--overlay",
        tmp_path / "o.jpg",
        "--probs",
        tmp_path / "p.npy",
    ]
    result = _invoke(tiny_checkpoint, source, *args)
    assert result.exit_code == 0, result.output
    mask, probs = segmenter(source, return_probs=True)
    assert np.array_equal(_indices(tmp_path / "m.png"), mask)
    assert cv2.imread(str(tmp_path / "o.jpg")).shape == (64, 96, 3)
    saved = np.load(tmp_path / "p.npy")
    assert saved.dtype == np.float32 and saved.shape == (5, 64, 96)
    assert np.array_equal(saved, probs)

    cv2.imwrite(str(tmp_path / "b.png"), _image())
    two = _invoke(tiny_checkpoint, source, tmp_path / "b.png", "--probs", tmp_path / "q.npy")
    assert two.exit_code == 2 and "--probs" in two.output


def test_labelids_for_cityscapes_models_only(tmp_path, tiny_checkpoint, cityscapes_checkpoint):
    source = tmp_path / "a.png"
    cv2.imwrite(str(source), _image())
    result = _invoke(
        cityscapes_checkpoint, source, "--out", tmp_path / "ids.png", "--format", "labelids"
    )
    assert result.exit_code == 0, result.output
    train_ids = Segmenter.from_checkpoint(cityscapes_checkpoint, device="cpu")(source)
    label_ids = cv2.imread(str(tmp_path / "ids.png"), cv2.IMREAD_UNCHANGED)
    table = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
    assert np.array_equal(label_ids, np.array(table, dtype=np.uint8)[train_ids])

    refused = _invoke(tiny_checkpoint, source, "--out", tmp_path / "x.png", "--format", "labelids")
    assert refused.exit_code == 2 and "19 Cityscapes classes" in refused.output
    assert not (tmp_path / "x.png").exists()


def test_a_corrupt_file_among_good_ones(tmp_path, tiny_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _image())
    cv2.imwrite(str(folder / "c.png"), _image(flip=True))
    (folder / "b.png").write_bytes(b"\x89PNG truncated")
    result = _invoke(tiny_checkpoint, folder, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    assert "b.png" in result.output and "1 of 3 input(s) failed" in result.output


def _write_variants(folder: Path) -> dict[str, np.ndarray]:
    """Unusual image files, and the BGR image each should decode to (computed independently)."""
    folder.mkdir()
    rgb = _image()[..., ::-1]
    gray = np.array(Image.fromarray(rgb).convert("L"))
    Image.fromarray(gray).save(folder / "gray.png")
    rgba = np.dstack([rgb, np.full(gray.shape, 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    deep = rgb.astype(np.uint16) * 257 + 100  # 16-bit: the high byte is the 8-bit value
    cv2.imwrite(str(folder / "deep.png"), deep[..., ::-1])
    palette_image = Image.fromarray(rgb).quantize(colors=32)
    palette_image.save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.fromarray(rgb).save(folder / "exif.png", exif=exif.tobytes())
    return {
        "gray": np.dstack([gray] * 3),
        "rgba": rgb[..., ::-1],
        "deep": (deep >> 8).astype(np.uint8)[..., ::-1],
        "palette": np.array(palette_image.convert("RGB"))[..., ::-1],
        "exif": np.rot90(rgb, k=-1)[..., ::-1],
    }


def test_gray_rgba_16bit_palette_and_exif_inputs(tmp_path, tiny_checkpoint, segmenter):
    expected = _write_variants(tmp_path / "in")
    result = _invoke(tiny_checkpoint, tmp_path / "in", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    for name, image in expected.items():
        written = _indices(tmp_path / "out" / f"{name}.png")
        assert written.shape == image.shape[:2], name
        assert np.array_equal(written, segmenter(np.ascontiguousarray(image))), name


def test_default_output_never_overwrites(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cv2.imwrite("a.png", _image())
    first = _invoke(tiny_checkpoint, "a.png")
    assert first.exit_code == 0, first.output
    before = Path("runs/predict/a.png").read_bytes()
    second = _invoke(tiny_checkpoint, "a.png")
    assert second.exit_code == 0, second.output
    assert Path("runs/predict2/a.png").exists() and "runs/predict2" in second.output
    assert Path("runs/predict/a.png").read_bytes() == before


def test_refuses_to_write_over_its_inputs(tmp_path, tiny_checkpoint):
    cv2.imwrite(str(tmp_path / "a.png"), _image())
    result = _invoke(tiny_checkpoint, tmp_path, "--out", tmp_path)
    assert result.exit_code == 2 and "overwrite" in result.output
    assert np.array_equal(cv2.imread(str(tmp_path / "a.png")), _image())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--crop", "12"], "--crop"),
        (["--stride", "10x0"], "--stride"),
        (["--scales", "a,b", "--ms-flip"], "--scales"),
        (["--scales", "0.5,1.0"], "--ms-flip"),
        (["--mode", "whole", "--crop", "32x32"], "slide"),
        (["--opacity", "2"], "opacity"),
        (["--out", "mask.jpg"], ".png"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, tiny_checkpoint, args, message):
    source = tmp_path / "a.png"
    cv2.imwrite(str(source), _image())
    result = _invoke(
        tiny_checkpoint, source, *[str(tmp_path / a) if a == "mask.jpg" else a for a in args]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_missing_input_fails_before_loading_the_model(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path / "nope.png"), "--model", "no-such-model"])
    assert result.exit_code == 2 and "no such file" in result.output


def test_help_mentions_every_option():
    result = runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    options = [
        "--out", "--model", "--checkpoint", "--trust-checkpoint", "--format", "--overlay",
        "--opacity", "--probs", "--mode", "--crop-size", "--stride", "--ms-flip", "--scales",
        "--device", "--precision", "--batch-size", "--json-out",
    ]  # fmt: skip
    for option in options:
        assert re.search(rf"{option}(?![\w-])", result.output), option
    for choice in ("index", "color", "overlay", "labelids", "whole", "slide", "bf16"):
        assert choice in result.output
