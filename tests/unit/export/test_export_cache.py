"""The export cache: the backends' builds of a user's exported file, kept under the file's digest
so that a file that changes under the same name is never run through an older file's graph;
and one export of a checkpoint however many first runs ask for it at once."""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest

from isaseg_cli.engine.infer.backends import open_exported
from isaseg_cli.export.cache import open_backend, optimized_dir

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
IMAGES = np.random.default_rng(0).standard_normal((1, 3, 40, 56)).astype(np.float32)


def _shifted(source, target, offset: float) -> None:
    """``source`` with its classifier's bias (5 classes) moved by ``offset``: the same
    metadata, other logits."""
    model = onnx.load(str(source))
    float32 = onnx.TensorProto.FLOAT
    bias = next(t for t in model.graph.initializer if t.dims == [5] and t.data_type == float32)
    array = onnx.numpy_helper.to_array(bias) + np.float32(offset)
    bias.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), bias.name))
    onnx.save(model, str(target))


def _copying_export(source, exports, started=None, delay: float = 0.0):
    """A stand-in for ``export.onnx.export_onnx`` that copies ``source`` into place (the real
    export takes a minute at full size, seconds on the tiny model), noting each path in
    ``exports`` and setting ``started`` before its ``delay``."""

    def export(loaded, path, **options):
        exports.append(path)
        if started is not None:
            started.set()
        time.sleep(delay)
        partial = path.with_suffix(".part")
        shutil.copyfile(source, partial)
        os.replace(partial, path)
        return type("Result", (), {"passed": True})()

    return export


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_users_file_is_kept_by_digest_and_a_changed_one_rebuilt(
    backend, tiny_onnx, tmp_path, monkeypatch
) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    user = tmp_path / "model.onnx"
    shutil.copyfile(tiny_onnx["path"], user)
    first = open_backend(backend, None, user).run(IMAGES)
    built = sorted(p.name for p in optimized_dir().rglob("*") if p.is_file())
    assert built and all(p.startswith("file-") or p.endswith(".blob") for p in built)
    assert np.allclose(open_backend(backend, None, user).run(IMAGES), first, atol=1e-5)
    assert sorted(p.name for p in optimized_dir().rglob("*") if p.is_file()) == built

    _shifted(tiny_onnx["path"], tmp_path / "other.onnx", 0.5)
    os.replace(tmp_path / "other.onnx", user)  # new contents, same name
    changed = open_backend(backend, None, user).run(IMAGES)
    assert np.abs(changed - first).max() > 0.4  # not the old file's graph
    expected = open_exported(user, backend).run(IMAGES)  # the new file, nothing kept
    assert np.abs(changed - expected).max() <= 1e-5 * np.abs(expected).max()


def test_concurrent_first_runs_export_once_while_the_others_wait(
    tiny_checkpoint, tiny_onnx, tmp_path, monkeypatch
) -> None:
    from isaseg_cli.export import onnx as onnx_export
    from isaseg_cli.export.cache import cached_export

    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    exports, started = [], threading.Event()
    slow_export = _copying_export(tiny_onnx["path"], exports, started, delay=1.0)
    monkeypatch.setattr(onnx_export, "export_onnx", slow_export)
    results, stages = [], []

    def first_run(on_stage=None) -> None:
        results.append(cached_export(None, tiny_checkpoint, on_stage=on_stage))

    exporter = threading.Thread(target=first_run)
    exporter.start()
    assert started.wait(60)
    first_run(stages.append)  # finds the export under way: waits for it, then uses its file
    exporter.join(60)
    assert len(exports) == 1 and stages == ["wait_export"]
    assert results[0] == results[1] == exports[0] and exports[0].is_file()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_an_export_cleaned_between_finding_and_opening_it_is_made_again(
    backend, tiny_checkpoint, tiny_onnx, tmp_path, monkeypatch
) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    from isaseg_cli.export import cache
    from isaseg_cli.export import onnx as onnx_export
    from isaseg_cli.hub.usage import clear_folders

    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    exports = []
    monkeypatch.setattr(onnx_export, "export_onnx", _copying_export(tiny_onnx["path"], exports))
    first = open_backend(backend, None, tiny_checkpoint).run(IMAGES)
    opened, cleaned = cache.open_exported, []

    def clean_then_open(path, *args, **kwargs):  # `isaseg cache --clean exports`, just then
        if not cleaned:
            parts = [(cache.export_dir(), (optimized_dir(),)), (optimized_dir(), ())]
            cleaned.append(clear_folders(parts))
        return opened(path, *args, **kwargs)

    monkeypatch.setattr(cache, "open_exported", clean_then_open)
    again = open_backend(backend, None, tiny_checkpoint).run(IMAGES)
    assert cleaned[0].files >= 2 and len(exports) == 2 and exports[1].is_file()
    assert np.abs(again - first).max() <= 1e-5 * np.abs(first).max()
