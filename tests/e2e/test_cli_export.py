"""`isaseg export` and the exported file in `predict`, `eval` and `--backend onnxruntime`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.export import cache
from isaseg_cli.export import onnx as onnx_export
from isaseg_cli.export.onnx import sha256_file
from tests.helpers import TINY

pytest.importorskip("onnxruntime")
runner = CliRunner()


def _mask(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_export_verified_the_dynamic_file_at_other_paddings_tall_and_wide(tiny_onnx) -> None:
    record = tiny_onnx["result"]
    assert tiny_onnx["path"].is_file() and record["passed"] and record["dynamic"]
    assert [check["label"] for check in record["checks"]] == [
        "export size", "other head padding", "tall", "wide"
    ]  # fmt: skip
    paddings = {tuple(check["head_padding"]) for check in record["checks"]}
    assert len(paddings) == 4  # four different paddings: none frozen at the export size
    assert all(check["passed"] and check["agreement"] == 1.0 for check in record["checks"])
    assert not list(tiny_onnx["path"].parent.glob("*.incomplete"))


def test_the_verification_table_fits_80_columns_uncut(tiny_onnx) -> None:
    # the fixture's export printed into 80 columns (tests/conftest.py)
    lines = tiny_onnx["output"].splitlines()
    header = next(line for line in lines if line.startswith("size"))
    assert "max |diff|" in header and "pixels equal" in header
    rows = [next(line for line in lines if line.startswith(c["label"]))
            for c in tiny_onnx["result"]["checks"]]  # fmt: skip
    assert all(len(line.rstrip()) <= 80 for line in [header, *rows])
    assert "…" not in "".join([header, *rows])
    for check, row in zip(tiny_onnx["result"]["checks"], rows, strict=True):
        assert f"{check['max_abs_diff']:.2e}" in row and row.rstrip().endswith("yes")


def test_size_and_dynamic_together_is_a_one_line_error(tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "x.onnx"
    args = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = runner.invoke(app, [*args, "--size", "64x64", "--dynamic"])
    assert result.exit_code == 2 and not out.exists()
    assert result.output.strip().startswith("error:") and len(result.output.splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--opset", "99"], "opset 99 is outside 18.."),
        (["--out", "{tmp}"], "is a folder; give a file name"),
        (["--out", "{tmp}/a-file/x.onnx"], "a-file is not a folder"),
    ],
)
def test_an_unusable_opset_or_output_is_a_one_line_error_before_exporting(
    tiny_checkpoint, tmp_path, extra, says
) -> None:
    (tmp_path / "a-file").write_text("")
    extra = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
    args = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "x.onnx")]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and says in result.output
    assert len(result.output.strip().splitlines()) == 1  # not even the "exporting" line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_an_fp16_file_whose_masks_drift_is_not_written_and_the_error_says_why(
    tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    from isaseg_cli.export import verify

    # fp16 rounding moves a few pixels of the tiny network (tests/unit/export): demand none
    monkeypatch.setattr(verify, "FP16_AGREEMENT", 1.0)
    out = tmp_path / "x16.onnx"
    args = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--size", "64x64"]
    result = runner.invoke(app, [*args, "--precision", "fp16"])
    assert result.exit_code == 1 and not out.exists() and not list(tmp_path.iterdir())
    assert "error: the fp16 file's masks differ from PyTorch float32's" in result.output
    assert "--no-verify" in result.output


def test_predict_with_the_onnx_file_writes_the_torch_masks(
    tiny_onnx, tiny_checkpoint, tmp_path, expected
) -> None:
    image = str(TINY / "image.png")
    masks = {}
    for name, checkpoint in (("onnx", tiny_onnx["path"]), ("torch", tiny_checkpoint)):
        out = tmp_path / f"{name}.png"
        args = ["predict", image, "--checkpoint", str(checkpoint), "--out", str(out)]
        result = runner.invoke(app, [*args, "--device", "cpu"])
        assert result.exit_code == 0, result.output
        masks[name] = _mask(out)
    tied = np.sort(expected["whole_logits"][0], axis=0)
    tied = (tied[-1] - tied[-2]) < 1e-3
    assert ((masks["onnx"] == masks["torch"]) | tied).all()
    assert (masks["onnx"] == expected["whole_pred"][0]).mean() > 0.999


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_static_file_runs_its_own_size_in_batches_and_names_it_for_others(
    backend, tiny_checkpoint, tmp_path, expected
) -> None:
    pytest.importorskip(backend)
    static, folder = tmp_path / "static.onnx", tmp_path / "images"
    folder.mkdir()
    height, width = expected["whole_pred"][0].shape  # the tiny entry has no test scale
    args = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(static)]
    exported = runner.invoke(app, [*args, "--size", f"{height}x{width}"])
    assert exported.exit_code == 0, exported.output
    for name in ("a.png", "b.png"):
        shutil.copyfile(TINY / "image.png", folder / name)
    args = ["predict", str(folder), "--checkpoint", str(static), "--backend", backend]
    result = runner.invoke(app, [*args, "--batch-size", "2", "--out", str(tmp_path / "masks")])
    assert result.exit_code == 0, result.output
    for name in ("a.png", "b.png"):
        assert (_mask(tmp_path / "masks" / name) == expected["whole_pred"][0]).mean() > 0.999
    other = tmp_path / "other.png"
    Image.open(TINY / "image.png").resize((width + 8, height)).save(other)
    out = tmp_path / "other_mask.png"
    args = ["predict", str(other), "--checkpoint", str(static), "--backend", backend]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1 and not out.exists()
    assert (
        f"static.onnx takes {height}x{width} inputs only (exported with --size), and this image "
        f"reaches the network at {height}x{width + 8}: export it without --size"
    ) in " ".join(result.output.split())


def test_an_existing_file_is_kept_unless_overwrite(tiny_checkpoint, tmp_path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export")
    args = ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    refused = runner.invoke(app, [*args, "--size", "64x64", "--no-verify"])
    assert refused.exit_code == 2 and out.read_bytes() == b"an earlier export"
    assert refused.output.strip().splitlines() == [
        f"error: {out} already exists: add --overwrite to replace it, or choose another --out"
    ]
    replaced = runner.invoke(app, [*args, "--size", "64x64", "--no-verify", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert out.read_bytes() != b"an earlier export"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_corrupted_onnx_file_is_a_one_line_error(tmp_path, monkeypatch, backend) -> None:
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    out = tmp_path / "mask.png"
    args = ["predict", str(TINY / "image.png"), "--checkpoint", str(broken), "--out", str(out)]
    result = runner.invoke(app, [*args, "--backend", backend])
    assert result.exit_code == 2 and not out.exists()
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {backend} cannot load")
    home = tmp_path / "home"  # nothing kept for a file that cannot be used
    assert not home.exists() or not [p for p in home.rglob("*") if p.is_file()]


@pytest.mark.parametrize("command", ["predict", "eval", "serve"])
def test_an_explicit_torch_backend_with_an_onnx_file_is_refused(tiny_onnx, tmp_path, command):
    """PyTorch cannot run an exported file; the default (auto) runs it on onnxruntime."""
    path = tiny_onnx["path"]
    inputs = {"predict": [str(TINY / "image.png"), "--out", str(tmp_path / "m.png")]}
    args = [command, *inputs.get(command, []), "--checkpoint", str(path), "--backend", "torch"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: --backend torch runs .pth weights, and {path} is an ONNX export: "
        "use --backend onnxruntime or openvino, or leave --backend out"
    )
    assert not (tmp_path / "m.png").exists()


def test_backend_onnxruntime_exports_once_into_the_cache(
    tiny_onnx, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    """A miss exports (here: the fixture's file stands in for the export); a hit does not."""
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    exports = []

    def fake_export(loaded, path, **options):
        exports.append(options)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_onnx["path"], path)
        return type("Result", (), {"passed": True})()

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    image = str(TINY / "image.png")
    for index in range(2):
        out = tmp_path / f"mask{index}.png"
        args = ["predict", image, "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
        result = runner.invoke(app, [*args, "--backend", "onnxruntime"])
        assert result.exit_code == 0, result.output
    assert len(exports) == 1
    assert exports[0]["weights_sha256"] == sha256_file(tiny_checkpoint)
    assert [label for label, _, _ in exports[0]["verify_sizes"]] == ["other head padding", "tall"]
    assert np.array_equal(_mask(tmp_path / "mask0.png"), _mask(tmp_path / "mask1.png"))
    assert len(list((tmp_path / "home" / "onnx").glob("*.onnx"))) == 1


def test_a_first_run_on_onnxruntime_says_what_it_is_doing_once(
    tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    """The export and the graph optimisation take minutes at full size: no silent pause."""
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    args = ["predict", str(TINY / "image.png"), "--checkpoint", str(tiny_checkpoint)]
    args += ["--backend", "onnxruntime", "--overwrite", "--out", str(tmp_path / "mask.png")]
    first, again = runner.invoke(app, args), runner.invoke(app, args)
    assert first.exit_code == again.exit_code == 0, first.output + again.output
    stages = [cache.STAGE_MESSAGES[stage] for stage in ("export", "verify", "optimize")]
    assert all(message in first.output for message in stages), first.output
    assert not any(message in again.output for message in stages), again.output


@pytest.mark.parametrize("source", ["onnx file", "cached export"])
def test_predict_on_onnxruntime_never_imports_torch(
    source, tiny_onnx, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    """Start-up is most of a short run: the exported path must not pay torch's import."""
    home = tmp_path / "home"
    checkpoint = tiny_onnx["path"] if source == "onnx file" else tiny_checkpoint
    if source == "cached export":  # the cache as a first run leaves it
        monkeypatch.setenv("ISASEG_HOME", str(home))
        key = cache.export_key(cache.weights_digest(checkpoint), None)
        (home / "onnx").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_onnx["path"], home / "onnx" / f"{key[:24]}.onnx")
    out = tmp_path / "mask.png"
    argv = ["isaseg", "predict", str(TINY / "image.png"), "--checkpoint", str(checkpoint)]
    argv += ["--backend", "onnxruntime", "--out", str(out)]
    code = (
        f"import sys; sys.argv = {argv!r}; from isaseg_cli.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('torch' in sys.modules)"
    )
    output = _python(code, {**os.environ, "ISASEG_HOME": str(home)})
    assert output.strip().splitlines()[-1] == "False", output
    assert out.is_file()
    if source == "cached export":  # a hit: nothing exported beside the file put there
        assert len(list((home / "onnx").glob("*.onnx"))) == 1


def _python(code: str, env: dict[str, str]) -> str:
    root = str(Path(__file__).resolve().parents[2])
    env = {**env, "PYTHONPATH": os.pathsep.join([root, env.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_eval_on_the_onnx_file_gives_the_torch_metrics(tiny_onnx, tiny_checkpoint, tmp_path):
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_classes=5)
    records = {}
    for name, checkpoint in (("onnx", tiny_onnx["path"]), ("torch", tiny_checkpoint)):
        out = tmp_path / f"{name}.json"
        args = ["eval", "--checkpoint", str(checkpoint), "--data-root", str(root)]
        args += ["--limit", "2", "--workers", "0", "--json-out", str(out)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        records[name] = json.loads(out.read_text())
    assert records["onnx"]["images"] == records["torch"]["images"] > 0
    assert records["onnx"]["mIoU"] == pytest.approx(records["torch"]["mIoU"], abs=0.02)


@pytest.mark.parametrize("source", ["onnx file", "cached export"])
def test_eval_keeps_onnx_runtimes_graph_as_predict_does(
    source, tiny_onnx, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    """eval runs what predict runs: the kept graph, with its Winograd convolutions; a user's
    own file's graph is named by the file's digest, since the file may change under its name."""
    home = tmp_path / "home"
    monkeypatch.setenv("ISASEG_HOME", str(home))
    checkpoint = tiny_onnx["path"] if source == "onnx file" else tiny_checkpoint
    if source == "cached export":
        key = cache.export_key(cache.weights_digest(checkpoint), None)
        (home / "onnx").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_onnx["path"], home / "onnx" / f"{key[:24]}.onnx")
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_classes=5)
    args = ["eval", "--checkpoint", str(checkpoint), "--data-root", str(root), "--limit", "1"]
    result = runner.invoke(app, [*args, "--workers", "0", "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    [kept] = (home / "onnx" / "optimized").glob("*.onnx")
    if source == "onnx file":
        assert kept.name.startswith(f"file-{cache.weights_digest(checkpoint)[:24]}-")
    else:  # named after the export it was built from
        assert kept.name.split("-")[0] in {p.stem for p in (home / "onnx").glob("*.onnx")}
    assert cache.STAGE_MESSAGES["optimize"] in result.output


def test_a_file_that_disagrees_exits_1_and_is_not_written(
    tiny_onnx, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    """The fixture's file (exported from the original weights) stands in for the export of a
    changed checkpoint: the real verification must reject it and leave nothing behind."""
    import torch

    payload = torch.load(tiny_checkpoint, weights_only=False)
    payload["state_dict"]["decode_head.conv_seg.bias"] += 0.5
    changed = tmp_path / "changed.pth"
    torch.save(payload, changed)

    class _Program:
        model = type("Model", (), {"metadata_props": {}, "opset_imports": {"": 18}})()

        def save(self, path: str, external_data: bool) -> None:
            shutil.copyfile(tiny_onnx["path"], path)

    monkeypatch.setattr(onnx_export, "_export_program", lambda *args: _Program())
    out = tmp_path / "changed.onnx"
    result = runner.invoke(app, ["export", "--checkpoint", str(changed), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "disagrees with PyTorch" in result.output and "NO" in result.output
    assert not out.exists() and not list(tmp_path.glob("*.incomplete"))
