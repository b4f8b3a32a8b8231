"""The matrix-product bilinear resize equals ``F.interpolate``, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from isaseg_cli.models.interpolate import bilinear_resize, interpolation_matrix


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    ("in_size", "out_size"),
    [((8, 16), (64, 128)), ((5, 7), (33, 50)), ((9, 9), (4, 6)), ((1, 3), (2, 5))],
)
def test_bilinear_resize_matches_interpolate(in_size, out_size, align_corners) -> None:
    x = torch.randn(2, 3, *in_size, dtype=torch.float64)
    x32 = x.float().requires_grad_()
    ours = bilinear_resize(x32, out_size, align_corners)
    reference_input = x.float().requires_grad_()
    reference = F.interpolate(
        reference_input, out_size, mode="bilinear", align_corners=align_corners
    )
    assert ours.dtype == torch.float32 and ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-5)
    weight = torch.randn_like(reference)
    (ours * weight).sum().backward()
    (reference * weight).sum().backward()
    assert torch.allclose(x32.grad, reference_input.grad, atol=1e-4)


def test_interpolation_rows_sum_to_one() -> None:
    matrix = interpolation_matrix(100, 13, align_corners=False)
    assert torch.allclose(matrix.sum(dim=1), torch.ones(100))
    assert (matrix >= 0).all() and ((matrix > 0).sum(dim=1) <= 2).all()


def test_bilinear_resize_computes_in_float32_under_autocast() -> None:
    x = torch.randn(1, 2, 4, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bilinear_resize(x, (8, 8), align_corners=False)
    reference = F.interpolate(x.float(), (8, 8), mode="bilinear", align_corners=False)
    assert out.dtype == torch.float32 and torch.allclose(out, reference, atol=1e-6)


def test_a_segmentor_trains_the_same_with_the_matmul_resize() -> None:
    from isaseg_cli.engine.train.loss import segmentation_losses
    from isaseg_cli.models.build import build_model
    from isaseg_cli.models.execution import ExecutionSpec
    from tests.helpers import tiny_model_spec

    torch.manual_seed(0)
    reference = build_model(tiny_model_spec()).train()
    ours = build_model(tiny_model_spec(), execution=ExecutionSpec(matmul_resize=True)).train()
    ours.load_state_dict(reference.state_dict())
    assert ours.matmul_resize and not reference.matmul_resize
    images, labels = torch.randn(2, 3, 40, 56), torch.randint(0, 5, (2, 40, 56))
    losses = []
    for model in (reference, ours):
        torch.manual_seed(1)  # the same dropout masks
        loss = segmentation_losses(model(images), labels)["total"]
        loss.backward()
        losses.append(loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for (name, a), b in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name
    ours.eval()  # without autograd the reference resize runs
    with torch.no_grad():
        assert torch.equal(ours(images)["out"], reference.eval()(images)["out"])
