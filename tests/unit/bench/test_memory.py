"""Peak memory accounting: live intermediates counted exactly, views not counted."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from isaseg_cli.bench.memory import peak_tensor_bytes


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_peak_tensor_bytes_counts_live_intermediates_exactly(device: str) -> None:
    query = torch.randn(1, 100, 8, device=device)

    def attention() -> torch.Tensor:
        similarity = torch.matmul(query, query.transpose(1, 2))  # 100x100 floats
        weights = F.softmax(similarity, dim=-1)  # another 100x100, both alive
        return torch.matmul(weights, query)  # 100x8

    _, peak = peak_tensor_bytes(attention)
    assert peak == (2 * 100 * 100 + 100 * 8) * 4
    _, views_only = peak_tensor_bytes(lambda: query.transpose(1, 2).view(1, 8, 100))
    assert views_only == 0
