"""Pascal VOC 2012 with the SBD augmented labels, paired through split files.

See docs/FAITHFULNESS.md#datasets-and-labels.
"""

from __future__ import annotations

from pathlib import Path

from isaseg_cli.data.base import Sample, check_samples, read_split_file, require_dir, stem_pairs
from isaseg_cli.errors import DatasetNotFoundError

IMG_SUFFIX = ".jpg"
SEG_MAP_SUFFIX = ".png"

# The zoo rows train on train.txt (official labels) followed by aug.txt (SBD labels).
TRAIN_SPLITS = ("train", "trainaug")


def list_voc(root: Path, split: str, img_suffix: str, seg_map_suffix: str) -> list[Sample]:
    """``val`` (or any other split file) uses SegmentationClass; ``train``/``trainaug`` are
    ``train.txt`` with SegmentationClass followed by ``aug.txt`` with SegmentationClassAug."""
    image_dir = root / "JPEGImages"
    split_dir = root / "ImageSets" / "Segmentation"
    require_dir(image_dir, f"{root}/JPEGImages/<id>{img_suffix}")
    require_dir(split_dir, f"{root}/ImageSets/Segmentation/{split}.txt")
    parts = [("train" if split in TRAIN_SPLITS else split, "SegmentationClass")]
    if split in TRAIN_SPLITS:
        parts.append(("aug", "SegmentationClassAug"))
    samples: list[Sample] = []
    for split_name, label_folder in parts:
        split_file = split_dir / f"{split_name}.txt"
        label_dir = root / label_folder
        if split_name == "aug" and not split_file.is_file():
            raise DatasetNotFoundError(
                f"split file {split_file} not found: VOC training uses train.txt plus the SBD "
                f"augmented set (aug.txt and SegmentationClassAug/, made by mmseg's voc_aug.py)"
            )
        require_dir(label_dir, f"{root}/{label_folder}/<id>{seg_map_suffix}")
        names = read_split_file(split_file)
        samples += check_samples(
            stem_pairs(names, image_dir, label_dir, img_suffix, seg_map_suffix), str(split_file)
        )
    return samples
