"""Label decoding and sample checks shared by the dataset layouts (data/base.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.datasets import list_samples, load_label
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.errors import DatasetNotFoundError
from tests.helpers import DATASET_SPECS as SPECS


def test_ade20k_reduce_zero_label(tmp_path: Path) -> None:
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    raw[raw > 150] = 255
    Image.fromarray(raw).save(tmp_path / "label.png")
    reduced = load_label(tmp_path / "label.png", reduce_zero_label=True, num_classes=150)
    expected = np.where((raw == 0) | (raw == 255), 255, raw.astype(int) - 1)
    np.testing.assert_array_equal(reduced, expected)
    np.testing.assert_array_equal(load_label(tmp_path / "label.png"), raw)


def test_missing_labels_are_named_and_counted(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "cs", num_images=4)
    samples = list_samples(SPECS["cityscapes"], root, "val")
    for sample in (samples[1], samples[3]):
        sample.label_path.unlink()
        sample.label_path.with_name(
            sample.label_path.name.replace("labelTrainIds", "labelIds")
        ).unlink()
    with pytest.raises(DatasetNotFoundError, match="2 of 4 label files are missing") as info:
        list_samples(SPECS["cityscapes"], root, "val")
    assert str(samples[1].label_path) in str(info.value)


def test_wrong_label_value_names_file_and_value(tmp_path: Path) -> None:
    label = np.zeros((8, 8), dtype=np.uint8)
    label[2, 3] = 30
    label[0, 0] = 255
    Image.fromarray(label).save(tmp_path / "bad.png")
    with pytest.raises(DatasetNotFoundError, match="holds value 30") as info:
        load_label(tmp_path / "bad.png", num_classes=19)
    assert str(tmp_path / "bad.png") in str(info.value)
    assert load_label(tmp_path / "bad.png", num_classes=31)[2, 3] == 30


def test_unreadable_or_multichannel_label_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetNotFoundError, match="broken.png"):
        load_label(tmp_path / "broken.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetNotFoundError, match="rgb.png"):
        load_label(tmp_path / "rgb.png")


def test_labels_wider_than_8_bits_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4), 300, np.uint16)).save(tmp_path / "wide.png")
    with pytest.raises(DatasetNotFoundError, match="wide.png holds value 300"):
        load_label(tmp_path / "wide.png")
