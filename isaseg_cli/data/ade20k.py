"""ADE20K (ADEChallengeData2016): images/<split>/*.jpg, annotations/<split>/*.png.

See docs/FAITHFULNESS.md#datasets-and-labels.
"""

from __future__ import annotations

from pathlib import Path

from isaseg_cli.data.base import Sample, check_samples, require_dir, scan_pairs

IMG_SUFFIX = ".jpg"
SEG_MAP_SUFFIX = ".png"

# The split names users type, mapped to the release's folder names.
SPLIT_FOLDERS = {"train": "training", "val": "validation"}


def list_ade20k(root: Path, split: str, img_suffix: str, seg_map_suffix: str) -> list[Sample]:
    """Pairs ``images/<folder>`` with ``annotations/<folder>``; ``train``/``val`` map to folders."""
    folder = SPLIT_FOLDERS.get(split, split)
    image_dir = root / "images" / folder
    label_dir = root / "annotations" / folder
    require_dir(image_dir, f"{root}/images/{folder}/*{img_suffix}")
    require_dir(label_dir, f"{root}/annotations/{folder}/*{seg_map_suffix}")
    return check_samples(
        scan_pairs(image_dir, label_dir, img_suffix, seg_map_suffix), str(image_dir)
    )
