"""Sample lists and label decoding shared by the dataset layouts.

See docs/FAITHFULNESS.md#datasets-and-labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from isaseg_cli.errors import DatasetNotFoundError

IGNORE_INDEX = 255


class Sample(NamedTuple):
    """One image and its label map."""

    image_path: Path
    label_path: Path


def load_label(
    path: str | Path, reduce_zero_label: bool = False, num_classes: int | None = None
) -> np.ndarray:
    """Reads a label map as mmseg does: Pillow, unchanged (palette PNGs give indices), uint8 HxW.

    Args:
        path: the label file.
        reduce_zero_label: ADE20K's rule: 0 -> 255, k -> k - 1, and 255 stays 255
            (docs/FAITHFULNESS.md#datasets-and-labels).
        num_classes: when given, every value must be below it or be 255.

    Raises:
        DatasetNotFoundError: the file cannot be read, is not single-channel, or holds a class
            value >= num_classes (the message names the file and the value).
    """
    try:
        with Image.open(path) as image:
            label = np.array(image)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetNotFoundError(f"cannot read label {path}: {exc}") from None
    label = np.squeeze(label)
    if label.ndim != 2:
        raise DatasetNotFoundError(
            f"label {path} has shape {label.shape}; expected a single-channel class-index image"
        )
    if label.size and (label.min() < 0 or label.max() > IGNORE_INDEX):
        raise DatasetNotFoundError(
            f"label {path} holds value {label.max()}; class-index labels are 8-bit (0..255)"
        )
    label = label.astype(np.uint8)
    if reduce_zero_label:
        label = reduce_zero(label)
    if num_classes is not None:
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
        bad = present[(present >= num_classes) & (present != IGNORE_INDEX)]
        if bad.size:
            raise DatasetNotFoundError(
                f"label {path} holds value {int(bad[0])}, but the dataset has {num_classes} "
                f"classes (0..{num_classes - 1}, {IGNORE_INDEX} = ignore)"
            )
    return label


def reduce_zero(label: np.ndarray) -> np.ndarray:
    """mmseg's uint8 reduce_zero_label: 0 -> 255, v -> v - 1, then 254 -> 255."""
    reduced = label.copy()
    reduced[label == 0] = IGNORE_INDEX
    reduced = reduced - 1
    reduced[reduced == IGNORE_INDEX - 1] = IGNORE_INDEX
    return reduced


def scan_pairs(
    image_dir: Path, label_dir: Path, img_suffix: str, seg_map_suffix: str
) -> list[Sample]:
    """mmseg's pairing without a split file: every ``*img_suffix`` under ``image_dir`` (recursive,
    sorted by relative path) with the label at the same relative path under ``label_dir``."""
    relative = sorted(
        path.relative_to(image_dir).as_posix()
        for path in image_dir.rglob(f"*{img_suffix}")
        if path.is_file()
    )
    return [
        Sample(image_dir / rel, label_dir / (rel[: -len(img_suffix)] + seg_map_suffix))
        for rel in relative
    ]


def stem_pairs(
    names: Iterable[str], image_dir: Path, label_dir: Path, img_suffix: str, seg_map_suffix: str
) -> list[Sample]:
    """mmseg's pairing with a split file: each name stem gives ``image_dir/<stem><img_suffix>``."""
    return [
        Sample(image_dir / f"{n}{img_suffix}", label_dir / f"{n}{seg_map_suffix}") for n in names
    ]


def read_split_file(path: Path) -> list[str]:
    """The non-empty, stripped lines of a split file.

    Raises:
        DatasetNotFoundError: the file is missing.
    """
    if not path.is_file():
        raise DatasetNotFoundError(f"split file {path} not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def require_dir(path: Path, expected: str) -> None:
    """Raises DatasetNotFoundError naming ``path`` and the ``expected`` layout if it is missing."""
    if not path.is_dir():
        raise DatasetNotFoundError(f"dataset folder {path} not found; expected {expected}")


def check_samples(samples: list[Sample], where: str) -> list[Sample]:
    """Checks that ``samples`` is not empty and that every image and label file exists.

    Raises:
        DatasetNotFoundError: naming ``where`` when empty, else the first missing file and
            how many are missing.
    """
    if not samples:
        raise DatasetNotFoundError(f"no images found in {where}")
    for kind, index in (("image", 0), ("label", 1)):
        missing = [sample[index] for sample in samples if not sample[index].is_file()]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} of {len(samples)} {kind} files are missing in {where}, "
                f"the first: {missing[0]}"
            )
    return samples


def duplicate_samples(samples: Iterable[Sample]) -> list[Sample]:
    """The samples listed more than once (each once, in first-seen order)."""
    counts: dict[Sample, int] = {}
    for sample in samples:
        counts[sample] = counts.get(sample, 0) + 1
    return [sample for sample, count in counts.items() if count > 1]
