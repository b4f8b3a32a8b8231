"""``regroup`` is ``permute().contiguous()``, bit for bit, with and without autograd."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.models.regroup import _word_view, regroup

ORDERS = [(0, 2, 4, 1, 3, 5), (0, 3, 4, 1, 2, 5), (0, 5, 1, 3, 2, 4)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [8, 12, 3])
@pytest.mark.parametrize("order", ORDERS)
def test_regroup_is_the_permuted_copy(dtype, channels, order) -> None:
    x = torch.randn(2, 3, 2, 5, 4, channels).to(dtype)
    expected = x.permute(*order).contiguous()
    ours = regroup(x, order)
    assert ours.shape == expected.shape and ours.is_contiguous()
    assert torch.equal(ours, expected)


def test_word_copy_applies_to_half_precision_rows_only() -> None:
    rows = torch.zeros(2, 5, 8, dtype=torch.bfloat16).permute(1, 0, 2)
    assert _word_view(rows) is not None
    assert _word_view(rows.float()) is not None  # two floats per word
    assert _word_view(torch.zeros(2, 5, 6, dtype=torch.bfloat16)) is None  # 6 % 4 != 0
    assert _word_view(torch.zeros(2, 8, 5, dtype=torch.bfloat16).transpose(1, 2)) is None
    assert _word_view(torch.zeros(2, 8, dtype=torch.float64)) is None


@pytest.mark.parametrize("order", ORDERS)
def test_regroup_gradient_is_the_inverse_permutation(order) -> None:
    x = torch.randn(2, 3, 2, 5, 4, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(x.permute(*order).shape, dtype=torch.float64)
    (regroup(x, order) * weight).sum().backward()
    reference = x.detach().clone().requires_grad_()
    (reference.permute(*order).contiguous() * weight).sum().backward()
    assert torch.equal(x.grad, reference.grad)
    assert torch.autograd.gradcheck(lambda t: regroup(t, order), (x.detach().requires_grad_(),))
