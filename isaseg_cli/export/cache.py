"""The exported file behind ``--backend onnxruntime|openvino``: exported and verified once per
weights, model and versions, then reused from ``<cache>/onnx/``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import torch

from isaseg_cli.engine.infer.backends import load_exported
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.engine.loading import LoadedModel, load_model
from isaseg_cli.errors import CheckpointError, ExportError
from isaseg_cli.export.onnx import DEFAULT_OPSET, export_onnx, sha256_file
from isaseg_cli.export.verify import verification_sizes
from isaseg_cli.hub.cache import cache_dir
from isaseg_cli.zoo.spec import ZooEntry


def is_exported_file(path: str | Path | None) -> bool:
    """An ``.onnx`` file (``isaseg export``), as opposed to PyTorch weights."""
    return path is not None and Path(path).suffix.lower() == ".onnx"


def export_key(weights_sha256: str, model: str | None, opset: int = DEFAULT_OPSET) -> str:
    """What an exported file depends on: the weights, the model named for them (a checkpoint
    without meta needs one), the export options and the versions of the exporting code."""
    from isaseg_cli import __version__

    parts = {
        "weights": weights_sha256,
        "model": model,
        "export": {"dynamic": True, "output": "logits", "precision": "fp32", "opset": opset},
        "isaseg": __version__,
        "torch": torch.__version__,
        "onnxscript": package_metadata.version("onnxscript"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached_export(
    entry: ZooEntry | None,
    checkpoint: str | Path | None,
    *,
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Path:
    """The dynamic logits file for these weights, exported (and verified at two sizes with
    other head paddings) on first use.

    Raises:
        CheckpointError: no weights to export.
        ExportError: the export failed, or disagrees with PyTorch.
    """
    if checkpoint is None:
        if entry is None or entry.weights is None:
            raise CheckpointError(
                "no checkpoint: give a zoo model with published weights or a file"
            )
        from isaseg_cli.engine.distributed import ensure_weights_once

        checkpoint = ensure_weights_once(entry.weights, on_progress=on_download)
    weights_sha256 = sha256_file(Path(checkpoint))
    key = export_key(weights_sha256, entry.name if entry else None)
    path = cache_dir() / "onnx" / f"{key[:24]}.onnx"
    if path.is_file():
        return path
    loaded = load_model(entry, checkpoint, trust=trust)
    size = loaded.entry.data.crop_size
    sizes = verification_sizes(size, True, loaded.entry.model)[1:3]
    result = export_onnx(
        loaded,
        path,
        size=size,
        verify_sizes=sizes,
        weights_sha256=weights_sha256,
        on_stage=on_stage,
    )
    if not result.passed:
        raise ExportError(
            f"the ONNX export of {loaded.entry.name} disagrees with PyTorch: use --backend torch"
        )
    return path


def load_backend(
    backend: str,
    entry: ZooEntry | None,
    checkpoint: str | Path | None,
    *,
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> LoadedModel:
    """The model on ``backend`` (onnxruntime or openvino): an exported ``checkpoint`` as it is
    (on onnxruntime when ``backend`` is torch), else the cached export of the weights."""
    if is_exported_file(checkpoint):
        assert checkpoint is not None
        return load_exported(checkpoint, "onnxruntime" if backend == "torch" else backend)
    path = cached_export(entry, checkpoint, trust=trust, on_download=on_download, on_stage=on_stage)
    return load_exported(path, backend)


def exported_segmenter(
    backend: str,
    name: str | None,
    checkpoint: str | Path | None,
    *,
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
    options: dict[str, Any],
) -> Segmenter:
    """A Segmenter whose network runs on ``backend`` (as ``load_backend`` picks it), on the CPU
    where the backends run. ``name`` is the zoo entry of ``checkpoint``'s weights, if any;
    ``options`` are the other Segmenter keyword arguments."""
    from isaseg_cli.zoo.catalog import resolve_entry

    entry = resolve_entry(name) if name is not None else None
    loaded = load_backend(backend, entry, checkpoint, trust=trust, on_download=on_download)
    return Segmenter(loaded, **{**options, "device": "cpu"})
