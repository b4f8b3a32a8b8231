"""The dataset checks' pieces: pairing as the readers pair, class weights, the reduce_zero_label
hints and the colour-label explanation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isaseg_cli.data.base import Sample
from isaseg_cli.data.datasets import list_samples
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.errors import DatasetNotFoundError
from isaseg_cli.report.dataset_check import check_before_run, class_stats, reduce_zero_label_hints
from isaseg_cli.report.label_check import inspect_label
from isaseg_cli.report.pairing import pair_split
from isaseg_cli.zoo.classes import DATASETS
from isaseg_cli.zoo.spec import DataSpec


@pytest.mark.parametrize(
    ("kind", "splits", "spec"),
    [
        ("cityscapes", ("train", "val"), DataSpec(dataset="cityscapes")),
        ("ade20k", ("train", "val"), DataSpec(dataset="ade20k", reduce_zero_label=True)),
        ("voc12aug", ("val", "trainaug"), DataSpec(dataset="voc12aug")),
        ("custom", ("train", "val"), DataSpec(dataset="custom", classes=("a", "b", "c", "d"))),
    ],
)
def test_clean_splits_pair_exactly_as_the_readers(
    kind: str, splits: tuple[str, ...], spec: DataSpec, tmp_path: Path
) -> None:
    root = write_synthetic_dataset(kind, tmp_path / kind, num_images=3)
    for split in splits:
        pairing = pair_split(spec, root, split)
        assert pairing.findings == ()
        assert list(pairing.samples) == list_samples(spec, root, split)


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
