"""Random weights that behave like trained ones (calibrated BN, residual gain, centred classifier),
and random-weight checkpoints: any zoo architecture, rebuilt from the file alone, fitted to data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isaseg_cli.engine.loading import load_model
from isaseg_cli.engine.random_weights import (
    calibrate_batchnorm,
    entry_for_synthetic,
    random_model,
    save_random_checkpoint,
)
from isaseg_cli.errors import InputError
from isaseg_cli.models.backbone import BasicBlock
from isaseg_cli.zoo.catalog import resolve_entry
from tests.helpers import make_tiny_cityscapes_entry, tiny_model_spec


def test_calibrated_bn_holds_the_statistics_of_its_input() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    images = torch.randn(2, 3, 9, 9) * 5 + 2
    calibrate_batchnorm(model, images)
    conv_out = model[0](images).detach()
    assert not model.training
    assert torch.allclose(model[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)
    unbiased = conv_out.var(dim=(0, 2, 3), unbiased=True)
    assert torch.allclose(model[1].running_var, unbiased, rtol=1e-4)
    assert model[1].momentum == 0.1  # restored


def test_random_model_is_seeded_gained_and_centred() -> None:
    model = random_model(tiny_model_spec(), torch.device("cpu"), residual_gain=0.25)
    again = random_model(tiny_model_spec(), torch.device("cpu"), residual_gain=0.25)
    assert not model.training and model.auxiliary_head is None
    for (name, ours), theirs in zip(
        model.state_dict().items(), again.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs), name
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert blocks and all(torch.all(block.bn2.weight == 0.25) for block in blocks)
    # The classifier bias centres every class's mean logit on the calibration images.
    calibration = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model.decode_head(model.backbone(calibration))
    assert logits.mean(dim=(0, 2, 3)).abs().max() < 1e-4


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
