"""From a zoo entry and/or a checkpoint file to a ready model with its class names and colours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isaseg_cli.engine.checkpoint import apply_weights, entry_from_meta, read_checkpoint
from isaseg_cli.errors import CheckpointError, DownloadError
from isaseg_cli.models.build import build_model
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import ZooEntry

Palette = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    model: Segmentor
    entry: ZooEntry
    classes: tuple[str, ...]
    palette: Palette
    checkpoint: Path


def default_palette(num_classes: int) -> Palette:
    """Distinct, reproducible colours for datasets that bring none (custom data)."""
    generator = torch.Generator().manual_seed(0)
    colors = torch.randint(0, 256, (num_classes, 3), generator=generator).tolist()
    return tuple((int(r), int(g), int(b)) for r, g, b in colors)


def entry_classes(
    entry: ZooEntry, meta: dict[str, Any] | None = None
) -> tuple[tuple[str, ...], Palette]:
    """Class names and palette: the checkpoint's meta, else the entry's data, else generic ones."""
    num_classes = entry.model.num_classes
    meta = meta or {}
    classes = meta.get("CLASSES") or meta.get("dataset_meta", {}).get("classes")
    palette = meta.get("PALETTE") or meta.get("dataset_meta", {}).get("palette")
    if not classes or len(classes) != num_classes:
        if entry.data.classes:
            classes = entry.data.classes
        elif entry.data.dataset in DATASETS:
            classes = DATASETS[entry.data.dataset].classes
        else:
            classes = tuple(f"class{i}" for i in range(num_classes))
    if not palette or len(palette) != len(classes):
        known = DATASETS.get(entry.data.dataset)
        palette = known.palette if known and len(known.classes) == len(classes) else None
    palette = tuple(tuple(int(v) for v in color) for color in palette) if palette else None
    return tuple(classes), palette or default_palette(len(classes))  # type: ignore[return-value]


def load_model(
    entry: ZooEntry | None = None,
    checkpoint: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
) -> LoadedModel:
    """Builds the model and loads its weights strictly, in eval mode on ``device``.

    Args:
        entry: the architecture (a zoo entry). Optional when ``checkpoint`` was written by
            isaseg, whose meta carries its entry.
        checkpoint: a local ``.pth`` file; without it the entry's published weights are used,
            downloaded into the cache on first use.
        trust: allow full unpickling of the checkpoint (only for trusted files).
        on_download: byte progress callback for a download.

    Raises:
        CheckpointError: no way to know the architecture, or the weights do not fit it.
        DownloadError: the published weights are not cached and cannot be fetched.
    """
    if checkpoint is None:
        if entry is None or entry.weights is None:
            raise CheckpointError(
                "no checkpoint: give a zoo model with published weights or a file"
            )
        from isaseg_cli.engine.distributed import ensure_weights_once

        try:
            checkpoint = ensure_weights_once(entry.weights, on_progress=on_download)
        except DownloadError as exc:
            # the same class: a checksum mismatch stays a ChecksumError
            raise type(exc)(
                f"{exc}; or skip the download: --checkpoint FILE --model {entry.name}"
            ) from None
    path = Path(checkpoint)
    payload = read_checkpoint(path, trust=trust)
    if entry is None:
        meta = payload.get("meta")
        entry = entry_from_meta(meta) if isinstance(meta, dict) else None
        if entry is None:
            raise CheckpointError(
                f"{path} does not say which architecture it is: "
                "pass --model with the zoo entry it belongs to"
            )
    model = build_model(entry.model)
    meta = apply_weights(model, payload, str(path))
    model.eval().to(device)
    classes, palette = entry_classes(entry, meta)
    return LoadedModel(model=model, entry=entry, classes=classes, palette=palette, checkpoint=path)
