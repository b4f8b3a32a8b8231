"""The checks of one image/label pair: headers (size, channels), then the label's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from isaseg_cli.data.base import Sample
from isaseg_cli.data.datasets import list_samples
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.report.label_check import check_header, inspect_label, value_histogram
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import DataSpec


def _pair(tmp_path: Path, label: np.ndarray, size: tuple[int, int] = (6, 4)) -> Sample:
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(image)
    path = tmp_path / "label.png"
    Image.fromarray(label).save(path)
    return Sample(image, path)


def test_a_colour_label_in_the_dataset_palette_says_how_to_convert(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "city", num_images=1)
    sample = list_samples(DataSpec(dataset="cityscapes"), root, "val")[0]
    palette = DATASETS["cityscapes"].palette
    index = np.array(Image.open(sample.label_path))
    colours = np.array([*palette, *[palette[0]] * (256 - len(palette))], dtype=np.uint8)
    Image.fromarray(colours[index], "RGB").save(sample.label_path)
    report = inspect_label(sample, 19, False, palette)
    assert report.histogram is None
    [finding] = report.findings
    assert finding.kind == "channels" and str(sample.label_path) in finding.message
    assert "all in the dataset's palette: replace each colour by its position" in finding.message
    gray = tmp_path / "gray.png"
    Image.fromarray(index).convert("RGB").save(gray)
    [same] = inspect_label(Sample(sample.image_path, gray), 19, False, palette).findings
    assert "colour channels are equal: keep one" in same.message


def test_reduce_zero_label_shifts_the_value_check(tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(image)
    label = tmp_path / "label.png"
    Image.fromarray(np.array([[0, 1, 4, 5, 255, 255]] * 4, np.uint8)).save(label)
    plain = inspect_label(Sample(image, label), 4, False)
    assert "values 4, 5 (8 pixels)" in plain.findings[0].message
    reduced = inspect_label(Sample(image, label), 4, True)
    assert "value 5 (4 pixels)" in reduced.findings[0].message
    assert "reduce_zero_label a stored value v is class v - 1" in reduced.findings[0].message
    assert reduced.histogram is not None
    assert reduced.histogram[[0, 1, 4, 5, 255]].tolist() == [4, 4, 4, 4, 8]


def test_headers_catch_a_size_mismatch_and_an_unreadable_label(tmp_path: Path) -> None:
    sample = _pair(tmp_path, np.zeros((4, 6), np.uint8), size=(7, 4))
    [finding] = check_header(sample)
    assert (finding.kind, finding.path) == ("size", sample.label_path)
    assert (
        finding.message == f"label {sample.label_path} is 6x4 but image {sample.image_path} is 7x4"
    )
    sample.label_path.write_bytes(b"not a png")
    [finding] = check_header(sample)
    assert finding.kind == "unreadable" and str(sample.label_path) in finding.message
    assert inspect_label(sample, 4, False).histogram is None


def test_a_clean_label_has_no_findings_and_its_exact_histogram(tmp_path: Path) -> None:
    values = np.array([[0, 1, 1, 3, 255, 255]] * 4, np.uint8)
    report = inspect_label(_pair(tmp_path, values), 4, False)
    assert report.findings == ()
    assert report.histogram is not None
    assert np.array_equal(report.histogram, np.bincount(values.ravel(), minlength=256))
    assert np.array_equal(value_histogram(values), report.histogram)
