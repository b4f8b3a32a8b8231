"""The CUDA-graph policy (one rule for train, eval, predict and benchmark) and what the graph
wrappers refuse off CUDA; the graphed paths themselves run in test_cuda_paths.py (gpu)."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.engine.infer.cuda_graphs import GraphedInference, GraphedTraining, use_cuda_graphs
from isaseg_cli.errors import InputError
from isaseg_cli.models.build import build_model
from tests.helpers import tiny_model_spec

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_automatic_graphs_wherever_they_can_run() -> None:
    assert use_cuda_graphs(None, CUDA) is True
    assert use_cuda_graphs(None, CPU) is False
    assert use_cuda_graphs(None, CUDA, compile=True) is False
    assert use_cuda_graphs(None, CUDA, distributed=True) is False
    assert use_cuda_graphs(False, CUDA) is False
    assert use_cuda_graphs(True, CUDA) is True


@pytest.mark.parametrize(
    ("device", "kwargs", "message"),
    [
        (CPU, {}, "CUDA graphs need a CUDA device$"),
        (CUDA, {"distributed": True}, "need a CUDA device and a single process$"),
        (CUDA, {"compile": True}, "need a CUDA device and no --compile$"),
        (
            CUDA,
            {"compile": True, "distributed": True},
            "device, a single process and no --compile$",
        ),
    ],
)
def test_graphs_asked_where_they_cannot_run_are_refused(device, kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        use_cuda_graphs(True, device, **kwargs)


def test_graphed_training_needs_a_cuda_batch() -> None:
    model = build_model(tiny_model_spec()).train()
    with pytest.raises(ValueError, match="CUDA"):
        GraphedTraining(model, torch.randn(1, 3, 32, 32), "fp32")


def test_graphed_inference_runs_eagerly_off_cuda() -> None:
    calls = []

    def forward(images: torch.Tensor) -> torch.Tensor:
        calls.append(images.shape)
        return images * 2

    graphed = GraphedInference(forward)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(graphed(torch.ones(1, 2)), torch.full((1, 2), 2.0))
    assert len(calls) == 3 and graphed.graphs == {}
