"""Recomputing the bottleneck tails in the backward pass changes memory, not results."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from isaseg_cli.engine.train.loss import segmentation_losses
from isaseg_cli.models.backbone import Bottleneck
from isaseg_cli.models.build import build_model
from isaseg_cli.models.execution import ExecutionSpec
from isaseg_cli.models.recompute import recomputed_tail
from tests.helpers import tiny_model_spec


def _bottleneck_model(recompute: bool = False) -> nn.Module:
    """The same seeded weights with and without recomputed tails (built with the choice)."""
    spec = tiny_model_spec()
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=50))
    torch.manual_seed(0)
    return build_model(spec, execution=ExecutionSpec(recompute_tail=recompute)).train()


def _step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(1)  # the heads' dropout draws the same masks in both runs
    losses = segmentation_losses(model(images), labels, aux_weight=0.4, ignore_index=255)
    losses["total"].backward()
    return losses["total"].detach()


def test_recomputed_tails_give_identical_gradients_and_statistics() -> None:
    plain, lean = _bottleneck_model(), _bottleneck_model(recompute=True)
    blocks = [m for m in lean.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and all(block.recompute_tail for block in blocks)
    assert not any(m.recompute_tail for m in plain.modules() if isinstance(m, Bottleneck))
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    labels = torch.randint(0, 5, (2, 64, 96), generator=torch.Generator().manual_seed(3))
    for _ in range(2):  # the second step starts from statistics the first one updated
        assert torch.equal(_step(plain, images, labels), _step(lean, images, labels))
    # Each BatchNorm recorded each batch once: same running statistics and batch counts.
    for (name, ours), theirs in zip(
        lean.state_dict().items(), plain.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs), name
    for (name, ours), theirs in zip(lean.named_parameters(), plain.parameters(), strict=True):
        assert torch.equal(ours.grad, theirs.grad), name


def test_tails_are_not_recomputed_in_eval_or_without_gradients() -> None:
    model = _bottleneck_model(recompute=True)
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model.eval()
        assert model(images)["out"].shape == (1, 5, 32, 32)
        model.train()
        model(images)  # no autograd graph: nothing to recompute, statistics updated once
    norm = model.backbone.layer1[0].bn2
    assert norm.num_batches_tracked.item() == 1


def _saved_bytes(model: nn.Module, images: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of one forward."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images)
    return sum(storages.values())


def test_recomputed_tails_keep_fewer_activations() -> None:
    plain, lean = _bottleneck_model(), _bottleneck_model(recompute=True)
    images = torch.randn(2, 3, 64, 96)
    ours, theirs = _saved_bytes(lean, images), _saved_bytes(plain, images)
    assert ours < 0.8 * theirs, (ours, theirs)


def test_the_recomputed_tail_refuses_sync_batchnorm() -> None:
    block = _bottleneck_model().backbone.layer1[0]
    block.bn2 = nn.SyncBatchNorm(block.bn2.num_features)
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        recomputed_tail(block, torch.randn(1, 4, 8, 8), torch.randn(1, 16, 8, 8))


def test_build_model_refuses_recomputed_tails_with_sync_batchnorm() -> None:
    spec = tiny_model_spec()
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=50))
    with pytest.raises(ValueError, match="SyncBatchNorm"):
        build_model(spec, sync_bn=True, execution=ExecutionSpec(recompute_tail=True))
