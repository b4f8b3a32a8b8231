"""The Cityscapes layout: cities scanned recursively, trainId labels, and the labelIds
conversion (docs/FAITHFULNESS.md#datasets-and-labels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.cityscapes import convert_label_ids
from isaseg_cli.data.datasets import list_samples, load_label
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.errors import DatasetNotFoundError
from tests.helpers import DATASET_SPECS as SPECS


def test_cityscapes_scans_cities_recursively_sorted_by_relative_path(
    roots: dict[str, Path],
) -> None:
    samples = list_samples(SPECS["cityscapes"], roots["cityscapes"], "train")
    image_dir = roots["cityscapes"] / "leftImg8bit" / "train"
    relative = [s.image_path.relative_to(image_dir).as_posix() for s in samples]
    assert relative == sorted(relative)
    assert {r.split("/")[0] for r in relative} == {"aachen", "bochum"}
    for image_path, label_path in samples:
        stem = image_path.name.removesuffix("_leftImg8bit.png")
        assert label_path == (
            roots["cityscapes"]
            / "gtFine"
            / "train"
            / image_path.parent.name
            / f"{stem}_gtFine_labelTrainIds.png"
        )


def test_cityscapes_without_train_ids_says_to_convert(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "cs", num_images=2)
    for path in (root / "gtFine").rglob("*_labelTrainIds.png"):
        path.unlink()
    with pytest.raises(DatasetNotFoundError, match="convert"):
        list_samples(SPECS["cityscapes"], root, "train")


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    (tmp_path / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no images found"):
        list_samples(SPECS["cityscapes"], tmp_path, "val")


def test_missing_split_folder_names_it(roots: dict[str, Path]) -> None:
    with pytest.raises(DatasetNotFoundError, match="leftImg8bit/test"):
        list_samples(SPECS["cityscapes"], roots["cityscapes"], "test")


def test_convert_label_ids_writes_train_ids_by_lookup(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "cs", num_images=2)
    originals = {p: load_label(p) for p in sorted(root.rglob("*_labelTrainIds.png"))}
    for path in originals:
        path.unlink()
    # One file also holds every possible byte, to check the table and the 255 fallback.
    all_ids = next(iter(sorted(root.rglob("*_labelIds.png"))))
    everything = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(everything).save(all_ids)
    progress: list[tuple[int, int]] = []

    count = convert_label_ids(root, on_progress=lambda done, total: progress.append((done, total)))

    assert count == 4 and progress[-1] == (4, 4) and len(progress) == 4
    # trainIds from the cityscapesScripts table (FAITHFULNESS.md#datasets-and-labels); all other
    # ids, 34..255, -> 255.
    table = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11}
    table |= {25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    expected = np.array([table.get(i, 255) for i in range(256)], dtype=np.uint8).reshape(16, 16)
    converted = all_ids.with_name(all_ids.name.replace("labelIds", "labelTrainIds"))
    np.testing.assert_array_equal(load_label(converted), expected)
    for path, original in originals.items():
        if path != converted:
            np.testing.assert_array_equal(load_label(path), original)
    assert not list(root.rglob("*.tmp"))


def test_convert_label_ids_without_sources_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="labelIds"):
        convert_label_ids(tmp_path)
