"""The `--backend` choice of predict, eval, serve and benchmark, and the checks of an exported
network (a `.onnx` file or a backend other than torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isaseg_cli.errors import InputError
from isaseg_cli.export.files import is_exported_file


def resolve_backend(backend: str, checkpoint: Path | None) -> str:
    """The backend ``--backend`` names; ``auto`` is ONNX Runtime for an exported ``.onnx``
    checkpoint, else PyTorch. Any backend but ``torch`` runs the network as an ONNX export.

    Raises:
        InputError: ``torch`` asked for explicitly with an exported file, which PyTorch cannot
            run (rather than running it on ONNX Runtime without a word).
    """
    if not is_exported_file(checkpoint):
        return "torch" if backend == "auto" else backend
    if backend == "torch":
        raise InputError(
            f"--backend torch runs .pth weights, and {checkpoint} is an ONNX export: "
            "use --backend onnxruntime or openvino, or leave --backend out"
        )
    return "onnxruntime" if backend == "auto" else backend


def check_exported_options(
    backend: str, name: str | None, checkpoint: Path | None, options: dict[str, Any]
) -> None:
    """What can be checked before the export is loaded (or made): backend (resolved, not
    ``torch``), device, precision.

    ``options`` are Segmenter keyword arguments; ``compile`` may be absent.
    """
    from isaseg_cli.engine.infer.backends import check_backend_options

    compiled = bool(options.get("compile", False))
    check_backend_options(backend, options["device"], options["precision"], compiled)
    if is_exported_file(checkpoint) and name is not None:
        raise InputError("an exported .onnx file carries its model: drop the model name")
