"""The eval report's figures: per-image confusion and metrics, the worst images, its folder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from isaseg_cli.data.loader import EvalRecord
from isaseg_cli.errors import InputError
from isaseg_cli.report.eval_report import (
    INDEX,
    ReportCollector,
    check_report_dir,
    image_confusion,
    metrics_of,
)

LABEL = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
MASK = np.array([[0, 1, 1, 1], [2, 0, 0, 2]], np.uint8)


def test_image_confusion_counts_label_prediction_pairs_without_ignored_pixels() -> None:
    counts = image_confusion(MASK, LABEL, 3)
    assert counts.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows: label, columns: prediction
    assert counts.sum() == 6 and counts.dtype == np.int64


def test_image_metrics_follow_the_split_level_rules() -> None:
    row = metrics_of(image_confusion(MASK, LABEL, 3), Path("a.png"))
    # IoU: class 0 1/(2+2-1), class 1 2/(2+3-2), class 2 1/(2+1-1).
    ious = [100 / 3, 200 / 3, 50.0]
    assert row.pixels == 6 and row.pixel_acc == pytest.approx(100 * 4 / 6)
    assert row.miou == pytest.approx(sum(ious) / 3)
    assert (row.worst_class, row.worst_iou) == (0, pytest.approx(100 / 3))
    # A class in neither label nor prediction is left out; one only predicted scores 0.
    only_predicted = metrics_of(image_confusion(np.array([[1, 1]]), np.array([[0, 0]]), 4), Path())
    assert only_predicted.miou == 0.0 and only_predicted.worst_class == 0
    empty = metrics_of(np.zeros((3, 3), np.int64), Path())
    assert math.isnan(empty.miou) and math.isnan(empty.pixel_acc) and empty.worst_class == -1


def _record(label: np.ndarray, name: str) -> EvalRecord:
    image = np.zeros((*label.shape, 3), np.uint8)
    return EvalRecord(image, label, Path(name), Path(name))


def test_the_collector_sums_the_split_and_keeps_the_worst_images() -> None:
    collector = ReportCollector(3, worst=2)
    label = np.zeros((2, 2), np.uint8)
    right = np.zeros((2, 2), np.uint8)
    half = np.array([[0, 1], [0, 1]], np.uint8)
    wrong = np.ones((2, 2), np.uint8)
    for name, mask in (("right", right), ("half", half), ("wrong", wrong)):
        collector.add(_record(label, name), mask)
    collector.add(_record(np.full((2, 2), 255, np.uint8), "ignored"), right)  # no counted pixel
    assert collector.counts.tolist() == [[6, 6, 0], [0, 0, 0], [0, 0, 0]]
    assert [row.image.name for row in collector.rows] == ["right", "half", "wrong", "ignored"]
    worst = collector.worst_images()
    assert [row.image.name for row, _, _ in worst] == ["wrong", "half"]  # lowest mIoU first
    assert np.array_equal(worst[0][2], wrong) and np.array_equal(worst[0][1], label)
    # right 100, half (50 + 0) / 2 = 25, wrong 0; the ignored image has no mIoU.
    assert collector.mean_image_miou() == pytest.approx((100 + 25 + 0) / 3)


def test_the_report_folder_must_be_new_empty_or_an_earlier_report(tmp_path: Path) -> None:
    check_report_dir(tmp_path / "new")
    check_report_dir(tmp_path)  # empty
    (tmp_path / INDEX).write_text("<html></html>")
    check_report_dir(tmp_path)  # an earlier report: replaced
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="is a file; give a folder"):
        check_report_dir(tmp_path / "file.txt")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds other files"):
        check_report_dir(other)
