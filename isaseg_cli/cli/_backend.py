"""Checks shared by `predict` and `serve` for an exported network (a `.onnx` file, `--backend`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isaseg_cli.errors import InputError


def uses_export(backend: str, checkpoint: Path | None) -> bool:
    """Whether the network runs as an ONNX export rather than in PyTorch."""
    return backend != "torch" or is_exported(checkpoint)


def is_exported(checkpoint: Path | None) -> bool:
    return checkpoint is not None and checkpoint.suffix.lower() == ".onnx"


def check_exported_options(
    backend: str, name: str | None, checkpoint: Path | None, options: dict[str, Any]
) -> None:
    """What can be checked before the export is loaded (or made): backend, device, precision.

    ``options`` are Segmenter keyword arguments; ``compile`` may be absent.
    """
    from isaseg_cli.engine.infer.backends import check_backend_options

    backend = "onnxruntime" if backend == "torch" else backend  # a given .onnx file
    compiled = bool(options.get("compile", False))
    check_backend_options(backend, options["device"], options["precision"], compiled)
    if is_exported(checkpoint) and name is not None:
        raise InputError("an exported .onnx file carries its model: drop the model name")
