"""Cityscapes: the leftImg8bit/gtFine layout and the labelIds -> trainIds conversion
(docs/FAITHFULNESS.md#datasets-and-labels)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from isaseg_cli.data.base import Sample, check_samples, load_label, require_dir, scan_pairs
from isaseg_cli.data.mask_io import save_index_png
from isaseg_cli.errors import DatasetNotFoundError
from isaseg_cli.zoo.classes import CITYSCAPES_ID_TO_TRAIN_ID

IMG_SUFFIX = "_leftImg8bit.png"
SEG_MAP_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


def list_cityscapes(root: Path, split: str, img_suffix: str, seg_map_suffix: str) -> list[Sample]:
    """``leftImg8bit/<split>/<city>/*`` paired with ``gtFine/<split>/<city>/*``."""
    image_dir = root / "leftImg8bit" / split
    label_dir = root / "gtFine" / split
    require_dir(image_dir, f"{root}/leftImg8bit/{split}/<city>/*{img_suffix}")
    if not label_dir.is_dir():
        raise DatasetNotFoundError(
            f"label folder {label_dir} not found; "
            f"expected {root}/gtFine/{split}/<city>/*{seg_map_suffix}"
        )
    samples = scan_pairs(image_dir, label_dir, img_suffix, seg_map_suffix)
    missing = next((s.label_path for s in samples if not s.label_path.is_file()), None)
    if missing is not None:
        label_ids = missing.with_name(missing.name.removesuffix(seg_map_suffix) + LABEL_IDS_SUFFIX)
        if label_ids.is_file():
            raise DatasetNotFoundError(
                f"label {missing} not found, but {label_ids.name} is there: convert the "
                f"*{LABEL_IDS_SUFFIX} files to train ids first (isaseg convert-cityscapes {root})"
            )
    return check_samples(samples, str(image_dir))


def label_ids_lookup() -> np.ndarray:
    """A 256-entry table mapping labelIds to trainIds; any id outside the table maps to 255."""
    table = np.full(256, 255, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table


def convert_label_ids(root: Path, on_progress: Callable[[int, int], None] | None = None) -> int:
    """Writes ``*_gtFine_labelTrainIds.png`` beside every ``*_gtFine_labelIds.png`` under ``root``.

    The lookup route of docs/FAITHFULNESS.md#datasets-and-labels (no cityscapesScripts needed).
    Each file is written to a temporary name and then renamed, so an interrupted run leaves no
    half-written label; existing train-id files are overwritten.

    Args:
        root: the Cityscapes root (its ``gtFine`` folder is scanned when present, else ``root``).
        on_progress: called as ``on_progress(done, total)`` after each file.

    Returns:
        The number of files written.

    Raises:
        DatasetNotFoundError: ``root`` is missing or holds no ``*_gtFine_labelIds.png`` file.
    """
    require_dir(root, f"{root}/gtFine/<split>/<city>/*{LABEL_IDS_SUFFIX}")
    scan_root = root / "gtFine" if (root / "gtFine").is_dir() else root
    sources = sorted(scan_root.rglob(f"*{LABEL_IDS_SUFFIX}"))
    if not sources:
        raise DatasetNotFoundError(f"no *{LABEL_IDS_SUFFIX} files found under {scan_root}")
    table = label_ids_lookup()
    for done, source in enumerate(sources, start=1):
        train_ids = table[load_label(source)]
        target = source.with_name(source.name[: -len(LABEL_IDS_SUFFIX)] + SEG_MAP_SUFFIX)
        save_index_png(target, train_ids)  # grayscale, written atomically
        if on_progress is not None:
            on_progress(done, len(sources))
    return len(sources)
