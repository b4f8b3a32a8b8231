"""The published architectures have exactly mmsegmentation's state-dict keys, shapes and order."""

from __future__ import annotations

import json

import pytest
import torch

from isaseg_cli.models.build import build_model
from isaseg_cli.zoo.spec import BackboneSpec, ModelSpec
from tests.helpers import FIXTURES

KEYS = FIXTURES / "keys"


def _reference(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (KEYS / f"{name}.txt").read_text().splitlines():
        key, _, shape = line.partition(" ")
        rows.append((key, tuple(int(d) for d in shape.split(",")) if shape else ()))
    return rows


@pytest.mark.parametrize("depth", [50, 101])
@pytest.mark.parametrize("num_classes", [19, 150, 21])
def test_published_architecture_keys(depth: int, num_classes: int) -> None:
    name = f"isanet_r{depth}-d8_{num_classes}cls"
    model = build_model(ModelSpec(backbone=BackboneSpec(depth=depth), num_classes=num_classes))
    ours = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    assert ours == _reference(name)
    summary = json.loads((KEYS / "summary.json").read_text())[name]
    assert sum(p.numel() for p in model.parameters()) == summary["parameters"]
    without_aux = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux"))
    assert without_aux == summary["parameters_without_auxiliary_head"]


def test_tiny_fixture_keys_and_order() -> None:
    from tests.helpers import TINY, tiny_model_spec

    reference = torch.load(TINY / "checkpoint.pth", weights_only=True)["state_dict"]
    model = build_model(tiny_model_spec())
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.items()
    ]
