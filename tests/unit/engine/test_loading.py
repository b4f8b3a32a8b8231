from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isaseg_cli.engine.loading import default_palette, entry_classes, load_model
from isaseg_cli.errors import CheckpointError
from isaseg_cli.zoo.catalog import resolve_entry
from tests.conftest import TINY, TINY_CLASSES, make_tiny_entry


def test_checkpoint_written_by_isaseg_rebuilds_its_model(tiny_checkpoint: Path) -> None:
    loaded = load_model(checkpoint=tiny_checkpoint)
    assert loaded.entry == make_tiny_entry()
    assert loaded.classes == TINY_CLASSES
    assert not loaded.model.training


def test_mmseg_checkpoint_needs_the_architecture() -> None:
    with pytest.raises(CheckpointError, match="--model"):
        load_model(checkpoint=TINY / "checkpoint.pth")
    loaded = load_model(make_tiny_entry(), TINY / "checkpoint.pth")
    reference = torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]
    assert torch.equal(
        loaded.model.state_dict()["decode_head.conv_seg.bias"],
        reference["decode_head.conv_seg.bias"],
    )


def test_wrong_architecture_is_a_one_line_error() -> None:
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model(
            make_tiny_entry(num_classes=7, classes=tuple("abcdefg")), TINY / "checkpoint.pth"
        )


def test_zoo_classes_and_fallbacks() -> None:
    classes, palette = entry_classes(resolve_entry("isanet_r50_ade20k"))
    assert len(classes) == len(palette) == 150 and classes[7] == "bed "
    classes, palette = entry_classes(make_tiny_entry(), {"CLASSES": ["a", "b"]})  # wrong length
    assert classes == TINY_CLASSES and palette == default_palette(5)
    assert entry_classes(
        make_tiny_entry(), {"CLASSES": list("vwxyz"), "PALETTE": [[1, 2, 3]] * 5}
    ) == (
        tuple("vwxyz"),
        ((1, 2, 3),) * 5,
    )
