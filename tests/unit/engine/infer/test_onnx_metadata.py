"""``read_metadata``: an ONNX file's metadata_props found by walking the protobuf's top level,
wherever the field lies, and a file that is not a protobuf message refused."""

from __future__ import annotations

import pytest

from isaseg_cli.engine.infer.onnx_metadata import NotAModel, read_metadata

onnx = pytest.importorskip("onnx")


def _props(model) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def test_it_reads_what_onnx_reads_from_an_export(tiny_onnx) -> None:
    metadata = read_metadata(tiny_onnx["path"])
    assert metadata == _props(onnx.load(str(tiny_onnx["path"]))) and "entry" in metadata


def test_metadata_before_the_graph_and_unknown_fields_are_read_too(tiny_onnx, tmp_path) -> None:
    model = onnx.load(str(tiny_onnx["path"]))
    head = onnx.ModelProto()
    head.metadata_props.extend(model.metadata_props)
    head.metadata_props.add(key="ünïcode", value="välue")
    head.model_version = 7  # a varint field between the entries and the graph
    del model.metadata_props[:]
    path = tmp_path / "reordered.onnx"
    # Serialised messages concatenate into one whose fields keep that order.
    path.write_bytes(head.SerializeToString() + model.SerializeToString())
    parsed = onnx.load(str(path))
    assert read_metadata(path) == _props(parsed) and read_metadata(path)["ünïcode"] == "välue"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"\x08\x07garbage", "invalid field tag"),
        (b"\x08", "ends inside a field"),
        (b"\x3a\x05ab", "runs past the end"),  # the graph (field 7) cut short
    ],
)
def test_what_is_not_a_model_is_refused(tmp_path, content, reason) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(NotAModel, match=reason):
        read_metadata(path)


def test_a_truncated_export_is_refused(tiny_onnx, tmp_path) -> None:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(tiny_onnx["path"].read_bytes()[:50_000])
    with pytest.raises(NotAModel):
        read_metadata(path)
