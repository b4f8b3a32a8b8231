"""mmseg's training init, the ImageNet backbone file and fine-tuning weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from isaseg_cli.engine.checkpoint import read_checkpoint
from isaseg_cli.engine.train.pretrained import (
    init_weights,
    initialise,
    load_finetune_weights,
    load_pretrained_backbone,
)
from isaseg_cli.errors import CheckpointError
from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.spec import HeadSpec
from tests.helpers import tiny_model_spec


def imagenet_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A ResNetV1c file as OpenMMLab ships them (unprefixed keys plus ``fc.*``), here with a
    ``module.`` prefix, one key left out and one foreign key."""
    torch.manual_seed(1)
    backbone = build_model(tiny_model_spec(19)).backbone.state_dict()
    del backbone["layer1.0.conv1.weight"]
    state = {f"module.{key}": value for key, value in backbone.items()}
    state |= {
        "fc.weight": torch.zeros(10, 64),
        "fc.bias": torch.zeros(10),
        "foo.bar": torch.ones(1),
    }
    path = tmp_path / "resnet18_v1c.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    return path, backbone


def test_backbone_file_loads_non_strictly_and_reports_missing_and_unexpected(
    tmp_path: Path,
) -> None:
    path, backbone = imagenet_file(tmp_path)
    torch.manual_seed(2)
    model = build_model(tiny_model_spec(19))
    before = model.backbone.layer1[0].conv1.weight.clone()
    report = load_pretrained_backbone(model, path)
    assert report.missing == ("layer1.0.conv1.weight",)
    assert report.unexpected == ("foo.bar",)  # fc.* (the ImageNet classifier) is dropped
    assert report.loaded == len(backbone)
    assert "1 missing: layer1.0.conv1.weight" in report.summary()
    state = model.backbone.state_dict()
    for key, value in backbone.items():
        assert torch.equal(state[key], value), key
    assert torch.equal(model.backbone.layer1[0].conv1.weight, before)


def test_backbone_file_that_fits_nothing_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"stem.0.weight": torch.zeros(1, 1, 1, 1)}}, path)
    with pytest.raises(CheckpointError, match="none of its 1 tensors fits"):
        load_pretrained_backbone(build_model(tiny_model_spec(19)), path)


def test_initialise_with_a_backbone_file_keeps_mmseg_head_init(tmp_path: Path) -> None:
    path, _ = imagenet_file(tmp_path)
    model = build_model(tiny_model_spec(19))
    report = initialise(model, pretrained=path)
    assert report is not None and report.missing == ("layer1.0.conv1.weight",)
    assert torch.count_nonzero(model.decode_head.conv_seg.bias) == 0
    # zero_init_residual is for random backbones only: the file's BN weights stay.
    assert torch.count_nonzero(model.backbone.layer1[0].bn2.weight) > 0


def test_init_weights_follows_mmseg() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_model_spec(19, head=HeadSpec(channels=64, attn_channels=16)))
    init_weights(model)
    weight = model.decode_head.conv_seg.weight.detach()
    assert 0.005 < float(weight.std()) < 0.015  # Normal(0, 0.01)
    assert torch.count_nonzero(model.decode_head.conv_seg.bias) == 0
    in_conv = model.decode_head.in_conv.conv.weight.detach()
    fan_out = in_conv.shape[0] * in_conv.shape[2] * in_conv.shape[3]
    assert float(in_conv.std()) == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)  # Kaiming fan_out
    for block in model.backbone.layer2:  # BasicBlocks: the last BN of each is zeroed
        assert torch.count_nonzero(block.bn2.weight) == 0
        assert torch.all(block.bn1.weight == 1)


def test_finetuning_reinitialises_only_the_classifiers(tiny_checkpoint: Path) -> None:
    model = build_model(tiny_model_spec(19))
    report = load_finetune_weights(model, tiny_checkpoint)
    assert set(report.reinitialised) == {
        f"{head}.conv_seg.{part}"
        for head in ("decode_head", "auxiliary_head")
        for part in ("weight", "bias")
    }
    assert report.missing == () and report.unexpected == ()
    source = read_checkpoint(tiny_checkpoint)["state_dict"]
    state = model.state_dict()
    for key, value in source.items():
        if key not in report.reinitialised:
            assert torch.equal(state[key], value), key
    assert state["decode_head.conv_seg.weight"].shape[0] == 19


def test_finetuning_from_another_architecture_is_an_error(tiny_checkpoint: Path) -> None:
    model = build_model(tiny_model_spec(5, head=HeadSpec(channels=16, attn_channels=8)))
    with pytest.raises(CheckpointError, match="another architecture"):
        load_finetune_weights(model, tiny_checkpoint)
