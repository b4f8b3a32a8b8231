"""An ONNX file's ``metadata_props``, read without parsing its graph: the protobuf's top-level
fields are walked and the graph's bytes (all of the weights) skipped, so that a 141 MB file's
metadata costs a few reads instead of the runtime's full load."""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

# ModelProto.metadata_props, and StringStringEntryProto's key and value (onnx.proto)
METADATA_FIELD = 14
KEY_FIELD, VALUE_FIELD = 1, 2
VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class NotAModel(ValueError):
    """The bytes are not a protobuf message of the expected shape."""


def read_metadata(path: Path) -> dict[str, str]:
    """``path``'s metadata_props as a dict (the last value of a repeated key).

    Raises:
        NotAModel: the file is not a protobuf message (truncated, or not ONNX at all).
        OSError: the file cannot be read.
    """
    metadata: dict[str, str] = {}
    size = os.path.getsize(path)
    if size == 0:
        raise NotAModel("the file is empty")
    with open(path, "rb") as handle:
        while handle.tell() < size:
            field, wire = _tag(handle)
            if wire == BYTES:
                length = _varint(handle)
                if handle.tell() + length > size:
                    raise NotAModel(f"field {field} runs past the end of the file")
                if field == METADATA_FIELD:
                    key, value = _entry(handle.read(length))
                    metadata[key] = value
                else:
                    handle.seek(length, os.SEEK_CUR)
            else:
                _skip(handle, wire)
    return metadata


def _entry(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto's key and value."""
    parts = {KEY_FIELD: "", VALUE_FIELD: ""}
    stream = BytesIO(data)
    while stream.tell() < len(data):
        field, wire = _tag(stream)
        if wire != BYTES:
            _skip(stream, wire)
            continue
        value = stream.read(_varint(stream))
        if field in parts:
            try:
                parts[field] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise NotAModel("a metadata string is not UTF-8") from None
    return parts[KEY_FIELD], parts[VALUE_FIELD]


def _tag(stream: BinaryIO) -> tuple[int, int]:
    tag = _varint(stream)
    field, wire = tag >> 3, tag & 7
    if field == 0 or wire not in (VARINT, FIXED64, BYTES, FIXED32):
        raise NotAModel(f"invalid field tag {tag}")
    return field, wire


def _skip(stream: BinaryIO, wire: int) -> None:
    if wire == VARINT:
        _varint(stream)
    elif len(stream.read(8 if wire == FIXED64 else 4)) != (8 if wire == FIXED64 else 4):
        raise NotAModel("the file ends inside a field")


def _varint(stream: BinaryIO) -> int:
    value = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise NotAModel("the file ends inside a field")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise NotAModel("a varint longer than 10 bytes")
