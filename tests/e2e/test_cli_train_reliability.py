"""`isaseg train` under the failures a real run meets: SIGKILL in the middle of a checkpoint,
SIGTERM from a batch scheduler, a full disk and a read-only one (real processes, real mounts)."""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.engine.checkpoint import read_checkpoint
from tests.helpers import TINY_TRAIN_OPTIONS
from tests.hostile import tmpfs

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


def train_command(city_root: Path, work: Path, *options: str) -> list[str]:
    return [
        *["train", "--data-root", str(city_root), "--work-dir", str(work), "--batch-size", "2"],
        *["--pretrained", "none", *TINY_TRAIN_OPTIONS, *options],
    ]


def start_train(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ISASEG_HOME": str(tmp_path / "home")}
    return subprocess.Popen(
        [sys.executable, "-m", "isaseg_cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"train ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the training process")
        time.sleep(0.002)


def hidden_files(work: Path) -> list[str]:
    return sorted(path.name for path in work.iterdir() if path.name.startswith("."))


def test_sigkill_while_writing_a_checkpoint_resumes_bit_identical_with_no_options(
    city_root: Path, tmp_path: Path
) -> None:
    # Settings that differ from the defaults, so a resume that forgot any of them would fail
    # (data root) or end with other weights (precision, seed, intervals).
    options = ["--max-iters", "6", "--checkpoint-interval", "3", "--val-interval", "3"]
    options += ["--precision", "bf16", "--seed", "7", "--keep-checkpoints", "1"]
    whole = runner.invoke(app, train_command(city_root, tmp_path / "whole", *options))
    assert whole.exit_code == 0, whole.output

    cut = tmp_path / "cut"
    process = start_train(train_command(city_root, cut, *options), tmp_path)
    try:
        wait_for(lambda: (cut / "iter_3.pth").is_file(), process)
        # The next checkpoint's temporary file is a pipe: its writer blocks once the pipe is full,
        # so the kill below lands while iter_6 is half written, every time.
        os.mkfifo(cut / ".iter_6.pth.tmp")
        reader = os.open(cut / ".iter_6.pth.tmp", os.O_RDONLY | os.O_NONBLOCK)
        try:
            wait_for(lambda: bool(select.select([reader], [], [], 0.01)[0]), process)
            assert os.read(reader, 4096)  # the checkpoint is being written
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        finally:
            os.close(reader)
    finally:
        process.kill()
    assert os.readlink(cut / "latest.pth") == "iter_3.pth" and not (cut / "iter_6.pth").exists()

    resumed = runner.invoke(app, ["train", "--resume", "--work-dir", str(cut)])
    assert resumed.exit_code == 0, resumed.output
    assert "deleted .iter_6.pth.tmp: partial checkpoint file(s)" in resumed.output
    assert "resumed from iteration 3 of 6" in resumed.output
    assert hidden_files(cut) == []
    a, b = read_checkpoint(cut / "latest.pth"), read_checkpoint(tmp_path / "whole" / "latest.pth")
    assert a["iter"] == b["iter"] == 6 and a["scheduler"] == b["scheduler"]
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key
    assert sorted(p.name for p in cut.glob("iter_*")) == ["iter_6.pth"]  # --keep-checkpoints 1


def test_sigterm_stops_like_ctrl_c_and_says_how_to_resume(city_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    # A checkpoint every iteration: the signal often lands in the middle of one.
    options = ["--max-iters", "100000", "--checkpoint-interval", "1", "--val-interval", "0"]
    process = start_train(
        train_command(city_root, work, *options, "--keep-checkpoints", "2"), tmp_path
    )
    try:
        wait_for(lambda: (work / "iter_3.pth").is_file(), process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "terminated (SIGTERM)" in stderr
    assert f"continue with: isaseg train --resume --work-dir {work}" in stderr
    assert f"checkpoints in {work} (latest.pth -> iter_" in stderr
    assert hidden_files(work) == []  # the partial file was finished or removed
    latest = read_checkpoint(work / "latest.pth")
    # --keep-checkpoints 2, plus one when the signal landed between a save and its pruning
    assert len(list(work.glob("iter_*.pth"))) <= 3

    next_iteration = str(latest["iter"] + 1)
    resumed = runner.invoke(
        app, ["train", "--resume", "--work-dir", str(work), "--max-iters", next_iteration]
    )
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed from iteration {latest['iter']} of {next_iteration}" in resumed.output


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts small tmpfs file systems (``size=...`` or ``ro``) under ``tmp_path``; needs root."""
    with contextlib.ExitStack() as stack:
        points = itertools.count()
        yield lambda options: stack.enter_context(tmpfs(tmp_path / f"disk{next(points)}", options))


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_checkpoints(
    city_root: Path, mount_tmpfs: Callable[[str], Path]
) -> None:
    # 4 MB holds two of the tiny model's 1.8 MB checkpoints, not a third.
    work = mount_tmpfs("size=4m") / "run"
    options = ["--max-iters", "30", "--checkpoint-interval", "1", "--val-interval", "0"]
    result = runner.invoke(app, train_command(city_root, work, *options, "--keep-checkpoints", "0"))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    saved = sorted(work.glob("iter_*.pth"), key=lambda path: int(path.stem.split("_")[1]))
    failed = work / f"iter_{len(saved) + 1}.pth"
    assert errors[0].startswith(f"error: cannot write {failed}: no space left on the disk")
    assert f"{work / 'latest.pth'} ({saved[-1].name}) is intact" in errors[0]
    assert "--resume" in errors[0]
    assert hidden_files(work) == [] and not failed.exists()
    for path in saved:
        assert read_checkpoint(path)["iter"] == int(path.stem.split("_")[1])
    assert os.readlink(work / "latest.pth") == saved[-1].name


def test_a_read_only_work_dir_fails_before_training(
    city_root: Path, mount_tmpfs: Callable[[str], Path]
) -> None:
    disk = mount_tmpfs("ro,size=1m")
    for work in (disk, disk / "new" / "run"):
        started = time.perf_counter()
        result = runner.invoke(app, train_command(city_root, work, "--max-iters", "1"))
        assert result.exit_code == 2, result.output
        assert time.perf_counter() - started < 1
        assert f"error: cannot write to the work dir {work}: " in result.output
        assert "read-only file system" in result.output.lower() and "--work-dir" in result.output
        assert len(result.output.strip().splitlines()) == 1
