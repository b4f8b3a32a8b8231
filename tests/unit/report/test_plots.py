"""The report's plots: row shares of the confusion matrix, and PNGs written without a display."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isaseg_cli.report.plots import class_bars, confusion_heatmap, row_normalised

pytest.importorskip("matplotlib")


def test_rows_are_shares_of_their_label_and_empty_rows_stay_zero() -> None:
    shares = row_normalised(np.array([[3, 1], [0, 0]]))
    assert shares.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_the_plots_are_png_files_sized_to_the_class_count(tmp_path: Path) -> None:
    counts = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 7]])
    classes = ("road", "car", "sky")
    heatmap = confusion_heatmap(counts, classes, tmp_path / "confusion.png")
    bars = class_bars([80.0, None, 55.5], [90.0, None, 60.0], classes, tmp_path / "bars.png")
    many = class_bars([50.0] * 30, [50.0] * 30, [f"c{i}" for i in range(30)], tmp_path / "30.png")
    for path in (heatmap, bars, many):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100
    with Image.open(bars) as few, Image.open(many) as tall:
        assert tall.height > few.height  # one bar row per class
