"""A custom dataset: images/ and labels/ folders, suffixes from the spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from isaseg_cli.data.datasets import list_samples
from isaseg_cli.data.synthetic import custom_classes
from isaseg_cli.errors import DatasetNotFoundError
from isaseg_cli.zoo.spec import DataSpec


def test_custom_suffixes_come_from_the_spec(roots: dict[str, Path]) -> None:
    jpg_spec = DataSpec(dataset="custom", img_suffix=".jpg", classes=custom_classes())
    with pytest.raises(DatasetNotFoundError, match="no images found"):
        list_samples(jpg_spec, roots["custom"], "train")


def test_custom_without_a_suffix_takes_every_image_type(roots: dict[str, Path]) -> None:
    root = roots["custom"]
    png = root / "images" / "train" / "img_000.png"
    jpg = png.with_name("img_000b.jpg")
    jpg.write_bytes(png.read_bytes())  # the content does not matter for pairing
    (root / "labels" / "train" / "img_000b.png").write_bytes(
        (root / "labels" / "train" / "img_000.png").read_bytes()
    )
    spec = DataSpec(dataset="custom", classes=custom_classes())
    names = [sample.image_path.name for sample in list_samples(spec, root, "train")]
    assert names[:2] == ["img_000.png", "img_000b.jpg"] and len(set(names)) == len(names)
