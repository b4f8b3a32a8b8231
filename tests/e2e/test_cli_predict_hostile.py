"""`isaseg predict` on hostile folders: bombs are refused from their headers, odd sizes and broken
files fail alone, and memory stays bounded (measured in a separate process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.helpers import TINY
from tests.hostile import write_png_bomb

# Torch, the tiny model and small images need ~0.5 GB; decoding the 30,000 x 30,000 PNG alone
# would take 2.7 GB and the 60,000 x 60,000 one 10.8 GB.
PEAK_BOUND_MB = 1500

_MEASURED = """
import resource, sys
from isaseg_cli.cli import app
try:
    app(sys.argv[1:], prog_name="isaseg")
except SystemExit as exc:
    code = exc.code
print(f"peak_rss_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
sys.exit(code)
"""


def _good(path: Path, flip: bool = False) -> Path:
    image = cv2.imread(str(TINY / "image.png"))[:64, :96]
    cv2.imwrite(str(path), np.ascontiguousarray(image[::-1] if flip else image))
    return path


def test_folder_with_bombs_thin_and_broken_images(tmp_path, tiny_checkpoint) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = [_good(folder / "a_good.png"), _good(folder / "z_good.jpg", flip=True)]
    bombs = [
        write_png_bomb(folder / "b_bomb.png", 60_000, 60_000),
        write_png_bomb(folder / "c_huge.png", 30_000, 30_000),
    ]
    assert max(path.stat().st_size for path in bombs) < 1_000_000
    thin = {"d_row.png": (1, 5000), "e_column.png": (5000, 1)}
    for name, shape in thin.items():
        cv2.imwrite(str(folder / name), np.full((*shape, 3), 90, dtype=np.uint8))
    (folder / "f_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    argv = ["predict", str(folder), "--out", str(out), "--checkpoint", str(tiny_checkpoint)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    run = subprocess.run(
        [sys.executable, "-c", _MEASURED, *argv, "--device", "cpu", "--batch-size", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "Traceback" not in output
    for path in good:
        assert (out / path.with_suffix(".png").name).is_file()
    for path in bombs:
        assert re.search(rf"{re.escape(str(path))}.*exceeds --max-pixels", output), output
    assert f"{folder / 'f_broken.png'}: " in output
    failed = 3
    for name, shape in thin.items():  # each either segmented at its own size or named
        mask = out / name
        if mask.is_file():
            assert cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).shape[:2] == shape
        else:
            assert str(folder / name) in output, output
            failed += 1
    assert f"{failed} of 7 input(s) failed" in output
    assert f"masks: {7 - failed} files in {out}" in output
    peak_mb = int(re.search(r"peak_rss_kb=(\d+)", run.stderr).group(1)) / 1024
    assert peak_mb < PEAK_BOUND_MB, f"peak RSS {peak_mb:.0f} MB"


def test_max_pixels_is_the_limit(tmp_path, tiny_checkpoint) -> None:
    from typer.testing import CliRunner

    from isaseg_cli.cli import app

    source = _good(tmp_path / "a.png")  # 96 x 64 = 6144 pixels
    argv = ["predict", str(source), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    refused = CliRunner().invoke(
        app, [*argv, "--out", str(tmp_path / "m.png"), "--max-pixels", "6143"]
    )
    assert refused.exit_code == 1
    assert "96x64 (6,144 pixels), which exceeds --max-pixels 6,143" in refused.output
    assert not (tmp_path / "m.png").exists()
    allowed = CliRunner().invoke(
        app, [*argv, "--out", str(tmp_path / "m.png"), "--max-pixels", "6144"]
    )
    assert allowed.exit_code == 0 and (tmp_path / "m.png").is_file()
