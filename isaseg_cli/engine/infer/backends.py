"""Exported networks (ONNX files) on ONNX Runtime or OpenVINO. ``open_exported`` opens a file
with its metadata without importing torch (``engine.infer.exported`` segments with it);
``load_exported`` puts the same network behind the call contract of ``Segmentor`` in eval mode,
so the PyTorch code (``engine.infer.pipeline``, evaluation, benchmarks) runs on it as is."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from isaseg_cli.engine.infer.onnx_metadata import NotAModel, read_metadata
from isaseg_cli.engine.infer.openvino_model import openvino_model
from isaseg_cli.engine.infer.ort_session import onnxruntime_session
from isaseg_cli.engine.infer.runtime import EXTRAS, Runner, StageFn
from isaseg_cli.errors import ExportError, InputError
from isaseg_cli.zoo.spec import ZooEntry, from_dict

if TYPE_CHECKING:  # torch is imported where it is used: open_exported must not load it
    import torch
    from torch import Tensor

    from isaseg_cli.engine.loading import LoadedModel

BACKENDS = ("torch", "onnxruntime", "openvino")


@dataclass(frozen=True, slots=True)
class ExportedModel:
    """An opened exported file: ``run`` maps images (N, 3, H, W) float32 to logits (N, K, H, W)
    float32 at the input size; the rest comes from the file's metadata."""

    run: Runner
    entry: ZooEntry
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    checkpoint: Path
    backend: str


class ExportedNetwork:
    """An exported file that maps images (N, 3, H, W) float32 to logits (N, K, H, W), as
    ``Segmentor`` does: ``network(images)["out"]`` and ``network.resize(logits, size)``.

    Runs on the CPU; ``eval()`` and ``to("cpu")`` exist so callers written for a
    ``Segmentor`` can treat it as one.
    """

    def __init__(self, run: Runner, *, align_corners: bool, backend: str) -> None:
        self._run = run
        self.align_corners = align_corners
        self.backend = backend

    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        import torch

        array = np.ascontiguousarray(images.detach().float().cpu().numpy())
        return {"out": torch.from_numpy(self._run(array))}

    def resize(self, logits: Tensor, size: tuple[int, int] | list[int]) -> Tensor:
        """Bilinear resize with the exported model's ``align_corners`` (``Segmentor.resize``)."""
        import torch.nn.functional as F

        return F.interpolate(
            logits.contiguous(), size=tuple(size), mode="bilinear", align_corners=self.align_corners
        )

    def eval(self) -> ExportedNetwork:
        return self

    def to(self, device: torch.device | str) -> ExportedNetwork:
        import torch

        if torch.device(device).type != "cpu":
            raise InputError(f"the {self.backend} backend runs on the CPU, not on {device}")
        return self


