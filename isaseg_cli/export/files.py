"""What kind of file a ``--checkpoint`` is, told by its name alone, so that the CLI can check
its options before it imports the export code (and its numerical libraries)."""

from __future__ import annotations

from pathlib import Path


def is_exported_file(path: str | Path | None) -> bool:
    """An ``.onnx`` file (``isaseg export``), as opposed to PyTorch weights."""
    return path is not None and Path(path).suffix.lower() == ".onnx"
