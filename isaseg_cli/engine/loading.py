"""From a zoo entry and/or a checkpoint file to a ready model with its class names and colours."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isaseg_cli.engine.checkpoint import (
    apply_weights,
    check_state_dict,
    entry_from_meta,
    extract_state_dict,
    read_checkpoint,
)
from isaseg_cli.errors import CheckpointError, DownloadError
from isaseg_cli.models.build import build_model
from isaseg_cli.models.segmentor import Segmentor
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import ModelSpec, ZooEntry

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
    dataset_meta = meta.get("dataset_meta")
    dataset_meta = dataset_meta if isinstance(dataset_meta, dict) else {}
    classes = _as_list(meta.get("CLASSES")) or _as_list(dataset_meta.get("classes"))
    palette = _as_list(meta.get("PALETTE")) or _as_list(dataset_meta.get("palette"))
    if not classes or len(classes) != num_classes:
        if entry.data.classes:
            classes = entry.data.classes
        elif entry.data.dataset in DATASETS:
            classes = DATASETS[entry.data.dataset].classes
        else:
            classes = tuple(f"class{i}" for i in range(num_classes))
    if not _is_palette(palette) or len(palette) != len(classes):
        known = DATASETS.get(entry.data.dataset)
        palette = known.palette if known and len(known.classes) == len(classes) else None
    palette = tuple(tuple(int(v) for v in color) for color in palette) if palette else None
    return tuple(str(name) for name in classes), palette or default_palette(len(classes))  # type: ignore[return-value]


def _as_list(value: Any) -> list:
    """A meta sequence as a list: mmseg 0.x may store a random palette as a NumPy array."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else []


def _is_palette(colors: list) -> bool:
    return bool(colors) and all(
        isinstance(color, (list, tuple))
        and len(color) == 3
        and all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in color)
        for color in colors
    )


# Five times the largest published ISANet (ResNet-101, 56 M parameters).
MAX_PARAMETERS = 300_000_000


def _check_fits_before_building(spec: ModelSpec, payload: dict[str, Any], source: str) -> None:
    """Compares the checkpoint's tensors with the model ``spec`` describes, built on the meta
    device (shapes only, no memory), so a file whose architecture is absurd or does not match
    its weights is refused before any real allocation."""
    state = extract_state_dict(payload, source)
    with torch.device("meta"):
        skeleton = build_model(spec)
    parameters = sum(tensor.numel() for tensor in skeleton.state_dict().values())
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(
            f"{source} describes a model with {parameters:,} parameters "
            f"(more than {MAX_PARAMETERS:,}); refusing to build it"
        )
    check_state_dict(skeleton, state, source)


def load_model(
    entry: ZooEntry | None = None,
    checkpoint: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    trust: bool = False,
    on_download: Callable[[int, int | None], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> LoadedModel:
    """Builds the model and loads its weights strictly, in eval mode on ``device``.

    Args:
        entry: the architecture (a zoo entry). Optional when ``checkpoint`` was written by
            isaseg, whose meta carries its entry.
        checkpoint: a local ``.pth`` file; without it the entry's published weights are used,
            downloaded into the cache on first use.
        trust: allow full unpickling of the checkpoint (only for trusted files).
        on_download: byte progress callback for a download.
        on_status: one-line notes during a download (a retry, a wait for another process).

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
            checkpoint = ensure_weights_once(
                entry.weights, on_progress=on_download, on_status=on_status
            )
        except DownloadError as exc:
            # the same class: a checksum mismatch stays a ChecksumError
            raise type(exc)(
                f"{exc}; or skip the download: --checkpoint FILE --model {entry.name}"
            ) from None
    path = Path(checkpoint)
    payload = read_checkpoint(path, trust=trust)
    if entry is None:
        meta = payload.get("meta")
        entry = entry_from_meta(meta, str(path)) if isinstance(meta, dict) else None
        if entry is None:
            raise CheckpointError(
                f"{path} does not say which architecture it is: "
                "pass --model with the zoo entry it belongs to"
            )
    _check_fits_before_building(entry.model, payload, str(path))
    model = build_model(entry.model)
    meta = apply_weights(model, payload, str(path))
    model.eval().to(device)
    classes, palette = entry_classes(entry, meta)
    return LoadedModel(model=model, entry=entry, classes=classes, palette=palette, checkpoint=path)
