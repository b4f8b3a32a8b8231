"""A user's own dataset: an image folder and a label folder per split, paired by name stem."""

from __future__ import annotations

from pathlib import Path

from isaseg_cli.data.base import Sample, check_samples, scan_pairs
from isaseg_cli.errors import DatasetNotFoundError

# No fixed image suffix: any common image type is taken unless data.img_suffix names one.
IMG_SUFFIX = ""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SEG_MAP_SUFFIX = ".png"

# (image folder, label folder) pairs tried in order: isaseg's names, then mmseg's custom layout.
LAYOUTS = (("images", "labels"), ("img_dir", "ann_dir"))


def list_custom(root: Path, split: str, img_suffix: str, seg_map_suffix: str) -> list[Sample]:
    """Pairs ``images/<split>/<stem><img_suffix>`` with ``labels/<split>/<stem><seg_map_suffix>``
    under ``root`` (or mmseg's ``img_dir``/``ann_dir``), scanning the folders recursively.

    An empty ``img_suffix`` takes every file with a common image suffix (``IMAGE_SUFFIXES``).
    """
    for image_name, label_name in LAYOUTS:
        image_dir, label_dir = root / image_name / split, root / label_name / split
        if image_dir.is_dir():
            break
    else:
        raise DatasetNotFoundError(
            f"dataset folder {root / 'images' / split} not found; expected "
            f"{root}/images/{split}/*{img_suffix or '.jpg'} and "
            f"{root}/labels/{split}/*{seg_map_suffix}"
        )
    if not label_dir.is_dir():
        raise DatasetNotFoundError(
            f"label folder {label_dir} not found; expected {label_dir}/*{seg_map_suffix}"
        )
    suffixes = (img_suffix,) if img_suffix else IMAGE_SUFFIXES
    samples = [
        sample
        for suffix in suffixes
        for sample in scan_pairs(image_dir, label_dir, suffix, seg_map_suffix)
    ]
    samples.sort(key=lambda sample: sample.image_path.relative_to(image_dir).as_posix())
    return check_samples(samples, str(image_dir))
