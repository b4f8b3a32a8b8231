"""The CUDA training fast path against the eager reference step (run on a GPU machine:
``pytest -m gpu``; skipped elsewhere)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from isaseg_cli.engine.cuda_graphs import graph_training_forward
from isaseg_cli.engine.fast import prepare_for_training
from isaseg_cli.engine.loop import train_one_iter
from isaseg_cli.engine.optim import build_optimizer
from isaseg_cli.models.build import build_model
from tests.conftest import make_tiny_entry, tiny_model_spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def _bottleneck_entry():
    entry = make_tiny_entry()
    spec = tiny_model_spec()
    spec = dataclasses.replace(spec, backbone=dataclasses.replace(spec.backbone, depth=50))
    return dataclasses.replace(entry, model=spec)


def _three_steps(model, entry, batches, precision: str) -> list[float]:
    optimizer = build_optimizer(model, entry.train)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    losses = []
    for images, labels in batches:
        step = train_one_iter(model, images, labels, optimizer, scaler, entry, CUDA, precision)
        losses.append(step["total"].item())
    return losses


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphed_recomputing_step_follows_the_eager_reference(precision: str) -> None:
    """Three SGD steps with CUDA graphs, channels-last, SDPA and recomputed tails against the
    plain eager model: same losses and weights up to kernel-choice rounding, and the BN
    statistics recorded once per step (not during the graphs' warm-up runs)."""
    entry = _bottleneck_entry()
    torch.manual_seed(0)
    reference = build_model(entry.model).to(CUDA).train()
    fast = copy.deepcopy(reference)
    applied = prepare_for_training(fast, CUDA)
    assert applied["recompute"] and applied["channels_last"]
    generator = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(2, 3, 64, 64, generator=generator).to(CUDA),
            torch.randint(0, 5, (2, 64, 64), generator=generator).to(CUDA),
        )
        for _ in range(3)
    ]
    # Dropout draws differ between the graphs and the eager run: compare without it (before
    # the capture, which records the dropout as it is).
    for model in (reference, fast):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout2d):
                module.p = 0.0
    graph_training_forward(fast, batches[0][0].clone(), precision)
    ours = _three_steps(fast, entry, batches, precision)
    theirs = _three_steps(reference, entry, batches, precision)
    tolerance = 1e-3 if precision == "fp32" else 3e-2  # TF32 / bf16 kernels differ by path
    assert ours == pytest.approx(theirs, rel=tolerance)
    pairs = zip(fast.state_dict().items(), reference.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        if name.endswith("num_batches_tracked"):
            assert a.item() == b.item() == 3, name
        else:
            assert torch.allclose(a.float(), b.float(), rtol=tolerance, atol=tolerance), name
    # Eval mode and other shapes run the eager forward.
    fast.eval()
    with torch.no_grad():
        assert fast(torch.randn(1, 3, 48, 80, device=CUDA))["out"].shape == (1, 5, 48, 80)


def test_every_conv_runs_fused_on_the_gpu() -> None:
    from isaseg_cli.engine.fast import optimize_for_inference
    from isaseg_cli.models.fuse import ConvReLU

    torch.manual_seed(0)
    model = build_model(_bottleneck_entry().model, with_aux=False).to(CUDA).eval()
    fast = optimize_for_inference(model, device=CUDA, precision="bf16")
    images = torch.randn(1, 3, 96, 160, device=CUDA)
    with torch.no_grad():
        fast(images)
    fused = [m.fused for m in fast.modules() if isinstance(m, ConvReLU)]
    assert fused and all(fused), f"{sum(fused)}/{len(fused)} layers fused"


def test_graphed_inference_returns_what_the_eager_fast_path_returns() -> None:
    from isaseg_cli.engine.fast import optimize_for_inference

    torch.manual_seed(0)
    model = build_model(_bottleneck_entry().model, with_aux=False).to(CUDA).eval()
    graphed = optimize_for_inference(model, device=CUDA, precision="bf16")
    eager = optimize_for_inference(model, device=CUDA, precision="bf16", cuda_graphs=False)
    assert graphed.graphed is not None and eager.graphed is None
    generator = torch.Generator().manual_seed(3)
    shapes = [(1, 3, 96, 160)] * 4 + [(2, 3, 64, 64)] * 3  # capture at the 2nd call of each
    with torch.inference_mode():
        results = []
        for shape in shapes:
            images = torch.randn(*shape, generator=generator).to(CUDA)
            ours, theirs = graphed(images)["out"], eager(images)["out"]
            results.append(ours)
            assert torch.allclose(ours, theirs, atol=1e-3, rtol=1e-3)
    assert len(graphed.graphed.graphs) == 2
    # Each call got its own output, not a view of the graph's buffer.
    assert not torch.equal(results[2], results[3])
