"""`isaseg predict` outputs: checked before any download, never silently replaced, reported in
full (every path printed exists), and one-line errors for read-only and full disks."""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.engine.infer.segmenter import Segmenter
from tests.helpers import TINY
from tests.hostile import counting_server, tmpfs

runner = CliRunner()


def _image(path: Path, size: tuple[int, int] = (64, 96), seed: int = 0) -> Path:
    base = cv2.imread(str(TINY / "image.png"))
    if size == (64, 96):
        image = np.roll(base[:64, :96], 8 * seed, axis=1)
    else:
        image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    cv2.imwrite(str(path), np.ascontiguousarray(image))
    return path


def _predict(checkpoint: Path | None, *args: str | Path):
    argv = ["predict", *map(str, args), "--device", "cpu"]
    if checkpoint is not None:
        argv += ["--checkpoint", str(checkpoint)]
    return runner.invoke(app, argv, env={"COLUMNS": "300"})


def _printed_paths(output: str) -> dict[str, Path]:
    """``kind: PATH`` and ``kind: N files in DIR`` lines of the summary, as {kind: path}."""
    found = {}
    for kind, rest in re.findall(r"^(masks|overlays|probabilities|JSON): (.+)$", output, re.M):
        match = re.fullmatch(r"\d+ files in (.+)", rest)
        found[kind] = Path(match.group(1) if match else rest)
    return found


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A fresh cache whose zoo downloads go to a local server that counts the requests."""
    with counting_server() as server:
        monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("ISASEG_MIRROR", server.url)
        monkeypatch.delenv("ISASEG_MODEL", raising=False)
        yield server


@pytest.fixture
def read_only(tmp_path) -> Path:
    with tmpfs(tmp_path / "ro", "size=64k,ro") as path:
        yield path


def test_bad_options_and_outputs_fail_before_any_download(tmp_path, mirror, read_only) -> None:
    image, second = _image(tmp_path / "a.png"), _image(tmp_path / "b.png", seed=1)
    cases = {
        "opacity must be in (0, 1], got 1.5": ["--format", "overlay", "--opacity", "1.5"],
        "--out": ["--out", read_only / "newdir" / "x.png"],
        "--json-out": ["--out", tmp_path / "m.png", "--json-out", read_only / "r.json"],
        "--overlay": ["--overlay", read_only / "ov"],
        "is one image's file": ["--probs", tmp_path / "p.npy", second],
        "--scales sets the --ms-flip ratios": ["--scales", "0.5,1"],
        "--crop-size takes HEIGHTxWIDTH": ["--crop-size", "big"],
    }
    for expected, args in cases.items():
        start = time.perf_counter()
        result = _predict(None, image, *args)
        seconds = time.perf_counter() - start
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
        if expected.startswith("--") and "cannot" in lines[0]:
            assert "Read-only file system" in lines[0]
        assert seconds < 1.0, (args, seconds)
    assert mirror.requests == 0
    assert not (tmp_path / "runs").exists() and not (tmp_path / "home").exists()
    # the control: with nothing wrong, the zoo weights are asked of the server
    result = _predict(None, image, "--out", tmp_path / "m.png")
    assert result.exit_code == 2 and mirror.requests >= 1


def test_a_full_disk_names_the_file_and_reports_what_was_written(tmp_path, tiny_checkpoint):
    image = _image(tmp_path / "big.png", size=(160, 400))
    with tmpfs(tmp_path / "full", "size=1m") as full:
        probs = full / "p.npy"  # 5 classes x 160 x 400 float32 = 1.3 MB
        result = _predict(tiny_checkpoint, image, "--out", tmp_path / "m.png", "--probs", probs)
        assert result.exit_code == 2, result.output
        assert f"error: cannot write {probs}: No space left on device" in result.output
        assert ".tmp" not in result.output and "Traceback" not in result.output
        assert list(full.iterdir()) == []  # no temporary file left behind
        with open(full / "filler", "wb") as filler, pytest.raises(OSError):
            while True:
                filler.write(bytes(65536))
        report = full / "r.json"
        late = _predict(tiny_checkpoint, image, "--out", tmp_path / "n.png", "--json-out", report)
        assert late.exit_code == 2, late.output
        full_disk = "No space left on device; free some space or write elsewhere"
        assert late.output.strip().endswith(f"error: cannot write {report}: {full_disk}")
        assert f"masks: {tmp_path / 'n.png'}" in late.output and ".tmp" not in late.output
    assert f"masks: {tmp_path / 'm.png'}" in result.output and (tmp_path / "m.png").is_file()
    assert "probabilities: none written" in result.output
    assert "Segmented 1 image(s)" in result.output


def test_existing_results_are_refused_unless_overwrite(tmp_path, tiny_checkpoint) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(2):
        _image(folder / f"{seed}.png", seed=seed)
    out = tmp_path / "out"
    assert _predict(tiny_checkpoint, folder, "--out", out, "--format", "overlay").exit_code == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    again = _predict(tiny_checkpoint, folder, "--out", out)
    assert again.exit_code == 2
    assert f"{out / '0.png'} already exists (and 1 more): add --overwrite" in again.output
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    replaced = _predict(tiny_checkpoint, folder, "--out", out, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert all((out / name).read_bytes() != data for name, data in before.items())
    single = _predict(tiny_checkpoint, folder / "0.png", "--out", out / "0.png")
    assert single.exit_code == 2 and "--overwrite" in single.output


def test_every_printed_output_path_exists(tmp_path, tiny_checkpoint) -> None:
    image = _image(tmp_path / "a.png")
    files = ["--out", tmp_path / "a_mask.png", "--overlay", tmp_path / "b.png"]
    extra = ["--probs", tmp_path / "p.npy", "--json-out", tmp_path / "r.json"]
    result = _predict(tiny_checkpoint, image, *files, *extra)
    assert result.exit_code == 0, result.output
    printed = _printed_paths(result.output)
    assert printed == {
        "masks": tmp_path / "a_mask.png",
        "overlays": tmp_path / "b.png",
        "probabilities": tmp_path / "p.npy",
        "JSON": tmp_path / "r.json",
    }
    assert all(path.is_file() for path in printed.values())
    second = _image(tmp_path / "c.png", seed=1)
    folders = ["--out", tmp_path / "masks", "--overlay", tmp_path / "ov"]
    result = _predict(tiny_checkpoint, image, second, *folders)
    assert result.exit_code == 0, result.output
    assert "masks: 2 files in" in result.output and "overlays: 2 files in" in result.output
    printed = _printed_paths(result.output)
    assert printed == {"masks": tmp_path / "masks", "overlays": tmp_path / "ov"}
    assert all(len(list(path.iterdir())) == 2 for path in printed.values())


def test_a_non_image_input_creates_no_run_folder(tmp_path, tiny_checkpoint, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    result = _predict(tiny_checkpoint, notes)
    assert result.exit_code == 1
    assert f"cannot decode {notes}" in result.output and "masks: none written" in result.output
    assert not (tmp_path / "runs").exists()


def test_ctrl_c_lists_what_was_written_and_the_rerun_continues(
    tmp_path, tiny_checkpoint, monkeypatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for seed in range(3):
        _image(folder / f"{seed}.png", seed=seed)
    calls = []
    original = Segmenter.segment_batch

    def interrupted_on_second(self, images, **kwargs):
        calls.append(len(images))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, images, **kwargs)

    monkeypatch.setattr(Segmenter, "segment_batch", interrupted_on_second)
    out = tmp_path / "out"
    result = _predict(tiny_checkpoint, folder, "--out", out)
    assert result.exit_code == 130
    assert f"masks: {out / '0.png'}" in result.output
    hint = f"to continue, run the same command with --out {out} --skip-existing"
    assert f"interrupted after 1 of 3 input(s); {hint}" in result.output
    assert sorted(path.name for path in out.iterdir()) == ["0.png"]  # nothing half-written
    monkeypatch.setattr(Segmenter, "segment_batch", original)
    resumed = _predict(tiny_checkpoint, folder, "--out", out, "--skip-existing")
    assert resumed.exit_code == 0, resumed.output
    assert "skipped 1 input(s) whose results exist" in resumed.output
    assert sorted(path.name for path in out.iterdir()) == ["0.png", "1.png", "2.png"]
    done = _predict(tiny_checkpoint, folder, "--out", out, "--skip-existing")
    assert (
        done.exit_code == 0
        and "skipped 3 input(s) whose results exist: nothing to do" in done.output
    )
