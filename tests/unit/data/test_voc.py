"""Pascal VOC 2012 + SBD: pairs from split files, train = train.txt then aug.txt
(docs/FAITHFULNESS.md#datasets-and-labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.datasets import list_samples, load_label
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.errors import DatasetNotFoundError
from tests.helpers import DATASET_SPECS as SPECS


def test_voc_train_is_train_txt_with_official_labels_then_aug_txt_with_sbd_labels(
    roots: dict[str, Path],
) -> None:
    root = roots["voc12aug"]
    split_dir = root / "ImageSets" / "Segmentation"
    train = split_dir.joinpath("train.txt").read_text().split()
    aug = split_dir.joinpath("aug.txt").read_text().split()
    samples = list_samples(SPECS["voc12aug"], root, "train")
    assert samples == list_samples(SPECS["voc12aug"], root, "trainaug")
    expected = [(n, "SegmentationClass") for n in train] + [
        (n, "SegmentationClassAug") for n in aug
    ]
    assert [(s.image_path.stem, s.label_path.parent.name) for s in samples] == expected
    assert all(s.image_path.parent == root / "JPEGImages" for s in samples)


def test_voc_palette_labels_are_read_as_indices(roots: dict[str, Path]) -> None:
    sample = list_samples(SPECS["voc12aug"], roots["voc12aug"], "val")[0]
    with Image.open(sample.label_path) as image:
        assert image.mode == "P"
        colours = np.array(image.convert("RGB"))
    label = load_label(sample.label_path, num_classes=21)
    assert label.ndim == 2
    # The void border is index 255, painted (224, 224, 192) by the VOC palette.
    assert (label == 255).any()
    assert (colours[label == 255] == (224, 224, 192)).all()


def test_voc_missing_image_from_split_file_is_named(tmp_path: Path) -> None:
    root = write_synthetic_dataset("voc12aug", tmp_path / "voc", num_images=2)
    with (root / "ImageSets" / "Segmentation" / "val.txt").open("a") as handle:
        handle.write("2012_999999\n")
    with pytest.raises(DatasetNotFoundError, match="1 of 3 image files") as info:
        list_samples(SPECS["voc12aug"], root, "val")
    assert str(root / "JPEGImages" / "2012_999999.jpg") in str(info.value)


def test_voc_train_without_the_sbd_set_explains_aug(tmp_path: Path) -> None:
    root = write_synthetic_dataset("voc12aug", tmp_path / "voc", num_images=1)
    (root / "ImageSets" / "Segmentation" / "aug.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="aug.txt.*SBD"):
        list_samples(SPECS["voc12aug"], root, "train")
    assert len(list_samples(SPECS["voc12aug"], root, "val")) == 1
