"""The entry point to the dataset layouts (data/datasets.py), on synthetic datasets written in each
real layout; each layout's own rules are in test_<layout>.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from isaseg_cli.data.datasets import dataset_classes, default_data_root, list_samples, load_label
from isaseg_cli.data.image import read_image_bgr
from isaseg_cli.data.synthetic import custom_classes
from isaseg_cli.errors import DatasetNotFoundError, SpecError
from isaseg_cli.zoo.spec import DataSpec
from tests.helpers import DATASET_NUM_CLASSES as NUM_CLASSES
from tests.helpers import DATASET_SPECS as SPECS


@pytest.mark.parametrize("kind", list(SPECS))
@pytest.mark.parametrize("split", ["train", "val"])
def test_each_layout_lists_pairs_whose_labels_fit_their_images(
    roots: dict[str, Path], kind: str, split: str
) -> None:
    spec = SPECS[kind]
    samples = list_samples(spec, roots[kind], split)
    expected = 6 if (kind, split) == ("voc12aug", "train") else 3  # VOC train = train + aug
    assert len(samples) == expected
    assert len({s.image_path for s in samples}) == expected
    for image_path, label_path in samples:
        label = load_label(label_path, spec.reduce_zero_label, NUM_CLASSES[kind])
        assert label.dtype == np.uint8
        assert label.shape == read_image_bgr(image_path).shape[:2]
        assert set(np.unique(label)) - {255} <= set(range(NUM_CLASSES[kind]))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("cityscapes", "leftImg8bit/val"),
        ("ade20k", "images/validation"),
        ("voc12aug", "ImageSets/Segmentation/val.txt"),
        ("custom", "images/val"),
    ],
)
def test_missing_root_names_path_and_layout(tmp_path: Path, kind: str, expected: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        list_samples(SPECS[kind], missing, "val")
    assert str(missing) in str(info.value) and expected in str(info.value)


def test_default_data_root_follows_env_or_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISASEG_DATA", raising=False)
    assert default_data_root("cityscapes") == Path("data/cityscapes")
    monkeypatch.setenv("ISASEG_DATA", "/datasets")
    assert default_data_root("cityscapes") == Path("/datasets/cityscapes")
    assert default_data_root("ade20k") == Path("/datasets/ade/ADEChallengeData2016")
    assert default_data_root("voc12aug") == Path("/datasets/VOCdevkit/VOC2012")
    with pytest.raises(DatasetNotFoundError, match="custom"):
        default_data_root("custom")


def test_classes_and_unknown_datasets() -> None:
    assert len(dataset_classes(SPECS["ade20k"])) == 150
    assert dataset_classes(SPECS["custom"]) == custom_classes()
    with pytest.raises(SpecError, match="class names"):
        dataset_classes(DataSpec(dataset="custom"))
    with pytest.raises(SpecError, match="unknown dataset"):
        list_samples(DataSpec(dataset="kitti"), Path("."), "val")
