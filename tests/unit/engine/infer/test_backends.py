"""The exported tiny model on ONNX Runtime and OpenVINO: fixture parity through isaseg's own
whole, slide and ms+flip code, under the tolerance rule of the PyTorch parity tests."""

from __future__ import annotations

import sys

import pytest

from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.engine.infer.backends import check_backend_options, load_exported
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


def _with_metadata(source, target, **changes) -> None:
    """``source`` with its metadata changed (``None`` removes a key)."""
    import onnx

    model = onnx.load(str(source))
    props = {prop.key: prop.value for prop in model.metadata_props}
    props.update(changes)
    del model.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"output": "argmax"}, "outputs argmax; isaseg's backends need logits"),
        ({"entry": None}, "has no isaseg metadata"),
    ],
)
def test_a_file_the_backends_cannot_use_is_refused_before_anything_is_built(
    tiny_onnx, tmp_path, backend, changes, message
) -> None:
    pytest.importorskip(backend)
    path, kept = tmp_path / "model.onnx", tmp_path / "optimized"
    _with_metadata(tiny_onnx["path"], path, **changes)
    stages: list[str] = []
    with pytest.raises(ExportError, match=message):
        load_exported(path, backend, optimized_dir=kept, on_stage=stages.append)
    assert stages == [] and not kept.exists()


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
