"""`isaseg predict` at scale: two torchrun processes (gloo, CPU) share a folder and write what one
process writes; a run killed with SIGKILL is continued by the same command, nothing computed twice
and nothing corrupt; the manifest holds one line per input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.engine.infer.manifest import read_manifest
from tests.helpers import kill_process_tree

ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

# The CLI with every forward slowed down, so that a kill lands partway through the folder. The
# guard matters: the decoding workers' fork server imports the main module.
_SLOW = """
import sys, time
from isaseg_cli.cli import app
from isaseg_cli.engine.infer.segmenter import Segmenter
def slowed(real):
    def slow(self, *args, **kwargs):
        time.sleep(0.4)
        return real(self, *args, **kwargs)
    return slow
if __name__ == "__main__":  # both entry points: with workers, predict sends prepared inputs
    Segmenter.segment_batch = slowed(Segmenter.segment_batch)
    Segmenter.segment_prepared = slowed(Segmenter.segment_prepared)
    app(sys.argv[1:], prog_name="isaseg")
"""


def _folder(path: Path, count: int, broken: str | None = None) -> Path:
    path.mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
        cv2.imwrite(str(path / f"img{index:02d}.png"), cv2.GaussianBlur(image, (5, 5), 0))
    if broken:
        (path / broken).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return path


def _results(folder: Path) -> dict[str, bytes]:
    """The visible files of an output folder but the manifest, by name."""
    return {
        path.name: path.read_bytes()
        for path in folder.iterdir()
        if not path.name.startswith(".") and path.name != "manifest.jsonl"
    }


def _single(checkpoint: Path, folder: Path, out: Path) -> None:
    argv = ["predict", str(folder), "--out", str(out), "--checkpoint", str(checkpoint)]
    result = CliRunner().invoke(app, [*argv, "--device", "cpu"])
    assert result.exit_code in (0, 1), result.output


@pytest.mark.dist
def test_two_processes_write_what_one_writes(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "in", 6, broken="img03_broken.png")
    _single(tiny_checkpoint, folder, tmp_path / "single")
    out, report = tmp_path / "dist", tmp_path / "report.json"
    command = [*TORCHRUN, "-m", "isaseg_cli", "predict", str(folder), "--out", str(out)]
    command += ["--checkpoint", str(tiny_checkpoint), "--manifest", "--workers", "1"]
    command += ["--json-out", str(report), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output  # the broken file
    broken = folder / "img03_broken.png"
    assert output.count(str(broken)) == 1 and "1 of 7 input(s) failed" in output
    assert output.count("Segmented 6 image(s)") == 1 and "over 2 processes" in output
    assert _results(out) == _results(tmp_path / "single") and len(_results(out)) == 6
    summary = json.loads(report.read_text())
    assert summary["ranks"] == 2 and summary["images"] == 6 and summary["inputs"] == 7
    assert len(summary["masks"]) == len(set(summary["masks"])) == 6  # each written once
    records = list(read_manifest(out / "manifest.jsonl"))
    inputs = sorted(str(path) for path in folder.iterdir())
    assert [record["input"] for record in records] == inputs
    for index, record in enumerate(records):
        assert record["rank"] == index % 2  # input i is rank i % 2's
        if record["input"] == str(broken):
            assert record["status"] == "failed" and str(broken) in record["error"]
            assert record["outputs"] == []
        else:
            assert record["status"] == "ok" and record["error"] is None
            assert [Path(p).name for p in record["outputs"]] == [Path(record["input"]).name]
    assert not [path for path in out.iterdir() if path.name.startswith(".")]  # parts folded


@pytest.mark.dist
def test_a_killed_run_is_continued_by_the_same_command(tiny_checkpoint, tmp_path) -> None:
    folder = _folder(tmp_path / "in", 8)
    _single(tiny_checkpoint, folder, tmp_path / "single")
    expected = _results(tmp_path / "single")
    out = tmp_path / "out"
    args = ["predict", str(folder), "--out", str(out), "--checkpoint", str(tiny_checkpoint)]
    args += ["--skip-existing", "--manifest", "--device", "cpu"]
    script = tmp_path / "slow_isaseg.py"
    script.write_text(_SLOW)
    killed = subprocess.Popen(
        [*TORCHRUN, str(script), *args, "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 240
        while len(_results(out) if out.exists() else {}) < 3 and killed.poll() is None:
            assert time.monotonic() < deadline, "the slowed run wrote nothing in time"
            time.sleep(0.05)
    finally:
        kill_process_tree(killed.pid)  # torchrun, both ranks and their decoding workers
        killed.wait(timeout=60)
    partial = _results(out)
    assert 3 <= len(partial) < 8, sorted(partial)
    assert all(data == expected[name] for name, data in partial.items())  # none corrupt
    parts = sorted(out.glob(".manifest.rank*.jsonl"))  # the killed run's records, not folded
    assert parts and not (out / "manifest.jsonl").exists()
    recorded = {Path(r["input"]).name for part in parts for r in read_manifest(part)}
    assert recorded <= set(partial)  # an input is recorded only once its outputs are written

    report = tmp_path / "rerun.json"
    command = [*TORCHRUN, "-m", "isaseg_cli", *args, "--json-out", str(report)]
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"skipped {len(partial)} input(s) whose results exist" in rerun.stdout
    written = [Path(path).name for path in json.loads(report.read_text())["masks"]]
    assert sorted(written) == sorted(set(expected) - set(partial))  # nothing computed twice
    assert _results(out) == expected
    records = list(read_manifest(out / "manifest.jsonl"))
    assert [record["input"] for record in records] == sorted(map(str, folder.iterdir()))
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 8
    for record in records:  # "skipped": written before the kill, but not yet recorded
        computed_now = Path(record["input"]).name in written
        assert record["status"] in (("ok",) if computed_now else ("ok", "skipped"))
        assert record["error"] is None
    assert not [path for path in out.iterdir() if path.suffix == ".jsonl" and path.name[0] == "."]
