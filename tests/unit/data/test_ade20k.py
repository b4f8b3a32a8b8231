"""The ADE20K layout: split names map to the release's folders."""

from __future__ import annotations

from pathlib import Path

from isaseg_cli.data.datasets import list_samples
from tests.helpers import DATASET_SPECS as SPECS


def test_ade20k_maps_split_names_to_release_folders(roots: dict[str, Path]) -> None:
    samples = list_samples(SPECS["ade20k"], roots["ade20k"], "val")
    assert all(s.image_path.parent.name == "validation" for s in samples)
    assert all(
        s.label_path.parent == roots["ade20k"] / "annotations" / "validation" for s in samples
    )
