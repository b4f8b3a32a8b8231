"""Random-weight checkpoints: any zoo architecture, rebuilt from the file alone, fitted to data."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.engine.loading import load_model
from isaseg_cli.engine.random_weights import entry_for_synthetic, save_random_checkpoint
from isaseg_cli.errors import InputError
from isaseg_cli.zoo.catalog import resolve_entry
from tests.helpers import make_tiny_cityscapes_entry


def test_the_checkpoint_rebuilds_its_model_from_meta(tmp_path) -> None:
    entry = entry_for_synthetic(make_tiny_cityscapes_entry(), "cityscapes", (32, 64))
    path = save_random_checkpoint(entry, tmp_path / "random.pth")
    loaded = load_model(None, path)  # strict: every key of the model, aux head included
    assert loaded.entry == entry and loaded.entry.test.scale == (64, 32)
    assert len(loaded.classes) == 19 and loaded.classes[0] == "road"
    with torch.no_grad():
        logits = loaded.model(torch.randn(1, 3, 32, 64))["out"]
    masks = logits.argmax(1)
    assert masks.unique().numel() > 1  # calibrated: not one class everywhere


def test_custom_data_gets_its_own_classes() -> None:
    entry = entry_for_synthetic(resolve_entry("isanet_r50_ade20k"), "custom", (64, 64), 3)
    assert entry.data.dataset == "custom" and entry.data.classes == ("class0", "class1", "class2")
    assert entry.model.num_classes == 3 and entry.weights is None and entry.published is None
    assert entry.model.backbone == resolve_entry("isanet_r50_ade20k").model.backbone


def test_another_zoo_dataset_is_refused() -> None:
    with pytest.raises(InputError, match="cityscapes model.*isaseg zoo --dataset ade20k"):
        entry_for_synthetic(resolve_entry("isanet_r50_cityscapes"), "ade20k", (64, 64))
