"""Dataset metadata: aligned names and palettes, the spec's quirks, inverse Cityscapes id maps."""

from __future__ import annotations

import pytest

from isaseg_cli.errors import SpecError
from isaseg_cli.zoo.classes import (
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_TRAIN_ID_TO_ID,
    DATASETS,
    dataset_meta,
)


@pytest.mark.parametrize(("name", "count"), [("cityscapes", 19), ("ade20k", 150), ("voc12aug", 21)])
def test_names_and_palettes_are_aligned(name: str, count: int) -> None:
    meta = dataset_meta(name)
    assert meta.name == name
    assert len(meta.classes) == len(meta.palette) == count
    assert len(set(meta.classes)) == count
    for colour in meta.palette:
        assert len(colour) == 3 and all(0 <= c <= 255 for c in colour)


def test_datasets_are_exactly_the_three_zoo_datasets() -> None:
    assert list(DATASETS) == ["cityscapes", "ade20k", "voc12aug"]


def test_spot_values_from_the_spec() -> None:
    ade = dataset_meta("ade20k")
    assert ade.classes[7] == "bed "  # mmseg's trailing space, needed to compare with ckpt meta
    assert (ade.classes[0], ade.palette[0]) == ("wall", (120, 120, 120))
    assert (ade.classes[149], ade.palette[149]) == ("flag", (92, 0, 255))
    city = dataset_meta("cityscapes")
    assert (city.classes[0], city.palette[0]) == ("road", (128, 64, 128))
    assert (city.classes[18], city.palette[18]) == ("bicycle", (119, 11, 32))
    voc = dataset_meta("voc12aug")
    assert (voc.classes[0], voc.palette[0]) == ("background", (0, 0, 0))
    assert (voc.classes[20], voc.palette[20]) == ("tvmonitor", (0, 64, 128))


def test_cityscapes_id_maps_are_inverse() -> None:
    assert sorted(CITYSCAPES_ID_TO_TRAIN_ID) == list(range(34))
    train_ids = [t for t in CITYSCAPES_ID_TO_TRAIN_ID.values() if t != 255]
    assert sorted(train_ids) == list(range(19))
    assert len(CITYSCAPES_TRAIN_ID_TO_ID) == 19
    for train_id, label_id in enumerate(CITYSCAPES_TRAIN_ID_TO_ID):
        assert CITYSCAPES_ID_TO_TRAIN_ID[label_id] == train_id
    assert CITYSCAPES_ID_TO_TRAIN_ID[7] == 0  # road
    assert CITYSCAPES_ID_TO_TRAIN_ID[29] == 255  # caravan is ignored


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match="did you mean 'cityscapes'.*ade20k.*voc12aug"):
        dataset_meta("citiscapes")
