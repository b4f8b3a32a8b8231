"""Synthetic datasets: images painted from their labels, in the real file formats."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.datasets import list_samples, load_label
from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import DataSpec


@pytest.mark.parametrize(("kind", "reduce"), [("cityscapes", False), ("ade20k", True)])
def test_image_colour_is_the_palette_colour_of_the_label(
    tmp_path: Path, kind: str, reduce: bool
) -> None:
    root = write_synthetic_dataset(kind, tmp_path, num_images=2, num_classes=8, seed=4)
    palette = np.array(DATASETS[kind].palette, dtype=int)
    for image_path, label_path in list_samples(DataSpec(dataset=kind), root, "train"):
        label = load_label(label_path, reduce_zero_label=reduce, num_classes=8)
        rgb = read_image_bgr(image_path)[:, :, ::-1].astype(int)
        for value in set(np.unique(label)) - {255}:
            # Away from region edges, where JPEG's chroma subsampling blends colours.
            inside = cv2.erode((label == value).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            if inside.any():
                mean = rgb[inside].mean(axis=0)
                assert np.abs(mean - palette[value]).max() < 8


def test_cityscapes_label_ids_and_train_ids_agree(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path, num_images=2)
    pairs = 0
    for train_ids_path in root.rglob("*_gtFine_labelTrainIds.png"):
        ids = np.array(Image.open(str(train_ids_path).replace("labelTrainIds", "labelIds")))
        train_ids = np.array(Image.open(train_ids_path))
        assert (train_ids[ids == 7] == 0).all() and (train_ids[ids == 0] == 255).all()
        assert (ids[train_ids == 255] == 0).all() and (ids[train_ids == 13] == 26).all()
        pairs += 1
    assert pairs == 4


def test_same_seed_writes_the_same_dataset(tmp_path: Path) -> None:
    first = write_synthetic_dataset("voc12aug", tmp_path / "a", num_images=1, seed=9)
    second = write_synthetic_dataset("voc12aug", tmp_path / "b", num_images=1, seed=9)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_unknown_kind_or_class_count_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        write_synthetic_dataset("kitti", tmp_path)
    with pytest.raises(ValueError, match="classes"):
        write_synthetic_dataset("voc12aug", tmp_path, num_classes=30)
