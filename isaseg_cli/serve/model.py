"""The model a server process serves: a zoo entry, a checkpoint, or an exported file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from isaseg_cli.engine.infer.segmenter import Segmenter


def load_segmenter(
    name: str | None,
    checkpoint: str | Path | None,
    *,
    trust: bool = False,
    backend: str = "torch",
    on_stage: Callable[[str], None] | None = None,
    options: dict[str, Any],
) -> Segmenter:
    """The Segmenter ``isaseg serve`` runs, built as ``isaseg predict`` builds it.

    ``options`` are Segmenter keyword arguments (device, precision, mode, ms_flip, ...). An
    exported ``.onnx`` file or another ``backend`` runs the network in that backend on the CPU;
    ``on_stage`` then hears what a first run does (``export.cache.STAGE_MESSAGES``).
    """
    path = Path(checkpoint) if checkpoint is not None else None
    from isaseg_cli.export.files import is_exported_file

    if backend != "torch" or is_exported_file(path):
        from isaseg_cli.export.cache import exported_segmenter

        return exported_segmenter(
            backend, name, path, trust=trust, on_stage=on_stage, options=options
        )
    if path is not None:
        return Segmenter.from_checkpoint(path, name, trust=trust, **options)
    assert name is not None
    return Segmenter.from_zoo(name, **options)
