"""OpenVINO's compiled model of a cached export, kept in OpenVINO's model cache: imported by
later starts (from the path alone, or from the file read when its name says nothing of its
contents), compiled again over a damaged blob, left alone where the folder is read-only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from isaseg_cli.engine.infer import openvino_model as module
from isaseg_cli.engine.infer.openvino_model import openvino_model
from tests.hostile import tmpfs

pytest.importorskip("openvino")
IMAGES = np.random.default_rng(0).standard_normal((1, 3, 45, 61)).astype(np.float32)


@pytest.fixture
def compiled(monkeypatch) -> list:
    """Every model ``openvino_model`` compiles or imports, in order."""
    models: list = []
    compile_ = module._compile

    def recorded(*args):
        models.append(compile_(*args))
        return models[-1]

    monkeypatch.setattr(module, "_compile", recorded)
    return models


def _from_cache(model) -> bool:
    return bool(model.get_property("LOADED_FROM_CACHE"))


@pytest.fixture
def reads(monkeypatch) -> list:
    """The files OpenVINO's Core reads as models (``read_model``), in order."""
    import openvino

    paths: list = []

    class Core(openvino.Core):
        def read_model(self, model, *args):
            paths.append(model)
            return super().read_model(model, *args)

    monkeypatch.setattr(openvino, "Core", Core)
    return paths


@pytest.mark.parametrize("lock_name", [None, "file-0123abcd"])
def test_an_export_is_compiled_once_then_imported(
    tiny_onnx, tmp_path, compiled, reads, lock_name
) -> None:
    reference = openvino_model(tiny_onnx["path"], 2, None, None, lock_name)
    cache = tmp_path / "openvino"
    first = openvino_model(tiny_onnx["path"], 2, cache, None, lock_name)
    [blob] = cache.glob("*.blob")
    again = openvino_model(tiny_onnx["path"], 2, cache, None, lock_name)
    assert [_from_cache(model) for model in compiled] == [False, False, True]
    assert list(cache.glob("*.blob")) == [blob]
    # A name that changes with the contents is enough to find the blob: nothing is read then.
    assert reads == ([] if lock_name is None else [str(tiny_onnx["path"])] * 3)
    expected = reference(IMAGES)
    assert np.allclose(first(IMAGES), expected, atol=1e-5)
    assert np.allclose(again(IMAGES), expected, atol=1e-5)


def test_a_blob_cut_short_is_compiled_again(tiny_onnx, tmp_path, compiled) -> None:
    """What Ctrl-C or a full disk leaves of a blob OpenVINO was writing."""
    cache = tmp_path / "openvino"
    openvino_model(tiny_onnx["path"], 2, cache, None)
    [blob] = cache.glob("*.blob")
    size = blob.stat().st_size
    blob.chmod(0o600)  # OpenVINO writes its blobs read-only
    with blob.open("r+b") as file:
        file.truncate(size // 2)
    run = openvino_model(tiny_onnx["path"], 2, cache, None)
    assert not _from_cache(compiled[-1])
    assert blob.stat().st_size > 0.9 * size  # written again whole (not to the byte: compiles vary)
    reference = openvino_model(tiny_onnx["path"], 2, None, None)
    assert np.allclose(run(IMAGES), reference(IMAGES), atol=1e-5)
    imported = openvino_model(tiny_onnx["path"], 2, cache, None)
    assert _from_cache(compiled[-1]) and np.allclose(imported(IMAGES), reference(IMAGES), atol=1e-5)


def test_concurrent_starts_share_one_blob(tiny_onnx, tmp_path) -> None:
    cache = tmp_path / "openvino"
    stages: list[str] = []
    with ThreadPoolExecutor(3) as pool:
        runs = list(
            pool.map(lambda _: openvino_model(tiny_onnx["path"], 1, cache, stages.append), range(3))
        )
    assert len(list(cache.glob("*.blob"))) == 1 and set(stages) <= {"wait"}
    outputs = [run(IMAGES) for run in runs]
    assert all(np.allclose(output, outputs[0], atol=1e-5) for output in outputs)


def test_a_read_only_cache_folder_compiles_without_it(tiny_onnx, tmp_path, compiled) -> None:
    with tmpfs(tmp_path / "openvino", "size=64k,ro") as cache:
        run = openvino_model(tiny_onnx["path"], 2, cache, None)
        assert list(cache.iterdir()) == []
    assert not _from_cache(compiled[0])
    assert run(IMAGES).shape[-2:] == (45, 61)
