"""The exported-network path shared by `predict` and `serve`: a `.onnx` file, or `--backend`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from isaseg_cli.errors import InputError

if TYPE_CHECKING:
    from isaseg_cli.engine.segmenter import Segmenter


def uses_export(backend: str, checkpoint: Path | None) -> bool:
    """Whether the network runs as an ONNX export rather than in PyTorch."""
    return backend != "torch" or is_exported(checkpoint)


def is_exported(checkpoint: Path | None) -> bool:
    return checkpoint is not None and checkpoint.suffix.lower() == ".onnx"


def check_exported_options(
    backend: str, name: str | None, checkpoint: Path | None, options: dict[str, Any]
) -> None:
    """What can be checked before the export is loaded (or made): backend, device, precision.

    ``options`` are Segmenter keyword arguments; ``compile`` and ``scales`` may be absent.
    """
    from isaseg_cli.engine.backends import check_backend_options

    backend = "onnxruntime" if backend == "torch" else backend  # a given .onnx file
    compiled = bool(options.get("compile", False))
    check_backend_options(backend, options["device"], options["precision"], compiled)
    if is_exported(checkpoint) and name is not None:
        raise InputError("an exported .onnx file carries its model: drop the model name")
    if options.get("scales") is not None and not options["ms_flip"]:
        raise InputError("--scales sets the --ms-flip ratios; add --ms-flip")


def exported_segmenter(
    backend: str,
    name: str | None,
    checkpoint: Path | None,
    trust: bool,
    on_download: Any,
    options: dict[str, Any],
) -> Segmenter:
    """A Segmenter on an exported file: the given .onnx, or the cached export of the weights."""
    from isaseg_cli.engine.segmenter import Segmenter
    from isaseg_cli.export.cache import load_backend
    from isaseg_cli.zoo.catalog import resolve_entry

    backend = "onnxruntime" if backend == "torch" else backend  # a given .onnx file
    entry = resolve_entry(name) if name is not None else None
    loaded = load_backend(backend, entry, checkpoint, trust=trust, on_download=on_download)
    return Segmenter(loaded, **{**options, "device": "cpu"})  # the backends run on the CPU
