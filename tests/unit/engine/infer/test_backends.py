"""The exported tiny model on ONNX Runtime and OpenVINO: fixture parity through isaseg's own
whole, slide and ms+flip code, under the tolerance rule of the PyTorch parity tests."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.engine.infer import backends
from isaseg_cli.engine.infer.backends import (
    check_backend_options,
    load_exported,
    onnxruntime_session,
    open_exported,
)
from isaseg_cli.engine.infer.pipeline import infer_scores
from isaseg_cli.errors import ExportError, InputError, MissingExtraError
from tests.helpers import (
    FIXTURE_CASES,
    FIXTURE_SLIDE,
    TINY,
    assert_close_to_reference,
    assert_masks_match_except_ties,
)

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("mode", list(FIXTURE_CASES))
def test_onnxruntime_matches_the_mmseg_fixture(tiny_onnx, expected, mode) -> None:
    test, ms_flip, scores_key, mask_key = FIXTURE_CASES[mode]
    loaded = load_exported(tiny_onnx["path"], "onnxruntime")
    image = read_image_bgr(TINY / "image.png")
    scores = infer_scores(loaded.model, image, test, ms_flip=ms_flip)
    assert_close_to_reference(scores, expected[scores_key])
    assert_masks_match_except_ties(scores.argmax(1), expected[mask_key], expected[scores_key])


def test_openvino_matches_the_mmseg_fixture(tiny_onnx, expected) -> None:
    pytest.importorskip("openvino")
    loaded = load_exported(tiny_onnx["path"], "openvino")
    assert loaded.classes == ("c0", "c1", "c2", "c3", "c4") and loaded.entry.name == "tiny-test"
    scores = infer_scores(loaded.model, read_image_bgr(TINY / "image.png"), FIXTURE_SLIDE)
    assert_close_to_reference(scores, expected["slide_logits"])
    assert_masks_match_except_ties(
        scores.argmax(1), expected["slide_pred"], expected["slide_logits"]
    )


@pytest.mark.parametrize("content", [b"not an onnx file", b""])
def test_a_corrupted_file_is_an_export_error(tmp_path, content) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ExportError, match="onnxruntime cannot load"):
        load_exported(path)


def test_a_truncated_file_is_an_export_error(tiny_onnx, tmp_path) -> None:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(tiny_onnx["path"].read_bytes()[:50_000])
    with pytest.raises(ExportError) as caught:
        load_exported(path)
    assert "\n" not in str(caught.value)


def test_a_missing_backend_names_its_extra(tiny_onnx, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'isaseg\[openvino\]'"):
        load_exported(tiny_onnx["path"], "openvino")


@pytest.mark.parametrize(
    ("device", "precision", "compile"),
    [("cuda", "fp32", False), ("cpu", "bf16", False), ("auto", "fp32", True)],
)
def test_torch_only_options_are_refused(device, precision, compile) -> None:
    with pytest.raises(InputError):
        check_backend_options("onnxruntime", device, precision, compile)


@pytest.mark.parametrize("damage", ["graph", "weights"])
def test_the_optimised_graph_is_kept_reused_and_rebuilt_when_damaged(
    damage, tiny_onnx, tmp_path
) -> None:
    images = np.random.default_rng(0).standard_normal((1, 3, 45, 61)).astype(np.float32)
    reference = open_exported(tiny_onnx["path"]).run(images)
    kept_dir = tmp_path / "optimized"
    first = open_exported(tiny_onnx["path"], optimized_dir=kept_dir)
    [kept] = kept_dir.glob("*.onnx")
    data = kept.with_suffix(".data")  # the weights, mapped into memory on load
    assert data.stat().st_size > 10 * kept.stat().st_size > 0
    again = open_exported(tiny_onnx["path"], optimized_dir=kept_dir)
    assert again.entry == first.entry and again.classes == first.classes
    assert np.allclose(again.run(images), reference, atol=1e-5)
    if damage == "graph":
        kept.write_bytes(b"damaged")
    else:
        data.unlink()
    rebuilt = open_exported(tiny_onnx["path"], optimized_dir=kept_dir)
    assert np.allclose(rebuilt.run(images), reference, atol=1e-5)
    assert sorted(p.suffix for p in kept_dir.iterdir()) == [".data", ".lock", ".onnx"]
    assert kept.stat().st_size > 1000 and data.stat().st_size > 10 * kept.stat().st_size


def test_concurrent_first_sessions_build_the_kept_graph_once(
    tiny_onnx, tmp_path, monkeypatch
) -> None:
    """The others wait on the lock and load what the first one kept."""
    builds = []
    build = backends._new_session

    def counted(*args):
        builds.append(args[-1])
        return build(*args)

    monkeypatch.setattr(backends, "_new_session", counted)
    kept_dir = tmp_path / "optimized"
    stages: list[str] = []
    options = {"optimized_dir": kept_dir, "on_stage": stages.append}
    with ThreadPoolExecutor(3) as pool:
        sessions = list(
            pool.map(lambda _: onnxruntime_session(tiny_onnx["path"], **options), range(3))
        )
    assert len(builds) == 1 and builds[0] is not None
    assert sorted(stages) == ["optimize", "wait", "wait"]  # the others said they waited
    images = np.random.default_rng(0).standard_normal((1, 3, 40, 40)).astype(np.float32)
    outputs = [s.run(None, {s.get_inputs()[0].name: images})[0] for s in sessions]
    assert all(np.allclose(o, outputs[0], atol=1e-5) for o in outputs)


def test_an_interrupted_build_leaves_no_partial_kept_graph(
    tiny_onnx, tmp_path, monkeypatch
) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession

    def interrupted_once_written(model, options, **kwargs):
        built = session(model, options, **kwargs)
        if options.optimized_model_filepath.endswith(".tmp"):  # Ctrl-C just after ORT wrote it
            assert Path(options.optimized_model_filepath).is_file()
            raise KeyboardInterrupt
        return built

    monkeypatch.setattr(onnxruntime, "InferenceSession", interrupted_once_written)
    kept_dir = tmp_path / "optimized"
    with pytest.raises(KeyboardInterrupt):
        onnxruntime_session(tiny_onnx["path"], optimized_dir=kept_dir)
    assert [p.suffix for p in kept_dir.iterdir()] == [".lock"]
