"""SIGTERM (batch schedulers, `timeout`, `docker stop`) stops every command as Ctrl-C does:
exit 143, one line, no traceback, no partial file, and for predict a resumable folder. Real
processes; the commands are the tiny model's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import TINY


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ISASEG_HOME": str(tmp_path / "home")}
    return subprocess.Popen(
        [sys.executable, "-m", "isaseg_cli", *args],
        cwd=tmp_path,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _terminate_when(ready: Callable[[], bool], process: subprocess.Popen[str]) -> str:
    """Sends SIGTERM once ``ready()``; returns stderr after the process ended."""
    deadline = time.monotonic() + 120
    try:
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "never got ready"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        return process.communicate(timeout=60)[1]
    finally:
        process.kill()


def test_predict_over_a_folder_stops_with_complete_masks_and_resumes(
    tiny_checkpoint, tmp_path
) -> None:
    images, out = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    for index in range(400):  # far more than it segments before the signal
        shutil.copyfile(TINY / "image.png", images / f"{index:03d}.png")
    args = ["predict", str(images), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    process = _start([*args, "--out", str(out)], tmp_path)
    stderr = _terminate_when(lambda: out.is_dir() and len(os.listdir(out)) >= 3, process)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert f"to continue, run the same command with --out {out} --skip-existing" in stderr
    written = sorted(out.iterdir())
    assert 3 <= len(written) < 400 and all(path.suffix == ".png" for path in written)
    for path in written:  # whole files only: none cut short by the signal
        assert np.asarray(Image.open(path)).shape == (97, 141)
    resumed = subprocess.run(
        [sys.executable, "-m", "isaseg_cli", *args, "--out", str(out), "--skip-existing"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", "ISASEG_HOME": str(tmp_path / "home")},
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len(list(out.iterdir())) == 400


def test_export_stops_without_leaving_a_file(tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "model.onnx"
    process = _start(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)], tmp_path)
    assert process.stdout is not None
    started = []

    def exporting() -> bool:
        if not started:
            started.append(process.stdout.readline())  # blocks until the first stage's line
        return "exporting" in started[0]

    stderr = _terminate_when(exporting, process)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["error: terminated (SIGTERM)"]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