def check_backend_options(backend: str, device: str, precision: str, compile: bool) -> None:
    """Raises InputError for options that only the PyTorch backend has."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if device not in ("auto", "cpu"):
        raise InputError(f"the {backend} backend runs on the CPU: drop --device {device}")
    if precision != "fp32":
        raise InputError(f"the {backend} backend runs the file's own precision: drop --precision")
    if compile:
        raise InputError("--compile applies to the torch backend only")


def _onnxruntime(
    path: Path,
    threads: int | None,
    optimized_dir: Path | None,
    kept_name: str | None,
    on_stage: StageFn | None,
) -> Runner:
    session = onnxruntime_session(
        path, threads, optimized_dir=optimized_dir, kept_name=kept_name, on_stage=on_stage
    )
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def _openvino(
    path: Path,
    threads: int | None,
    optimized_dir: Path | None,
    kept_name: str | None,
    on_stage: StageFn | None,
) -> Runner:
    cache_dir = None if optimized_dir is None else optimized_dir / "openvino"
    return openvino_model(path, threads, cache_dir, on_stage, lock_name=kept_name)


def open_exported(
    path: str | Path,
    backend: str = "onnxruntime",
    *,
    threads: int | None = None,
    optimized_dir: Path | None = None,
    kept_name: str | None = None,
    on_stage: StageFn | None = None,
) -> ExportedModel:
    """An exported file (``isaseg export``) opened on ``backend``, with the entry, classes and
    palette from its metadata. Imports no torch.

    ``optimized_dir``: where the backends keep what they build from ``path``: ONNX Runtime's
    optimised graph (``ort_session.onnxruntime_session``), found by ``kept_name`` (default:
    ``path``'s stem), which must change with ``path``'s contents; and, in its ``openvino``
    folder, OpenVINO's compiled model (``openvino_model``), found by ``path`` itself when
    there is no ``kept_name``, else by a hash of the model.
    ``on_stage``: see ``runtime.StageFn``.

    Raises:
        ExportError: the file is not a readable ONNX model, was not written by isaseg, or does
            not output logits (the backends need them for slide and ms+flip).
        MissingExtraError: the backend's extra is not installed.
    """
    path = Path(path)
    if backend not in EXTRAS:
        raise InputError(f"an exported file runs on {' or '.join(EXTRAS)}, not {backend}")
    described = describe_exported(path, backend)  # before building anything from the file
    open_backend = _onnxruntime if backend == "onnxruntime" else _openvino
    run = open_backend(path, threads, optimized_dir, kept_name, on_stage)
    size = described.static_size
    return ExportedModel(
        run=run if size is None else _one_size(run, path, size),
        entry=described.entry,
        classes=described.classes,
        palette=described.palette,
        checkpoint=path,
        backend=backend,
    )


@dataclass(frozen=True, slots=True)
class ExportedMetadata:
    """What an exported file's metadata says isaseg needs: ``static_size`` is (h, w) for a
    file exported with ``--size``, None for a dynamic one."""

    entry: ZooEntry
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    static_size: tuple[int, int] | None


def describe_exported(path: Path, backend: str = "onnxruntime") -> ExportedMetadata:
    """``path``'s metadata, read without loading the network (``onnx_metadata``) and checked:
    written by isaseg, with logits out. ``backend`` names the runtime in the error.

    Raises:
        ExportError: as ``open_exported``.
    """
    try:
        metadata = read_metadata(path)
    except (OSError, NotAModel) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not an ONNX file ({exc})"
        raise ExportError(f"{backend} cannot load {path}: {reason}") from None
    try:
        entry = from_dict(ZooEntry, json.loads(metadata["entry"]), f"{path} metadata")
        classes = tuple(json.loads(metadata["classes"]))
        palette = tuple(tuple(int(v) for v in color) for color in json.loads(metadata["palette"]))
        output = metadata["output"]
        static_size = None
        if not json.loads(metadata.get("dynamic", "true")):
            height, width = (int(side) for side in json.loads(metadata["export_size"]))
            static_size = (height, width)
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportError(f"{path} has no isaseg metadata ({exc}): export it with isaseg") from None
    if output != "logits":
        raise ExportError(
            f"{path} outputs {output}; isaseg's backends need logits (export with --output logits)"
        )
    return ExportedMetadata(
        entry,
        classes,
        palette,  # type: ignore[arg-type]  # three ints per colour, as exported
        static_size,
    )


def _one_size(run: Runner, path: Path, size: tuple[int, int]) -> Runner:
    """A static file's runner (``isaseg export --size``): a batch goes through one image at a
    time, the file's batch being 1, and another size than the file's is refused by name
    instead of failing in the runtime with a shape message."""

    def run_static(images: np.ndarray) -> np.ndarray:
        got = tuple(images.shape[2:])
        if got != size:
            raise InputError(
                f"{path.name} takes {size[0]}x{size[1]} inputs only (exported with --size), and "
                f"this image reaches the network at {got[0]}x{got[1]}: export it without --size "
                "for a file that takes any size"
            )
        return np.concatenate([run(images[i : i + 1]) for i in range(len(images))])

    return run_static


def load_exported(
    path: str | Path,
    backend: str = "onnxruntime",
    *,
    threads: int | None = None,
    optimized_dir: Path | None = None,
    kept_name: str | None = None,
    on_stage: StageFn | None = None,
) -> LoadedModel:
    """``open_exported``, as a ``LoadedModel`` whose model is an ``ExportedNetwork``.

    Raises:
        ExportError, MissingExtraError: as ``open_exported``.
    """
    from isaseg_cli.engine.loading import LoadedModel

    exported = open_exported(
        path,
        backend,
        threads=threads,
        optimized_dir=optimized_dir,
        kept_name=kept_name,
        on_stage=on_stage,
    )
    network = ExportedNetwork(
        exported.run, align_corners=exported.entry.model.align_corners, backend=backend
    )
    return LoadedModel(
        model=network,  # type: ignore[arg-type]  # the Segmentor call contract, duck-typed
        entry=exported.entry,
        classes=exported.classes,
        palette=exported.palette,
        checkpoint=exported.checkpoint,
    )
