"""Training losses, accuracy, gradients and BN updates against the mmseg_tiny fixture (1e-4)."""

from __future__ import annotations

import torch

from isaseg_cli.engine.loss import cross_entropy, pixel_accuracy, segmentation_losses
from tests.unit.engine.test_inference_parity import _model


def test_fixture_training_step(expected) -> None:
    model = _model(dropout=0.0, train=True)
    images = torch.from_numpy(expected["input"])
    labels = torch.from_numpy(expected["train_label"])[None]
    outputs = model(images)
    losses = segmentation_losses(outputs, labels, aux_weight=0.4)
    assert abs(losses["decode"].item() - expected["train_decode_loss_ce"]) < 1e-4
    assert abs(losses["aux"].item() - expected["train_aux_loss_ce"]) < 1e-4
    assert abs(losses["total"].item() - expected["train_total_loss"]) < 1e-4
    assert (
        abs(pixel_accuracy(outputs["out"], labels).item() - expected["train_decode_acc_seg"]) < 1e-4
    )
    assert abs(pixel_accuracy(outputs["aux"], labels).item() - expected["train_aux_acc_seg"]) < 1e-4
    losses["total"].backward()
    params = dict(model.named_parameters())
    buffers = model.state_dict()
    for name, value in expected.items():
        if name.startswith("train_grad__"):
            grad = params[name.removeprefix("train_grad__")].grad
            assert (grad - torch.from_numpy(value)).abs().max() < 1e-6, name
        elif name.startswith("train_bn_after__"):
            buffer = buffers[name.removeprefix("train_bn_after__")]
            assert (buffer - torch.from_numpy(value)).abs().max() < 1e-6, name


def test_loss_divides_by_all_pixels_including_ignored() -> None:
    logits = torch.zeros(1, 2, 1, 4)
    labels = torch.tensor([[[0, 1, 255, 255]]])
    # two valid pixels, each with loss ln 2, averaged over four pixels
    assert torch.isclose(cross_entropy(logits, labels), torch.log(torch.tensor(2.0)) / 2)


def test_accuracy_ignores_unlabelled_pixels() -> None:
    logits = torch.tensor([[[[1.0, 0.0, 0.0]], [[0.0, 1.0, 1.0]]]])  # predicts 0, 1, 1
    labels = torch.tensor([[[0, 0, 255]]])
    assert pixel_accuracy(logits, labels).item() == 50.0
