"""The exported file behind ``--backend onnxruntime|openvino``: exported and verified once per
weights, model and versions, then reused from ``<cache>/onnx/``."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from importlib import metadata as package_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from isaseg_cli.engine.infer.backends import ExportedModel, describe_exported, open_exported
from isaseg_cli.engine.infer.exported import ExportedSegmenter
from isaseg_cli.engine.infer.runtime import writable
from isaseg_cli.errors import CheckpointError, ExportError
from isaseg_cli.export.files import is_exported_file
from isaseg_cli.hub.cache import cache_dir
from isaseg_cli.hub.lock import exclusive
from isaseg_cli.hub.record import DigestRecord, current_digest
from isaseg_cli.zoo.spec import ZooEntry

# Nothing here imports torch: on a cache hit, `predict --backend onnxruntime` runs without it.
# The PyTorch side (loading the weights, exporting, verifying) is imported on a miss only.
EXPORT_OPSET = 18
# What a first run on an exported backend is doing (``on_stage``), for the commands' status.
STAGE_MESSAGES = {
    "export": "exporting the weights to ONNX, once for these weights (minutes at full size)",
    "verify": "verifying the export in onnxruntime",
    "optimize": "optimising the ONNX graph for this CPU, once",
    "wait": "waiting for another isaseg process optimising the same graph",
    "wait_export": "waiting for another isaseg process exporting the same weights",
}

if TYPE_CHECKING:
    from isaseg_cli.engine.loading import LoadedModel

Opened = TypeVar("Opened")


def export_key(weights_sha256: str, model: str | None, opset: int = EXPORT_OPSET) -> str:
    """What an exported file depends on: the weights, the model named for them (a checkpoint
    without meta needs one), the export options and the versions of the exporting code."""
    from isaseg_cli import __version__

    parts = {
        "weights": weights_sha256,
        "model": model,
        "export": {"dynamic": True, "output": "logits", "precision": "fp32", "opset": opset},
        "isaseg": __version__,
        "torch": package_metadata.version("torch"),
        "onnxscript": package_metadata.version("onnxscript"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def weights_digest(checkpoint: Path) -> str:
    """The checkpoint's SHA-256, remembered under ``<cache>/onnx/digests/`` by path, size and
    mtime: hashing a 150 MB checkpoint at every start would cost a few tenths of a second."""
    resolved = checkpoint.resolve()
    name = hashlib.sha256(str(resolved).encode()).hexdigest()[:24]
    memo = export_dir() / "digests" / name
    try:
        text, size, mtime_ns = memo.read_text().split()
        known: DigestRecord | None = DigestRecord(text, int(size), int(mtime_ns))
    except (OSError, ValueError):
        known = None
    digest = current_digest(resolved, known)
    stat = resolved.stat()
    if known != DigestRecord(digest, stat.st_size, stat.st_mtime_ns):
        tmp = memo.with_name(f"{name}.{os.getpid()}.tmp")
        try:  # a read-only cache only loses the memo
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(f"{digest} {stat.st_size} {stat.st_mtime_ns}\n")
            os.replace(tmp, memo)
        except OSError:
            tmp.unlink(missing_ok=True)
    return digest


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
    weights_sha256 = weights_digest(Path(checkpoint))
    key = export_key(weights_sha256, entry.name if entry else None)
    path = export_dir() / f"{key[:24]}.onnx"
    if path.is_file():
        return path
    with one_exporter(path, on_stage):
        if not path.is_file():  # else another process exported it while this one waited
            _export(entry, checkpoint, path, weights_sha256, trust, on_stage)
    return path


def one_exporter(path: Path, on_stage: Callable[[str], None] | None) -> AbstractContextManager:
    """The lock of exporting to ``path``: one process exports (minutes at full size) while the
    others wait for its file. A cache that cannot be written takes none, and its export fails
    with its own error."""
    if not writable(path.parent / ".locks"):
        return nullcontext()
    on_wait = None if on_stage is None else lambda: on_stage("wait_export")
    return exclusive(path.parent / ".locks" / f"{path.stem}.lock", on_wait)


def _export(
    entry: ZooEntry | None,
    checkpoint: str | Path,
    path: Path,
    weights_sha256: str,
    trust: bool,
    on_stage: Callable[[str], None] | None,
) -> None:
    from isaseg_cli.engine.loading import load_model
    from isaseg_cli.export import onnx as onnx_export
    from isaseg_cli.export.verify import verification_sizes

    loaded = load_model(entry, checkpoint, trust=trust)
    size = loaded.entry.data.crop_size
    sizes = verification_sizes(size, True, loaded.entry.model)[1:3]
    result = onnx_export.export_onnx(
        loaded,
        path,
        size=size,
        opset=EXPORT_OPSET,
        verify_sizes=sizes,
        weights_sha256=weights_sha256,
        on_stage=on_stage,
    )
    if not result.passed:
        raise ExportError(
            f"the ONNX export of {loaded.entry.name} disagrees with PyTorch: use --backend torch"
        )


def _exported_file(
    backend: str,
    entry: ZooEntry | None,
    checkpoint: str | Path | None,
    **export: Any,
) -> tuple[Path, str]:
    """The file and backend that ``--backend`` and ``--checkpoint`` mean: an exported
    ``checkpoint`` as it is (on onnxruntime when ``backend`` is torch), else the cached export
    of the weights (``export``: the keyword arguments of ``cached_export``)."""
    if is_exported_file(checkpoint):
        assert checkpoint is not None
        return Path(checkpoint), "onnxruntime" if backend == "torch" else backend
    return cached_export(entry, checkpoint, **export), backend


def load_backend(
    backend: str,
    entry: ZooEntry | None,
    checkpoint: str | Path | None,
    *,
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> LoadedModel:
    """The model on ``backend`` (see ``_exported_file``) behind ``Segmentor``'s call contract,
    for the PyTorch code paths (eval). ``on_stage`` is told the keys of ``STAGE_MESSAGES``."""
    from isaseg_cli.engine.infer.backends import load_exported

    return _opened(
        load_exported, backend, entry, checkpoint,
        trust=trust, on_download=on_download, on_stage=on_stage,
    )  # fmt: skip


def open_backend(
    backend: str,
    entry: ZooEntry | None,
    checkpoint: str | Path | None,
    *,
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ExportedModel:
    """The exported network on ``backend`` (see ``_exported_file``), without torch when the
    export is cached; the backends keep their builds of the file (``_kept``).
    ``on_stage`` is told the keys of ``STAGE_MESSAGES``."""
    return _opened(
        open_exported, backend, entry, checkpoint,
        trust=trust, on_download=on_download, on_stage=on_stage,
    )  # fmt: skip


def _opened(
    open_file: Callable[..., Opened],
    backend: str,
    entry: ZooEntry | None,
    checkpoint: str | Path | None,
    *,
    on_stage: Callable[[str], None] | None,
    **export: Any,
) -> Opened:
    """``open_file`` (``backends.open_exported`` or ``load_exported``) on the file that
    ``_exported_file`` gives (``export``: more keyword arguments of ``cached_export``), with
    the backends' builds (``_kept``). A cached export removed between being found and being
    opened, by ``isaseg cache --clean`` in another process, is made again once instead of
    failing the run."""
    path, resolved = _exported_file(backend, entry, checkpoint, on_stage=on_stage, **export)
    try:
        return open_file(path, resolved, **_kept(path, checkpoint, resolved), on_stage=on_stage)
    except ExportError:
        if is_exported_file(checkpoint) or path.is_file():
            raise
    # exported again, after the clean (which holds the export's lock while it removes files)
    path, resolved = _exported_file(backend, entry, checkpoint, on_stage=on_stage, **export)
    return open_file(path, resolved, **_kept(path, checkpoint, resolved), on_stage=on_stage)


def _kept(path: Path, checkpoint: str | Path | None, backend: str) -> dict[str, Any]:
    """Where and by which name the backends keep their builds of ``path``. A cached export's
    name says what it holds; a user's file may change under its name, so its builds are named
    by its SHA-256 (hashed once, then remembered by path, size and mtime)."""
    name = None
    if is_exported_file(checkpoint):
        describe_exported(path, backend)  # a refused file leaves no digest in the cache
        name = f"file-{weights_digest(path)[:24]}"
    return {"optimized_dir": optimized_dir(), "kept_name": name}


def export_dir() -> Path:
    """Where exported files are cached, with the checkpoints' remembered digests and
    ``optimized_dir``."""
    return cache_dir() / "onnx"


def optimized_dir() -> Path:
    """Where the backends keep what they build from cached exports: ONNX Runtime's optimised
    graphs, and OpenVINO's compiled models in ``openvino/`` (``backends.open_exported``)."""
    return export_dir() / "optimized"


def exported_segmenter(
    backend: str,
    name: str | None,
    checkpoint: str | Path | None,
    *,
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    options: dict[str, Any],
) -> ExportedSegmenter:
    """The segmenter of ``predict`` and ``serve`` whose network runs on ``backend``, on the CPU
    where the backends run (torch-free: ``ExportedSegmenter``). ``name`` is the zoo entry of
    ``checkpoint``'s weights, if any; ``options`` are the other Segmenter keyword arguments."""
    entry = None
    if name is not None:  # the zoo's YAML is read only when a model is named
        from isaseg_cli.zoo.catalog import resolve_entry

        entry = resolve_entry(name)
    exported = open_backend(
        backend, entry, checkpoint, trust=trust, on_download=on_download, on_stage=on_stage
    )
    return ExportedSegmenter(exported, **{**options, "device": "cpu"})
