"""Pairing a split as the readers do, listing every unpaired file instead of stopping at one."""

from __future__ import annotations

from pathlib import Path

import pytest

from isaseg_cli.data.datasets import list_samples
from isaseg_cli.data.synthetic import write_synthetic_dataset
from isaseg_cli.errors import DatasetNotFoundError
from isaseg_cli.report.pairing import pair_split
from isaseg_cli.zoo.spec import DataSpec

CUSTOM = DataSpec(dataset="custom", classes=("a", "b", "c", "d"))


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


def test_every_unpaired_file_is_a_finding_and_the_rest_still_pair(tmp_path: Path) -> None:
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_images=4)
    images, labels = root / "images" / "train", root / "labels" / "train"
    (labels / "img_001.png").unlink()
    (labels / "img_003.png").unlink()
    (images / "img_002.png").unlink()
    pairing = pair_split(CUSTOM, root, "train")
    assert [s.image_path.name for s in pairing.samples] == ["img_000.png"]
    assert [(f.kind, f.path.name) for f in pairing.findings] == [
        ("missing label", "img_001.png"),
        ("missing label", "img_003.png"),
        ("orphan label", "img_002.png"),
    ]
    assert pairing.findings[2].message == (
        f"label {labels / 'img_002.png'} has no image {images / 'img_002'}.*"
    )


def test_a_cityscapes_image_with_only_label_ids_says_to_convert(tmp_path: Path) -> None:
    root = write_synthetic_dataset("cityscapes", tmp_path / "city", num_images=2)
    spec = DataSpec(dataset="cityscapes")
    first = list_samples(spec, root, "val")[0]
    first.label_path.unlink()
    [finding] = pair_split(spec, root, "val").findings
    assert finding.kind == "missing label" and finding.path == first.image_path
    assert "isaseg convert-cityscapes" in finding.message


def test_voc_names_in_the_split_file_without_files_are_findings(tmp_path: Path) -> None:
    root = write_synthetic_dataset("voc12aug", tmp_path / "voc", num_images=2)
    split = root / "ImageSets" / "Segmentation" / "val.txt"
    with split.open("a") as handle:
        handle.write("2012_999999\n")
    pairing = pair_split(DataSpec(dataset="voc12aug"), root, "val")
    assert len(pairing.samples) == 2
    assert [(f.kind, f.path.name) for f in pairing.findings] == [
        ("missing image", "2012_999999.jpg"),
        ("missing label", "2012_999999.png"),
    ]
    assert f"split file {split} lists 2012_999999" in pairing.findings[0].message


def test_a_missing_split_gets_the_readers_message(tmp_path: Path) -> None:
    root = write_synthetic_dataset("custom", tmp_path / "custom", num_images=1)
    with pytest.raises(DatasetNotFoundError, match="images/test"):
        pair_split(CUSTOM, root, "test")
