"""`isaseg train` end to end on the CPU: a tiny variant of a zoo entry on synthetic Cityscapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.engine.checkpoint import read_checkpoint
from isaseg_cli.models.build import build_model
from tests.conftest import tiny_model_spec

runner = CliRunner()
# The zoo's R-50 Cityscapes recipe, shrunk to the tiny test architecture and 64x64 crops.
TINY = [
    "--crop-size", "64x64",
    "--device", "cpu",
    "--workers", "0",
    "--set", "model.backbone.depth=18",
    "--set", "model.backbone.stem_channels=16",
    "--set", "model.backbone.base_channels=8",
    "--set", "model.head.channels=32",
    "--set", "model.head.attn_channels=16",
    "--set", "model.aux_head.channels=16",
    "--set", "data.train_scale=128,64",
    "--set", "test.scale=128,64",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_two_iterations_then_eval_the_checkpoint(city_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    summary = tmp_path / "train.json"
    args = ["train", "--data-root", str(city_root), "--work-dir", str(work), "--max-iters", "2"]
    args += ["--batch-size", "2", "--pretrained", "none", "--val-interval", "2"]
    args += ["--checkpoint-interval", "1", "--json-out", str(summary), *TINY]
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


def test_resume_continues_the_run_with_its_own_recipe(city_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    common = ["train", "--data-root", str(city_root), "--work-dir", str(work)]
    first = runner.invoke(
        app, [*common, "--max-iters", "2", "--batch-size", "2", "--pretrained", "none", *TINY]
    )
    assert first.exit_code == 0, first.output
    summary = tmp_path / "resumed.json"
    # Without the tiny --set options: the run's own entry comes from latest.pth.
    options = ["--resume", "--max-iters", "3", "--device", "cpu", "--json-out", str(summary)]
    again = runner.invoke(app, [*common, *options])
    assert again.exit_code == 0, again.output
    assert "resumed from iteration 2 of 3" in again.output
    report = json.loads(summary.read_text())
    assert (report["start_iter"], report["iterations"], report["batch_size"]) == (2, 3, 2)

    other = runner.invoke(app, [*common[:1], "isanet_r101_cityscapes", *common[1:], "--resume"])
    assert other.exit_code == 2 and "holds a run of" in other.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data-root", "{tmp}/missing"], "not found"),
        (["--dataset", "custom"], "needs --classes"),
        (["--classes", "a,b", "--num-classes", "3"], "--num-classes 3 but --classes names 2"),
        (["--pretrained", "{tmp}/absent.pth"], "file"),
        (["--work-dir", "{tmp}/file/run"], "cannot write to the work dir"),
        (["--device", "cpu", "--cuda-graphs"], "CUDA graphs need a CUDA device"),
    ],
)
def test_bad_input_is_one_line_before_training(
    city_root: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    args = ["train", "--data-root", str(city_root), "--work-dir", str(tmp_path / "w"), *TINY]
    args += [item.format(tmp=tmp_path) for item in extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "w" / "log.jsonl").exists()


@pytest.mark.dist
def test_torchrun_two_processes_train_to_identical_weights(city_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    backbone = tmp_path / "tiny_backbone.pth"
    torch.save({"state_dict": build_model(tiny_model_spec(19)).backbone.state_dict()}, backbone)
    work, summary = tmp_path / "work", tmp_path / "ddp.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "isaseg_cli", "train", "--data-root", str(city_root)]
    command += ["--work-dir", str(work), "--max-iters", "2", "--batch-size", "4"]
    command += ["--pretrained", backbone.as_uri(), "--val-interval", "2", *TINY]
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
