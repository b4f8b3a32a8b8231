"""`isaseg cache`: what a cache filled by real runs holds, and each --clean part removed and made
again by the next run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.export import onnx as onnx_export
from tests.helpers import TINY

pytest.importorskip("onnxruntime")
runner = CliRunner()


def _state(tmp_path) -> dict:
    out = tmp_path / "cache.json"
    result = runner.invoke(app, ["cache", "--json-out", str(out)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())["parts"]


@pytest.fixture
def home(tiny_onnx, tmp_path, monkeypatch):
    """A cache as `predict --backend onnxruntime` and `--backend openvino` leave it, with a
    downloaded checkpoint; the fixture's file stands in for the export (minutes at full size)."""
    home = tmp_path / "home"
    monkeypatch.setenv("ISASEG_HOME", str(home))

    def fake_export(loaded, path, **options):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_onnx["path"], path)
        return type("Result", (), {"passed": True})()

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    (home / "checkpoints").mkdir(parents=True)
    (home / "checkpoints" / "model_20200101-0123abcd.pth").write_bytes(bytes(5000))
    return home


def _predict(tiny_checkpoint, tmp_path, backend: str) -> None:
    args = ["predict", str(TINY / "image.png"), "--checkpoint", str(tiny_checkpoint)]
    args += ["--backend", backend, "--overwrite", "--out", str(tmp_path / "mask.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output


def test_the_listing_adds_up_the_files_each_run_left(home, tiny_checkpoint, tmp_path) -> None:
    empty = _state(tmp_path)
    assert empty["exports"] == empty["graphs"] == {"files": 0, "bytes": 0}
    for backend in ("onnxruntime", "openvino"):
        _predict(tiny_checkpoint, tmp_path, backend)
    parts = _state(tmp_path)
    for part, folder in (("checkpoints", "checkpoints"), ("graphs", "onnx/optimized")):
        files = [p for p in (home / folder).rglob("*") if p.is_file() and p.suffix != ".lock"]
        assert parts[part] == {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    [export] = (home / "onnx").glob("*.onnx")
    assert parts["exports"]["bytes"] > export.stat().st_size  # and the weights' digest memo
    assert list((home / "onnx" / "optimized" / "openvino").glob("*.blob"))
    listing = runner.invoke(app, ["cache"], env={"COLUMNS": "100"})
    assert listing.exit_code == 0 and str(home) in listing.output
    assert "isaseg cache --clean PART" in listing.output


@pytest.mark.parametrize(
    ("part", "removed"),
    [
        ("graphs", {"graphs"}),
        ("exports", {"exports", "graphs"}),
        ("checkpoints", {"checkpoints"}),
        ("all", {"exports", "graphs", "checkpoints"}),
    ],
)
def test_clean_removes_its_parts_and_the_next_run_makes_them_again(
    home, tiny_checkpoint, tmp_path, part, removed
) -> None:
    _predict(tiny_checkpoint, tmp_path, "onnxruntime")
    before = _state(tmp_path)
    result = runner.invoke(app, ["cache", "--clean", part])
    assert result.exit_code == 0, result.output
    after = _state(tmp_path)
    files = sum(before[p]["files"] for p in removed)
    assert f"removed {files} file(s)" in result.output
    for name, used in after.items():
        assert used == ({"files": 0, "bytes": 0} if name in removed else before[name])
    _predict(tiny_checkpoint, tmp_path, "onnxruntime")  # remade: export, digest, kept graph
    again = _state(tmp_path)
    assert again["exports"] == before["exports"] and again["graphs"]["files"] > 0


def test_an_unknown_part_is_a_one_line_error(home) -> None:
    result = runner.invoke(app, ["cache", "--clean", "everything"])
    assert result.exit_code == 2 and "'everything' is not one of" in result.output
    assert (home / "checkpoints" / "model_20200101-0123abcd.pth").is_file()


def test_clean_is_refused_while_another_process_builds_and_works_after(
    home, tiny_checkpoint, tmp_path
) -> None:
    _predict(tiny_checkpoint, tmp_path, "openvino")
    before = _state(tmp_path)
    [lock] = (home / "onnx" / "optimized" / "openvino").glob("*.lock")
    code = (  # what a compile in progress holds
        "import sys; from filelock import FileLock\n"
        f"with FileLock({str(lock)!r}):\n"
        "    print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = runner.invoke(app, ["cache", "--clean", "all"])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
        assert "another isaseg process is writing into the cache" in result.output
        assert _state(tmp_path) == before
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    result = runner.invoke(app, ["cache", "--clean", "all"])
    assert result.exit_code == 0, result.output
    assert all(used["files"] == 0 for used in _state(tmp_path).values())
    assert lock.is_file()  # kept: a waiter may hold it open
