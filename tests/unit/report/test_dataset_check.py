"""The dataset checks (report/dataset_check.py): class weights, the reduce_zero_label hints and the
pre-run check; pairing and the per-label checks are in test_pairing.py and test_label_check.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.errors import DatasetNotFoundError
from isaseg_cli.report.dataset_check import check_before_run, class_stats, reduce_zero_label_hints
from isaseg_cli.zoo.spec import DataSpec


def test_class_weights_from_pixel_counts() -> None:
    stats = class_stats(np.array([10, 30, 60, 0]), ("a", "b", "c", "d"))
    assert [s.share for s in stats] == pytest.approx([0.1, 0.3, 0.6, 0.0])
    # 1/share = 10, 3.33, 1.67 (mean 5) scaled to mean 1; median share 0.3 over each share.
    assert [s.inverse_weight for s in stats[:3]] == pytest.approx([2.0, 2 / 3, 1 / 3])
    assert [s.median_weight for s in stats[:3]] == pytest.approx([3.0, 1.0, 0.5])
    assert stats[3].inverse_weight is None and stats[3].median_weight is None


def histogram(values: dict[int, int]) -> np.ndarray:
    counts = np.zeros(256, dtype=np.int64)
    for value, count in values.items():
        counts[value] = count
    return counts


def test_reduce_zero_label_hints() -> None:
    one_based = histogram({0: 50, 1: 10, 2: 10, 3: 10, 4: 10})
    assert "set reduce_zero_label" in reduce_zero_label_hints(one_based, 4, False)[0]
    assert reduce_zero_label_hints(one_based, 4, True) == ()  # ADE20K-like and reduced: fine
    zero_based = histogram({0: 10, 1: 10, 2: 10, 3: 10, 255: 5})
    assert reduce_zero_label_hints(zero_based, 4, False) == ()
    assert "--no-reduce-zero-label" in reduce_zero_label_hints(zero_based, 4, True)[0]
    no_zero = histogram({1: 10, 2: 10})
    assert "--no-reduce-zero-label" in reduce_zero_label_hints(no_zero, 4, True)[0]


def test_the_pre_run_check_names_the_first_finding_and_counts_the_rest(tmp_path: Path) -> None:
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_images=3)
    spec = DataSpec(dataset="custom", classes=("a", "b", "c", "d"))
    check_before_run(spec, root, "train")  # clean: no error
    for name in ("img_000.png", "img_002.png"):
        label = root / "labels" / "train" / name
        Image.open(label).resize((8, 8)).save(label)
    with pytest.raises(DatasetNotFoundError) as raised:
        check_before_run(spec, root, "train")
    first = root / "labels" / "train" / "img_000.png"
    assert str(raised.value) == (
        f"label {first} is 8x8 but image {root / 'images' / 'train' / 'img_000.png'} is 96x64 "
        "(1 more in the train split; isaseg check-data lists them all)"
    )
