"""`isaseg train` end to end on the CPU: a tiny variant of a zoo entry on synthetic Cityscapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.engine.checkpoint import read_checkpoint
from isaseg_cli.models.build import build_model
from tests.helpers import TINY_TRAIN_OPTIONS, tiny_model_spec

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_two_iterations_then_eval_the_checkpoint(city_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    summary = tmp_path / "train.json"
    args = ["train", "--data-root", str(city_root), "--work-dir", str(work), "--max-iters", "2"]
    args += ["--batch-size", "2", "--pretrained", "none", "--val-interval", "2"]
    args += ["--checkpoint-interval", "1", "--json-out", str(summary), *TINY_TRAIN_OPTIONS]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "batch 2 = 1 process(es) x 2" in result.output
    assert {"iter_1.pth", "iter_2.pth", "latest.pth", "best.pth", "log.jsonl"} <= {
        path.name for path in work.iterdir()
    }
    lines = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [(line["iter"], line["mode"]) for line in lines] == [(2, "train"), (2, "val")]
    report = json.loads(summary.read_text())
    assert report["iterations"] == 2 and report["batch_size"] == 2
    assert report["checkpoint"] == str(work / "iter_2.pth")

    state = read_checkpoint(work / "latest.pth")["state_dict"]
    build_model(tiny_model_spec(19)).load_state_dict(state, strict=True)

    scores = tmp_path / "eval.json"
    evaluated = runner.invoke(
        app,
        ["eval", "--checkpoint", str(work / "latest.pth"), "--data-root", str(city_root)]
        + ["--device", "cpu", "--workers", "0", "--json-out", str(scores)],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(scores.read_text())["images"] == 4


def snapshot(folder: Path) -> dict[str, tuple[str | None, bytes]]:
    """Every file's bytes, and where each symlink points."""
    return {
        path.name: (os.readlink(path) if path.is_symlink() else None, path.read_bytes())
        for path in sorted(folder.iterdir())
    }


