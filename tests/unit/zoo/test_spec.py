"""zoo.spec: strict from_dict, typed overrides, and a to_dict/from_dict round trip for the zoo."""

from __future__ import annotations

import pytest

from isaseg_cli.errors import SpecError

# TestSpec is used as spec.TestSpec: a module-level Test* class would be collected by pytest.
from isaseg_cli.zoo import spec
from isaseg_cli.zoo.catalog import load_zoo
from isaseg_cli.zoo.spec import TrainSpec, ZooEntry, from_dict, override, to_dict

ENTRIES = load_zoo().entries


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_every_entry_round_trips(entry: ZooEntry) -> None:
    data = to_dict(entry)
    assert from_dict(ZooEntry, data) == entry
    assert isinstance(data["model"]["backbone"]["strides"], list)  # tuples come back as lists


def test_unknown_key_is_rejected_with_its_path() -> None:
    with pytest.raises(SpecError, match=r"entry\.train: unknown key 'lrate'"):
        from_dict(ZooEntry, {"name": "x", "train": {"lrate": 0.1}}, "entry")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"iters": "many"}, r"t\.iters: expected an integer"),
        ({"iters": True}, r"t\.iters: expected an integer"),
        ({"lr": "0.01"}, r"t\.lr: expected a number"),
        ({"pretrained": 50}, r"t\.pretrained: expected a string"),
    ],
)
def test_wrong_types_are_rejected(data: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        from_dict(TrainSpec, data, "t")


def test_lists_become_tuples_and_lengths_are_checked() -> None:
    data = {"mode": "slide", "crop_size": [769, 769], "stride": [513, 513]}
    assert from_dict(spec.TestSpec, data).crop_size == (769, 769)
    with pytest.raises(SpecError, match=r"crop_size: expected 2 values, got 3"):
        from_dict(spec.TestSpec, {"crop_size": [1, 2, 3]})


def test_override_coerces_to_the_field_type() -> None:
    entry = ENTRIES[0]
    changed = override(entry, "train.lr", "0.02")
    assert changed.train.lr == 0.02 and isinstance(changed.train.lr, float)
    assert entry.train.lr == 0.01  # frozen: the original is untouched
    assert override(entry, "data.crop_size", "256x512").data.crop_size == (256, 512)
    assert override(entry, "model.align_corners", "true").model.align_corners is True
    assert override(entry, "train.pretrained", "none").train.pretrained is None
    assert override(entry, "model.head.group_size", "4,4").model.head.group_size == (4, 4)


@pytest.mark.parametrize(
    ("dotted", "raw", "message"),
    [
        ("train.lrate", "0.1", "unknown setting 'lrate'"),
        ("train.iters", "1.5", "expected an integer"),
        ("model.align_corners", "yes", "expected true or false"),
        ("train.lr.x", "1", "not a nested setting"),
    ],
)
def test_bad_overrides_are_rejected(dotted: str, raw: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        override(ENTRIES[0], dotted, raw)