def test_a_second_run_into_a_used_work_dir_refuses_and_overwrite_replaces_it(
    city_root: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    common = ["train", "--data-root", str(city_root), "--work-dir", str(work), "--batch-size", "2"]
    common += ["--pretrained", "none", "--checkpoint-interval", "1", *TINY_TRAIN_OPTIONS]
    first = runner.invoke(app, [*common, "--max-iters", "2", "--val-interval", "2"])
    assert first.exit_code == 0, first.output
    (work / "notes.txt").write_text("the user's own file")
    before = snapshot(work)
    assert {"iter_1.pth", "iter_2.pth", "latest.pth", "best.pth", "log.jsonl"} <= set(before)

    again = runner.invoke(app, [*common, "--max-iters", "1"])
    assert again.exit_code == 2, again.output
    assert "holds an earlier run" in again.output
    assert "--resume" in again.output and "--overwrite" in again.output
    assert snapshot(work) == before  # byte-identical, symlink included

    # --overwrite deletes the earlier run's files only; the default keeps 3 iter_<k>.pth.
    replaced = runner.invoke(
        app, [*common, "--max-iters", "4", "--val-interval", "0", "--overwrite"]
    )
    assert replaced.exit_code == 0, replaced.output
    assert "--overwrite: deleted the earlier run" in replaced.output
    names = {path.name for path in work.iterdir()}
    assert names == {
        "iter_2.pth",
        "iter_3.pth",
        "iter_4.pth",
        "latest.pth",
        "log.jsonl",
        "notes.txt",
    }
    lines = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert not [line for line in lines if line["mode"] == "val"]  # nothing of the first run
    assert [line["deleted"] for line in lines if line["mode"] == "checkpoint"] == [["iter_1.pth"]]
    assert "deleted iter_1.pth (--keep-checkpoints 3)" in replaced.output


def test_keep_checkpoints_deletes_the_oldest_and_logs_it(city_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = ["train", "--data-root", str(city_root), "--work-dir", str(work), "--batch-size", "2"]
    args += ["--pretrained", "none", "--max-iters", "4", "--checkpoint-interval", "1"]
    args += ["--val-interval", "2", "--keep-checkpoints", "1", *TINY_TRAIN_OPTIONS]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {path.name for path in work.iterdir()} == {
        "iter_4.pth", "latest.pth", "best.pth", "log.jsonl"
    }  # fmt: skip
    assert os.readlink(work / "latest.pth") == "iter_4.pth"
    read_checkpoint(work / "best.pth")  # complete, though its iteration's file is gone
    lines = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    deleted = [(line["iter"], line["deleted"]) for line in lines if line["mode"] == "checkpoint"]
    assert deleted == [(2, ["iter_1.pth"]), (3, ["iter_2.pth"]), (4, ["iter_3.pth"])]
    for name in ("iter_1.pth", "iter_2.pth", "iter_3.pth"):
        assert f"deleted {name} (--keep-checkpoints 1)" in result.output
    assert f"Checkpoints kept in {work}: iter_4.pth" in result.output


def test_resume_continues_the_run_with_its_own_settings(city_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    common = ["train", "--work-dir", str(work)]
    first = runner.invoke(
        app,
        [*common, "--data-root", str(city_root), "--max-iters", "2", "--batch-size", "2"]
        + ["--pretrained", "none", "--precision", "bf16", "--val-interval", "0"]
        + TINY_TRAIN_OPTIONS,
    )
    assert first.exit_code == 0, first.output
    summary = tmp_path / "resumed.json"
    # Neither the data root (not under the default data/) nor the tiny --set options are given.
    options = ["--resume", "--max-iters", "3", "--json-out", str(summary)]
    again = runner.invoke(app, [*common, *options])
    assert again.exit_code == 0, again.output
    assert "resume: --max-iters 3 instead of the run's 2" in again.output
    assert "resumed from iteration 2 of 3" in again.output
    report = json.loads(summary.read_text())
    assert (report["start_iter"], report["iterations"], report["batch_size"]) == (2, 3, 2)
    assert (report["precision"], report["device"]) == ("bf16", "cpu")
    assert report["log"] == str(work / "log.jsonl") and Path(report["checkpoints"][-1]).is_file()

    moved = tmp_path / "moved"
    city_root.rename(moved)
    try:
        override = runner.invoke(app, [*common, "--resume", "--data-root", str(moved)])
    finally:
        moved.rename(city_root)
    assert override.exit_code == 0, override.output
    assert f"resume: --data-root {moved} instead of the run's {city_root}" in override.output

    for refused in (["--crop-size", "32x32"], ["--set", "train.lr=0.1"], ["--overwrite"]):
        result = runner.invoke(app, [*common, "--resume", *refused])
        assert result.exit_code == 2, result.output
        assert f"{refused[0]} cannot be given with it" in result.output

    other = runner.invoke(app, [*common[:1], "isanet_r101_cityscapes", *common[1:], "--resume"])
    assert other.exit_code == 2 and "holds a run of" in other.output


class CountingMirror(ThreadingHTTPServer):
    """``$ISASEG_MIRROR`` on 127.0.0.1 that answers 404 and counts what was asked of it."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                mirror.paths.append(self.path)
                self.send_error(404)

            def log_message(self, *args: object) -> None:
                del args

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingMirror]:
    server = CountingMirror()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ISASEG_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "fresh-home"))
    yield server
    server.shutdown()
    server.server_close()


def test_the_imagenet_backbone_comes_from_the_mirror(
    city_root: Path, tmp_path: Path, mirror: CountingMirror
) -> None:
    """The control for the test below: valid options do reach the counting server."""
    args = ["train", "--data-root", str(city_root), "--work-dir", str(tmp_path / "w")]
    args += TINY_TRAIN_OPTIONS
    result = runner.invoke(app, [*args, "--batch-size", "2"])
    assert result.exit_code == 2 and "HTTP 404" in result.output, result.output
    assert len(mirror.paths) == 1 and mirror.paths[0].endswith(".pth")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-root", "{tmp}/missing"], "not found"),
        (["--dataset", "custom"], "needs --classes"),
        (["--classes", "a,b", "--num-classes", "3"], "--num-classes 3 but --classes names 2"),
        (["--pretrained", "{tmp}/absent.pth"], "file"),
        (["--work-dir", "{tmp}/file/run"], "cannot write to the work dir"),
        (["--work-dir", "{tmp}/used"], "holds an earlier run"),
        (["--json-out", "{tmp}/file/summary.json"], "--json-out"),
        (["--batch-size", "64"], "too few for a batch of 64"),
        (["--crop-size", "64"], "HEIGHTxWIDTH"),
        (["--set", "train.lrr=0.1"], "lrr"),
        (["--precision", "fp16"], "fp16"),
        (["--keep-checkpoints", "-1"], "--keep-checkpoints"),
        (["--device", "cpu", "--cuda-graphs"], "CUDA graphs need a CUDA device"),
    ],
)
def test_bad_input_fails_at_once_before_any_download(
    city_root: Path, tmp_path: Path, mirror: CountingMirror, extra: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "log.jsonl").write_text("{}\n")
    args = ["train", "--data-root", str(city_root), "--work-dir", str(tmp_path / "w")]
    args += TINY_TRAIN_OPTIONS
    args += ["--batch-size", "2", *[item.format(tmp=tmp_path) for item in extra]]
    started = time.perf_counter()
    result = runner.invoke(app, args)
    seconds = time.perf_counter() - started
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert seconds < 1 and mirror.paths == []  # no download attempted
    assert not (tmp_path / "w").exists()  # and no empty work dir left


@pytest.mark.dist
def test_torchrun_two_processes_train_to_identical_weights(city_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    backbone = tmp_path / "tiny_backbone.pth"
    torch.save({"state_dict": build_model(tiny_model_spec(19)).backbone.state_dict()}, backbone)
    work, summary = tmp_path / "work", tmp_path / "ddp.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "isaseg_cli", "train", "--data-root", str(city_root)]
    command += ["--work-dir", str(work), "--max-iters", "2", "--batch-size", "4"]
    command += ["--pretrained", backbone.as_uri(), "--val-interval", "2", *TINY_TRAIN_OPTIONS]
    command += ["--json-out", str(summary)]
    env = {**os.environ, "ISASEG_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(summary.read_text())
    assert report["world_size"] == 2 and report["batch_size"] == 4
    assert report["ranks_identical"] is True
    assert report["weights"]["missing"] == [] and report["weights"]["loaded"] > 0
    assert "batch 4 = 2 process(es) x 2" in done.stdout
    assert done.stdout.count("Trained ") == 1  # only rank 0 reports
    assert (work / "latest.pth").is_file() and (work / "best.pth").is_file()
